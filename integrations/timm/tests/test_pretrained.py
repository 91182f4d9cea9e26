"""``pretrained=True`` and ``hf-hub:`` names resolve to the project's Hub repositories.

The Hub cannot be reached here, so the repositories are made in the test: models are saved with
hub-knowledge and laid into a temporary Hugging Face cache, then loaded in a fresh interpreter
with ``HF_HUB_OFFLINE=1`` (one interpreter for all checks: importing torch and timm is the slow
part).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from safetensors import safe_open

import timm_knowledge  # noqa: F401  (registers the names)
from hub_knowledge import add_to_cache, save_for_hub
from hub_knowledge.converters import convert_kernelwarehouse

KW = "kw_mobilenetv2_100_1x"
# the kernelwarehouse package's copy of the authors' reference outputs (see its README)
FIXTURE = (
    Path(__file__).resolve().parents[3]
    / "packages/kernelwarehouse/tests/fixtures/mobilenetv2_100_kw1x.safetensors"
)
CUSTOM_RD = "knowledge-vision/rd-resnet18-64atoms"

OFFLINE = textwrap.dedent(
    f"""
    import json, sys
    import safetensors.torch, timm, torch
    import hub_knowledge, timm_knowledge
    ref = safetensors.torch.load_file(sys.argv[1])
    x = ref["x"]
    out = {{}}
    with torch.no_grad():
        kw = timm.create_model("{KW}", pretrained=True).eval()
        out["kw"] = torch.equal(kw(x), ref["kw"])
        out["authors"] = float((kw(x) - ref["authors"]).abs().max())
        out["kw_source"] = kw.pretrained_cfg["hf_hub_id"]
        tuned = timm.create_model("{KW}.in1k", pretrained=True, num_classes=10).eval()
        out["kw_new_head"] = [torch.equal(tuned.forward_features(x), ref["kw_features"]),
                              tuned.get_classifier().out_features]
        custom = timm.create_model("hf-hub:{CUSTOM_RD}", pretrained=True).eval()
        out["custom_rd"] = [torch.equal(custom(x), ref["custom_rd"]),
                            custom.layer3.rd.num_atoms]
        loaded = hub_knowledge.load("knowledge-vision/{KW}.in1k").eval()
        out["hub_load"] = torch.equal(loaded(x), ref["kw"])
    for name in ("kw_resnet18_1x", "rd_resnet18.in1k"):  # not in the cache: named, at once
        try:
            timm.create_model(name, pretrained=True)
            out["missing_" + name] = None
        except Exception as err:
            out["missing_" + name] = [type(err).__name__, str(err)]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrained")
    cache = tmp / "hf-cache"
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is not in this checkout")
    # the authors' KW MobileNetV2 (their code, their weights), converted to kw_mobilenetv2_100_1x
    with safe_open(str(FIXTURE), "pt") as f:
        config = json.loads(f.metadata()["config"])
        x = f.get_tensor("input").float()
        ref = {"x": x, "authors": f.get_tensor("logits_tau0.0")}
    kw, report = convert_kernelwarehouse(
        FIXTURE, "kw_mobilenetv2_100", config, prefix="model.", progress=False
    )
    assert report.architecture == KW  # the paper configuration registered by this package
    with torch.no_grad():
        ref["kw"], ref["kw_features"] = kw(x), kw.forward_features(x)
        custom = timm.create_model(
            "rd_resnet18", num_atoms=64, variant="authors", dictionary=torch.randn(64, 256)
        ).eval()
        ref["custom_rd"] = custom(x)
    for model, repo_id in [
        (kw, f"knowledge-vision/{KW}.in1k"),
        (custom, CUSTOM_RD),
    ]:
        add_to_cache(
            save_for_hub(model, tmp / repo_id, model_name=repo_id), repo_id, cache_dir=cache
        )
    safetensors.torch.save_file(ref, str(tmp / "ref.safetensors"))
    (tmp / "offline.py").write_text(OFFLINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp / "home"))
    done = subprocess.run(
        [sys.executable, str(tmp / "offline.py"), str(tmp / "ref.safetensors")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), tmp


def test_pretrained_kw_model_loads_from_its_hub_repository(offline):
    report, _ = offline
    assert report["kw"] is True
    assert report["authors"] <= 1e-4  # the authors' own logits for these weights
    assert report["kw_source"] == f"knowledge-vision/{KW}.in1k"
    assert report["hub_load"] is True


def test_pretrained_with_a_new_head_keeps_the_backbone(offline):
    assert offline[0]["kw_new_head"] == [True, 10]


def test_rd_dictionary_initialisation_is_held_by_the_weights(offline):
    report, tmp = offline
    assert report["custom_rd"][0] is True
    config = json.loads((tmp / CUSTOM_RD / "config.json").read_text())
    # the atoms were a tensor argument: left out of config.json, their values are in the weights
    assert "dictionary" not in config["model_args"]
    assert config["knowledge"]["build_args_held_by_weights"] == ["dictionary"]
    assert config["knowledge"]["methods"] == ["yolo-rd"]


def test_build_arguments_travel_through_hf_hub_names(offline):
    report, tmp = offline
    assert report["custom_rd"] == [True, 64]
    config = json.loads((tmp / CUSTOM_RD / "config.json").read_text())
    assert config["architecture"] == "rd_resnet18"
    assert config["model_args"]["num_atoms"] == 64 and config["model_args"]["variant"] == "authors"


@pytest.mark.parametrize(
    ("name", "repo"),
    [("kw_resnet18_1x", "kw_resnet18_1x.in1k"), ("rd_resnet18.in1k", "rd_resnet18.in1k")],
)
def test_pretrained_weights_not_in_the_cache_name_the_repository(offline, name, repo):
    # offline without a cached copy: timm's error names no repository and says nothing of how
    # to get the weights (unpublished weights: at once, see test_registry)
    kind, message = offline[0]["missing_" + name]
    assert kind == "FileNotFoundError"
    assert f"'knowledge-vision/{repo}'" in message and "not in the local" in message
    assert "add-to-cache" in message and "pretrained=False" in message
