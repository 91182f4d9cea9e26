from __future__ import annotations

import json
import os
import re
import stat

import pytest
import torch
from safetensors.torch import load_file

from dict_init import Dictionary, FeatureShards, ShardWriter


def test_save_load_round_trip(tmp_path):
    atoms = torch.randn(12, 6)
    extras = {"normalization.mean": torch.randn(6)}
    d = Dictionary(atoms, {"encoder": {"model": "resnet18"}, "seed": 3}, extras)
    path = d.save(tmp_path / "dict.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict.json", "dict.safetensors"]
    meta = json.loads((tmp_path / "dict.json").read_text())
    assert meta["num_atoms"] == 12 and meta["feature_dim"] == 6 and meta["seed"] == 3
    assert set(load_file(path)) == {"atoms", "normalization.mean"}
    loaded = Dictionary.load(path)
    assert torch.equal(loaded.atoms, atoms)
    assert torch.equal(loaded.extras["normalization.mean"], extras["normalization.mean"])
    assert loaded.metadata["encoder"] == {"model": "resnet18"}


def test_metadata_also_inside_safetensors(tmp_path):
    path = Dictionary(torch.randn(3, 2), {"seed": 9}).save(tmp_path / "d.safetensors")
    (tmp_path / "d.json").unlink()
    assert Dictionary.load(path).metadata["seed"] == 9


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import dict_init._io as io

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        Dictionary(torch.randn(3, 2)).save(tmp_path / "d.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_atomically(tmp_path):
    path = tmp_path / "d.safetensors"
    Dictionary(torch.zeros(3, 2)).save(path)
    Dictionary(torch.ones(4, 2)).save(path)
    assert Dictionary.load(path).num_atoms == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.safetensors"]


@pytest.mark.parametrize(
    ("atoms", "match"),
    [
        (torch.randn(4), r"atoms=\(4,\)"),
        (torch.zeros(0, 3), r"atoms.shape=\(0, 3\)"),
        (torch.tensor([[1.0, float("nan")]]), "non-finite"),
    ],
)
def test_bad_atoms(atoms, match):
    with pytest.raises(ValueError, match=match):
        Dictionary(atoms)


def test_bad_metadata_and_roots():
    with pytest.raises(ValueError, match=r"metadata='' is invalid: expected a mapping"):
        Dictionary(torch.randn(4, 3), "")
    with pytest.raises(ValueError, match=r"root=None is invalid: expected a path"):
        FeatureShards(None)
    with pytest.raises(ValueError, match=r"root=0 is invalid: expected a path"):
        ShardWriter(0)


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match=r"path=.*\.safetensors"):
        Dictionary(torch.randn(2, 2)).save(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="existing"):
        Dictionary.load(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------- unreadable files
def _saved(tmp_path, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dictionary(torch.randn(n, 4, generator=g), {"seed": seed}).save(
        tmp_path / "d.safetensors"
    )


@pytest.mark.parametrize(
    "content",
    [
        lambda whole: whole[: len(whole) // 2],  # an interrupted copy
        lambda whole: b"<html>404 not found</html>",  # another format
        lambda whole: b"",
    ],
    ids=["truncated", "foreign", "empty"],
)
def test_unreadable_safetensors_named_in_the_error(tmp_path, content):
    path = _saved(tmp_path)
    path.write_bytes(content(path.read_bytes()))
    # safetensors' own reason (its wording varies between versions) in the project's sentence
    name = re.escape(str(path))
    message = rf"^Dictionary.load: {name} is not a readable safetensors file \(.+\)$"
    with pytest.raises(ValueError, match=message):
        Dictionary.load(path)


def test_safetensors_without_atoms(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"path=.*w.safetensors.*'atoms' tensor"):
        Dictionary.load(tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    ("text", "reason"), [('{"seed": 0,', "not valid JSON"), ("[1, 2]", "a JSON list")]
)
def test_corrupt_companion_json_named_in_the_error(tmp_path, text, reason):
    path = _saved(tmp_path)
    (tmp_path / "d.json").write_text(text)
    json_path = re.escape(str(tmp_path / "d.json"))
    with pytest.raises(ValueError, match=rf"Dictionary.load: {json_path} is {reason}.*delete it"):
        Dictionary.load(path)
    (tmp_path / "d.json").unlink()  # the hint holds: the embedded copy is used
    assert Dictionary.load(path).metadata["seed"] == 0


def test_json_from_another_save_is_reported_and_ignored(tmp_path):
    path = _saved(tmp_path, seed=0)
    (tmp_path / "d.json").write_text(json.dumps({"seed": 7, "num_atoms": 5}))
    with pytest.warns(UserWarning, match=r"d.json does not match the metadata inside"):
        loaded = Dictionary.load(path)
    assert loaded.metadata["seed"] == 0


# ----------------------------------------------------------------- permissions, leftovers
def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = _saved(tmp_path)
    finally:
        os.umask(old)
    for p in (path, tmp_path / "d.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    old = os.umask(0o077)
    try:
        path = _saved(tmp_path / "private")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".d.safetensors.{dead}-0bad.tmp", tmp_path / f".d.json.{dead}-0bad.tmp"]
    live = tmp_path / f".d.safetensors.{os.getpid()}-0001.tmp"  # a writer still running
    for p in [*stale, live]:
        p.write_bytes(b"half")
    _saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["d.json", "d.safetensors", live.name]
    )


# ----------------------------------------------------------------- kill test
def _save_and_die(path: str, point: str) -> None:
    """Child process: save a new dictionary over ``path`` and SIGKILL itself at ``point``."""
    import pathlib
    import signal

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_write_bytes, real_write_text = pathlib.Path.write_bytes, pathlib.Path.write_text
    real_replace = os.replace
    renames = []

    def half_bytes(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        die()

    def half_text(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        die()

    def replace(src, dst):
        renames.append(dst)
        if point == f"rename-{len(renames)}":
            die()
        real_replace(src, dst)

    if point == "json-half":
        pathlib.Path.write_text = half_text
    if point == "safetensors-half":
        pathlib.Path.write_bytes = half_bytes
    os.replace = replace
    Dictionary(torch.full((9, 4), 2.0), {"seed": 1, "version": "new"}).save(path)
    os._exit(0)


@pytest.mark.parametrize("point", ["json-half", "safetensors-half", "rename-1", "rename-2", None])
def test_killed_save_leaves_the_old_dictionary_loadable(tmp_path, point):
    import multiprocessing
    import warnings

    path = tmp_path / "d.safetensors"
    old = Dictionary(torch.ones(5, 4), {"seed": 0, "version": "old"})
    old.save(path)
    child = multiprocessing.get_context("fork").Process(
        target=_save_and_die, args=(str(path), str(point))
    )
    child.start()
    child.join(60)
    assert child.exitcode == (0 if point is None else -9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = Dictionary.load(path)
    if point is None:  # the new set, whole
        assert loaded.metadata["version"] == "new"
        assert torch.equal(loaded.atoms, torch.full((9, 4), 2.0))
        assert not caught
        return
    # the old set, whole: atoms and metadata both old
    assert loaded.metadata["version"] == "old" and torch.equal(loaded.atoms, old.atoms)
    assert len(caught) == (1 if point == "rename-2" else 0)  # new JSON beside old weights
    if point != "rename-2":
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the killed leftovers
    # the next save cleans up and writes a complete set
    Dictionary(torch.zeros(3, 4), {"version": "next"}).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.safetensors"]
    assert Dictionary.load(path).metadata["version"] == "next"
