from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dict_init import Dictionary


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

    monkeypatch.setattr(io, "save_file", boom)
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


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match=r"path=.*\.safetensors"):
        Dictionary(torch.randn(2, 2)).save(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="existing"):
        Dictionary.load(tmp_path / "missing.safetensors")
