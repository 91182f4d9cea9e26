"""Publishing through huggingface_hub's real client and loading offline through timm.

The Hub cannot be reached here: uploads go to ``LoopbackHub`` (tests/conftest.py), a server on
127.0.0.1 that answers the routes the client uses. Offline loading runs in a fresh interpreter with
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` / ``HF_HOME`` pointing at a temporary cache, after the
server has been shut down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants, hf_hub_download

from hub_knowledge import add_to_cache, push_to_hub, save_for_hub

TOKEN = "hf_loopback_token"

OFFLINE_LOAD = textwrap.dedent(
    """
    import json, sys
    import safetensors.torch, timm, torch
    import hub_knowledge
    from huggingface_hub.errors import LocalEntryNotFoundError
    expected = safetensors.torch.load_file(sys.argv[1])
    report = {}
    for repo_id in sys.argv[2:]:
        by_timm = timm.create_model("hf-hub:" + repo_id, pretrained=True).eval()
        by_us = hub_knowledge.load(repo_id).eval()
        with torch.no_grad():
            report[repo_id] = [
                torch.equal(by_timm(expected["x"]), expected["y"]),
                torch.equal(by_us(expected["x"]), expected["y"]),
                by_timm.pretrained_cfg.get("hf_hub_id"),
            ]
    try:
        timm.create_model("hf-hub:knowledge-vision/never-published", pretrained=True)
        report["uncached"] = "loaded"
    except LocalEntryNotFoundError:
        report["uncached"] = "not in cache"
    print(json.dumps(report))
    """
)


def _offline_load(tmp_path, cache, expected, repo_ids):
    """Load ``repo_ids`` in a new process that has only the cache, no Hub, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(tmp_path / "hf-home"),
        HF_ENDPOINT="http://127.0.0.1:9",  # discard port: any attempt to go online would fail
    )
    script = tmp_path / "offline_load.py"
    script.write_text(OFFLINE_LOAD)
    expected_path = tmp_path / "expected.safetensors"
    safetensors.torch.save_file(expected, str(expected_path))
    done = subprocess.run(
        [sys.executable, str(script), str(expected_path), *repo_ids],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _model_and_expected():
    model = timm.create_model("test_vit", num_classes=3, img_size=48).eval()
    with torch.no_grad():
        for p in model.parameters():  # far from the initialisation, as trained weights are
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 3, 48, 48)
        return model, {"x": x, "y": model(x)}


PUSHED = "knowledge-vision/test-vit-48"
PLACED = "knowledge-vision/offline-vit"


@pytest.fixture(scope="module")
def published(tmp_path_factory, loopback_hub_class):
    """Publish one model through the loopback Hub and place another in the cache by hand;
    then load both in ONE offline interpreter (importing torch and timm is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("published")
    model, expected = _model_and_expected()
    cache = tmp_path / "hf-cache"
    with pytest.MonkeyPatch.context() as mp, loopback_hub_class() as hub:
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        info = push_to_hub(
            model, PUSHED, token=TOKEN, endpoint=hub.url, metrics={"top1": 42.0}, datasets=["a"]
        )
        # populate the cache with the client's own download path
        for name in hub.repos[PUSHED].files:
            hf_hub_download(PUSHED, name, cache_dir=cache, endpoint=hub.url, token=TOKEN)
    folder = save_for_hub(model, tmp_path / "export", model_name=PLACED)
    snapshot = add_to_cache(folder, PLACED, cache_dir=cache)
    report = _offline_load(tmp_path, cache, expected, [PUSHED, PLACED])
    return {
        "hub": hub,
        "info": info,
        "snapshot": snapshot,
        "folder": folder,
        "cache": cache,
        "report": report,
    }


def test_push_goes_through_the_real_client_in_one_commit(published):
    hub, info = published["hub"], published["info"]
    repo = hub.repos[PUSHED]
    assert info.oid == repo.head and len(repo.commits) == 1  # one commit holds all three files
    assert sorted(repo.files) == ["README.md", "config.json", "model.safetensors"]
    assert repo.lfs_paths == {"model.safetensors"}  # weights went through Git LFS
    routes = {(method, path.split("?")[0]) for method, path, _ in hub.requests}
    assert ("POST", "/api/repos/create") in routes
    assert ("POST", f"/{PUSHED}.git/info/lfs/objects/batch") in routes
    assert all(auth == f"Bearer {TOKEN}" for m, p, auth in hub.requests if m == "POST")
    assert json.loads(repo.files["config.json"])["model_args"]["img_size"] in (48, [48, 48])


def test_pushed_model_loads_offline_through_timm_with_identical_outputs(published):
    # [timm's hf-hub: output equal, hub_knowledge.load output equal, recorded hf_hub_id]
    assert published["report"][PUSHED] == [True, True, PUSHED]


def test_offline_mode_does_not_reach_for_the_network(published):
    assert published["report"]["uncached"] == "not in cache"


def test_a_folder_placed_in_the_cache_loads_offline(published):
    snapshot = published["snapshot"]
    assert (snapshot / "model.safetensors").resolve().parent.name == "blobs"
    again = add_to_cache(published["folder"], PLACED, cache_dir=published["cache"])
    assert again == snapshot  # content-addressed: same folder, same snapshot
    assert published["report"][PLACED] == [True, True, PLACED]


def test_a_second_push_updates_the_repository(loopback_hub):
    model, _ = _model_and_expected()
    push_to_hub(model, PUSHED, token=TOKEN, endpoint=loopback_hub.url)
    push_to_hub(model, PUSHED, token=TOKEN, endpoint=loopback_hub.url, metrics={"top1": 50.0})
    repo = loopback_hub.repos[PUSHED]
    assert len(repo.commits) == 2
    assert b"top1" in repo.files["README.md"] and b"top1" not in repo.commits[0][1]["README.md"]


def test_bad_repo_ids_are_refused():
    model, _ = _model_and_expected()
    with pytest.raises(ValueError, match="repo_id='a/b/c' must be"):
        push_to_hub(model, "a/b/c")
    with pytest.raises(ValueError, match="repo_id='nameonly' must be 'org/name'"):
        add_to_cache(".", "nameonly")
