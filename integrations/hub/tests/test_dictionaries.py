"""Dictionaries from dict-init: publish and load the way models do."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import hf_hub_download

from dict_init import Dictionary
from hub_knowledge import (
    CheckpointError,
    load_dictionary,
    push_dictionary_to_hub,
    save_dictionary_for_hub,
    save_for_hub,
)

TOKEN = "hf_loopback_token"
METADATA = {
    "encoder": {"kind": "vision", "model": "resnet18", "layer": "layer3"},
    "data": "sklearn digits",
    "seed": 0,
    "normalization": "none",
    "num_features": 4096,
}


def _dictionary(n=32, dim=16):
    return Dictionary(torch.randn(n, dim), dict(METADATA), {"mean": torch.randn(dim)})


def test_folder_round_trip_keeps_atoms_metadata_and_extras(tmp_path):
    original = _dictionary()
    folder = save_dictionary_for_hub(original, tmp_path, name="kv/rd-digits-32", datasets=["d"])
    loaded = load_dictionary(folder)
    assert torch.equal(loaded.atoms, original.atoms)
    assert torch.equal(loaded.extras["mean"], original.extras["mean"])
    assert loaded.metadata["encoder"] == METADATA["encoder"]
    assert loaded.metadata["num_atoms"] == 32
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"retriever-dictionary", "yolo-rd"} <= set(meta["tags"])
    assert meta["datasets"] == ["d"]
    assert "layer=layer3" in card and 'load_dictionary("kv/rd-digits-32")' in card


def test_push_through_the_loopback_hub_then_load_from_cache(tmp_path, loopback_hub, monkeypatch):
    original = _dictionary()
    repo_id = "knowledge-vision/rd-digits-32"
    push_dictionary_to_hub(original, repo_id, token=TOKEN, endpoint=loopback_hub.url)
    repo = loopback_hub.repos[repo_id]
    assert sorted(repo.files) == ["README.md", "dictionary.json", "dictionary.safetensors"]
    assert repo.lfs_paths == {"dictionary.safetensors"}
    cache = tmp_path / "cache"
    for name in repo.files:
        hf_hub_download(repo_id, name, cache_dir=cache, endpoint=loopback_hub.url, token=TOKEN)
    loopback_hub.server.shutdown()
    # offline: the client must answer from the cache alone
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_dictionary(repo_id, cache_dir=cache)
    assert torch.equal(loaded.atoms, original.atoms)


def test_truncated_and_wrong_repositories_are_reported(tmp_path):
    folder = save_dictionary_for_hub(_dictionary(), tmp_path / "dict")
    weights = folder / "dictionary.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"truncated: expected \d+ bytes"):
        load_dictionary(folder)
    import timm

    model_folder = save_for_hub(timm.create_model("test_resnet"), tmp_path / "model")
    (model_folder / "dictionary.safetensors").write_bytes(
        (model_folder / "model.safetensors").read_bytes()
    )
    (model_folder / "dictionary.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"not a dict-init dictionary"):
        load_dictionary(model_folder)
    with pytest.raises(TypeError, match=r"dictionary=Tensor must be a dict_init.Dictionary"):
        save_dictionary_for_hub(torch.randn(4, 4), tmp_path / "x")
