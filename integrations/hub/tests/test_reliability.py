"""Issue 16: clear errors, folders written as a whole, killed writers, permissions, offline."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import stat
from pathlib import Path

import pytest
import timm
import torch

import hub_knowledge
from hub_knowledge import CheckpointError, load, read_state_dict, save_for_hub
from hub_knowledge import _files as files_module
from hub_knowledge.cli import main


def _model(seed: int):
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", num_classes=3).eval()


def _outputs(model):
    torch.manual_seed(123)
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, 32, 32))


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.tmp"))


# ------------------------------------------------------------------------------ offline
def test_offline_load_of_an_uncached_repo_fails_at_once_naming_repo_and_offline(
    tmp_path, monkeypatch
):
    # HF_HUB_OFFLINE=1 as huggingface_hub reads it (the env var is read once at its import)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"source='org/missing'.*HF_HUB_OFFLINE=1"):
        load("org/missing", cache_dir=tmp_path)


def test_without_a_network_load_does_not_retry_for_23_s(tmp_path, monkeypatch):
    # Not mocked: the Hub endpoint is pointed at the discard port of this machine, where every
    # connection is refused, as it is without a network. Only time.sleep is recorded, to see
    # huggingface_hub's retries with backoff (1 + 2 + 4 + 8 + 8 s) without waiting for them.
    import huggingface_hub.utils._http as http
    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    sleeps: list[float] = []
    monkeypatch.setattr(http.time, "sleep", sleeps.append)
    with pytest.raises(FileNotFoundError) as error:
        load("org/missing", cache_dir=tmp_path)
    message = str(error.value)
    assert "source='org/missing'" in message and "cannot be reached" in message
    assert "HF_HUB_OFFLINE" in message
    assert sleeps == []  # no retry


def test_an_unreachable_hub_still_loads_a_cached_repo(tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = _model(0)
    folder = save_for_hub(model, tmp_path / "export")
    hub_knowledge.add_to_cache(folder, "org/cached", cache_dir=tmp_path / "cache")
    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )
    clone = load("org/cached", cache_dir=tmp_path / "cache").eval()
    assert torch.equal(_outputs(clone), _outputs(model))


# ------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_metrics_are_refused(tmp_path, value):
    with pytest.raises(ValueError, match=r"metrics=\{'top1': .*\}: values must be finite"):
        save_for_hub(_model(0), tmp_path / "repo", metrics={"top1": value, "top5": 90.0})
    assert not (tmp_path / "repo").exists()


def test_an_empty_torch_file_is_reported_by_the_project(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint='.*empty.pt' \(0 bytes\) is empty"):
        read_state_dict(empty)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b'{"architecture": "te', "not valid JSON"),
        (b"[1, 2]", "JSON list"),
    ],
)
def test_a_corrupt_config_json_is_named(tmp_path, content, reason):
    folder = save_for_hub(_model(0), tmp_path / "repo")
    (folder / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"config.json .*{reason}"):
        load(folder)


@pytest.mark.parametrize("content, reason", [(b"\xff", "not UTF-8"), (b"{bad", "not valid JSON")])
def test_a_corrupt_dictionary_json_is_named(tmp_path, content, reason):
    from dict_init import Dictionary

    folder = hub_knowledge.save_dictionary_for_hub(
        Dictionary(torch.randn(4, 3), {}), tmp_path / "d"
    )
    (folder / "dictionary.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"dictionary.json .*{reason}"):
        hub_knowledge.load_dictionary(folder)


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize(
    "umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_artifacts_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        folder = save_for_hub(_model(0), tmp_path / "repo")
        weights = hub_knowledge.save_weights(_model(0), tmp_path / "alone.safetensors")
        snapshot = hub_knowledge.add_to_cache(folder, "org/x", cache_dir=tmp_path / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == dir_mode
    written = [*folder.iterdir(), weights, *(p.resolve() for p in snapshot.iterdir())]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: file_mode for p in written
    }


# ------------------------------------------------------------------------------ whole folders
def _kill_writer(point: str, folder: Path) -> None:
    """Save another model into ``folder`` and SIGKILL this process at ``point``."""

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def after(real, into_new_folder=True):
        def wrapped(*args, **kwargs):
            result = real(*args, **kwargs)
            path = next(Path(a) for a in args if isinstance(a, (str, os.PathLike)))
            # a write into the new folder, not verify_rebuild's scratch config
            if not into_new_folder or path.parent.name.endswith(".tmp"):
                die()
            return result

        return wrapped

    import safetensors.torch

    import hub_knowledge.save as save_module

    if point == "mid-weights":  # half a file written, then killed

        def partial(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
            die()

        safetensors.torch.save_file = partial
    elif point == "after-weights":
        safetensors.torch.save_file = after(safetensors.torch.save_file)
    elif point == "after-config":
        save_module.write_json_atomic = after(save_module.write_json_atomic)
    elif point == "before-swap":
        files_module._swap_in = die
    elif point == "after-swap":  # the new folder is in place, the old one not yet removed
        files_module._exchange = after(files_module._exchange, into_new_folder=False)
    save_for_hub(_model(1), folder)
    os._exit(0)  # not reached when the kill works


KILL_POINTS = ["mid-weights", "after-weights", "after-config", "before-swap", "after-swap"]


def test_a_writer_killed_at_any_point_leaves_a_loadable_folder(tmp_path):
    folder = tmp_path / "repo"
    old, new = _outputs(_model(0)), _outputs(_model(1))
    save_for_hub(_model(0), folder)
    (folder / "notes.txt").write_text("the user's own file")
    fork = multiprocessing.get_context("fork")
    for point in KILL_POINTS:
        writer = fork.Process(target=_kill_writer, args=(point, folder))
        writer.start()
        writer.join(120)
        assert writer.exitcode == -signal.SIGKILL, point
        expected = new if point == "after-swap" else old
        assert torch.equal(_outputs(load(folder)), expected), point
        assert (folder / "notes.txt").read_text() == "the user's own file", point
        assert _leftovers(tmp_path), point  # the killed writer left its temporary behind
        save_for_hub(_model(0), folder)  # the next write removes it
        assert _leftovers(tmp_path) == [], point
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.md",
            "config.json",
            "model.safetensors",
            "notes.txt",
        ]


def test_stale_temporaries_of_a_live_writer_are_left_alone(tmp_path):
    live = tmp_path / f".repo.{os.getpid()}.abc.tmp"  # this process is alive: not stale
    live.mkdir()
    save_for_hub(_model(0), tmp_path / "repo")
    assert live.is_dir()


# ------------------------------------------------------------------------------ command line
def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_command_line_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["push", str(tmp_path), "org/name", "--no-such-flag"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--no-such-flag" in line and "Traceback" not in line

    assert (
        main(
            [
                "convert-yolo-rd",
                str(tmp_path / "missing.ckpt"),
                "--out",
                str(tmp_path / "o.safetensors"),
            ]
        )
        == 2
    )
    assert "missing.ckpt" in _one_line(capsys.readouterr().err)

    assert (
        main(
            [
                "convert-kernelwarehouse",
                "x.pth",
                "--arch",
                "kw_resnet18",
                "--config",
                "{bad",
                "--out",
                "o",
            ]
        )
        == 2
    )
    assert "--config='{bad'" in _one_line(capsys.readouterr().err)

    # an output folder that cannot be created (works as root too, unlike a read-only folder)
    folder = save_for_hub(_model(0), tmp_path / "repo")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["add-to-cache", str(folder), "org/name", "--cache-dir", str(blocker / "cache")])
    assert code == 2
    assert "a-file" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------- issue 25: folders checked before use
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / "config.json").write_text('{"architecture": "te'), "config.json .*JSON"),
        (
            lambda f: (f / "model.safetensors").write_bytes(
                (f / "model.safetensors").read_bytes()[:100]
            ),
            "model.safetensors.* truncated",
        ),
    ],
)
def test_a_corrupt_folder_is_refused_before_the_cache_or_the_network(
    tmp_path, capsys, monkeypatch, damage, reason
):
    folder = save_for_hub(_model(0), tmp_path / "repo")
    damage(folder)
    cache = tmp_path / "cache"
    assert main(["add-to-cache", str(folder), "org/name", "--cache-dir", str(cache)]) == 2
    assert re.search(reason, _one_line(capsys.readouterr().err))
    assert not cache.exists()  # nothing laid into the cache

    def no_network(*args, **kwargs):
        raise AssertionError("the network was reached before the folder was checked")

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", no_network)
    assert main(["push", str(folder), "org/name"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert re.search(reason, line) and "network" not in line
