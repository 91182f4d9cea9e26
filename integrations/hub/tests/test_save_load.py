"""save_for_hub -> folder -> load, and the checks made on the way back."""

from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import yaml

import hub_knowledge
from hub_knowledge import CheckpointError, load, load_weights, save_for_hub
from hub_knowledge._files import atomic_path

FILES = ["README.md", "config.json", "model.safetensors"]


def _tiny(name="test_efficientnet", **kwargs):
    return timm.create_model(name, num_classes=5, **kwargs).eval()


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_folder_round_trip_gives_identical_outputs(tmp_path):
    model = _tiny()
    with torch.no_grad():  # move BatchNorm statistics away from their defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    folder = save_for_hub(model, tmp_path / "repo")
    assert sorted(p.name for p in folder.iterdir()) == FILES
    clone = load(folder).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_build_arguments_rebuild_the_same_architecture(tmp_path):
    # img_size changes the ViT position embedding: without it in config.json the rebuild differs
    model = _tiny("test_vit", img_size=64)
    folder = save_for_hub(model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_vit"
    assert config["num_classes"] == 5
    assert config["model_args"]["img_size"] == [64, 64] or config["model_args"]["img_size"] == 64
    clone = load(folder).eval()
    assert clone.pos_embed.shape == model.pos_embed.shape
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_explicit_model_args_and_lineage_are_recorded(tmp_path):
    lineage = {"base_model": "timm/test_resnet.r160_in1k", "dictionary": "org/rd-dict-512"}
    folder = save_for_hub(
        _tiny("test_resnet"), tmp_path, model_args={"drop_rate": 0.1}, lineage=lineage
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["drop_rate"] == 0.1
    assert config["knowledge"]["lineage"] == lineage
    assert config["knowledge"]["entrypoint_module"].startswith("timm.models")


def test_model_card_metadata(tmp_path):
    folder = save_for_hub(
        _tiny(),
        tmp_path,
        model_name="knowledge-vision/tiny-demo",
        metrics={"top1": 91.25, "top5": 99.5},
        datasets=["imagenet-1k"],
        license="mit",
        tags=["demo"],
        lineage={"base_model": "timm/test_efficientnet.r160_in1k", "dictionary": "org/dict"},
    )
    text = (folder / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "timm"
    assert meta["license"] == "mit"
    assert {"timm", "image-classification", "demo"} <= set(meta["tags"])
    assert meta["datasets"] == ["imagenet-1k"]
    assert meta["base_model"] == "timm/test_efficientnet.r160_in1k"
    results = meta["model-index"][0]["results"]
    assert {(m["type"], m["value"]) for r in results for m in r["metrics"]} == {
        ("top1", 91.25),
        ("top5", 99.5),
    }
    assert 'timm.create_model("hf-hub:knowledge-vision/tiny-demo", pretrained=True)' in text
    assert "org/dict" in text  # lineage shown in the body


def test_card_tags_and_cites_the_methods_a_model_carries(tmp_path):
    class FakeKernelWarehouseLayer(torch.nn.Identity):
        pass

    FakeKernelWarehouseLayer.__module__ = "kernelwarehouse.layers"  # as the real package's
    model = _tiny()
    model.head_extra = FakeKernelWarehouseLayer()
    text = (save_for_hub(model, tmp_path) / "README.md").read_text()
    assert "kernelwarehouse" in _front_matter(text)["tags"]
    assert "@inproceedings{li2024kernelwarehouse" in text
    assert "yolo-rd" not in _front_matter(text)["tags"]


def test_truncated_weights_are_reported(tmp_path):
    folder = save_for_hub(_tiny(), tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"truncated: expected \d+ bytes, found \d+"):
        load(folder)
    weights.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match=r"truncated"):
        load(folder)


def test_weights_for_another_architecture_are_reported(tmp_path):
    folder = save_for_hub(_tiny("test_resnet"), tmp_path)
    other = _tiny("test_efficientnet")
    with pytest.raises(CheckpointError, match=r"architecture='test_resnet'.*'test_efficientnet'"):
        load_weights(other, folder / "model.safetensors", architecture="test_efficientnet")
    # without a name to compare, the keys and shapes still decide
    with pytest.raises(CheckpointError, match=r"missing keys.*unexpected keys"):
        load_weights(other, folder / "model.safetensors")


def test_config_and_weights_that_disagree_are_reported(tmp_path):
    folder = save_for_hub(_tiny("test_resnet"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "test_efficientnet"
    config.pop("model_args")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"weights for architecture='test_resnet'"):
        load(folder)


def test_another_num_classes_is_a_shape_mismatch(tmp_path):
    folder = save_for_hub(_tiny(), tmp_path)
    with pytest.raises(CheckpointError, match=r"shapes differ.*\(5, \d+\) vs \(7, \d+\)"):
        load(folder, num_classes=7)


def test_torch_checkpoints_load_weights_only(tmp_path):
    model = _tiny()
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    state_dict, metadata = hub_knowledge.read_state_dict(path)
    assert metadata == {} and set(state_dict) == set(model.state_dict())

    # training scripts often pickle their argparse namespace; weights_only refuses such objects
    args = argparse.Namespace(lr=0.1)
    torch.save({"state_dict": model.state_dict(), "args": args}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"arbitrary pickle"):
        hub_knowledge.read_state_dict(tmp_path / "evil.pth")
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        hub_knowledge.read_state_dict(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"unknown suffix '\.pkl'"):
        hub_knowledge.read_state_dict(tmp_path / "model.pkl")


def test_bad_input_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"pretrained_cfg"):
        save_for_hub(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match=r"label_names has 2 entries; the model has 5"):
        save_for_hub(_tiny(), tmp_path, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"metrics="):
        save_for_hub(_tiny(), tmp_path, metrics={"top1": "high"})
    with pytest.raises(TypeError, match=r"model="):
        save_for_hub({"weight": torch.zeros(1)}, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"source=.*empty' is a folder without"):
        load(tmp_path / "empty")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"source=.*is a file"):
        load(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"neither an existing folder nor a Hub repo id"):
        load(tmp_path / "missing")


def test_unregistered_architecture_is_reported(tmp_path):
    folder = save_for_hub(_tiny(), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "kw_not_a_model"
    config["knowledge"]["entrypoint_module"] = "os"  # untrusted: must not be imported
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"architecture='kw_not_a_model'.*not registered"):
        load(folder)


def test_writes_are_atomic(tmp_path):
    folder = save_for_hub(_tiny(), tmp_path)
    before = (folder / "config.json").read_bytes()
    with pytest.raises(RuntimeError), atomic_path(folder / "config.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert (folder / "config.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == FILES


def test_a_model_its_config_would_not_rebuild_is_refused(tmp_path):
    model = _tiny("test_resnet")
    model.extra = torch.nn.Linear(2, 2)  # attached after the factory built it
    with pytest.raises(ValueError, match=r"would rebuild a different model.*unexpected keys"):
        save_for_hub(model, tmp_path / "a")
    model = _tiny("test_resnet")
    model.pretrained_cfg = {**model.pretrained_cfg, "architecture": "test_efficientnet"}
    with pytest.raises(ValueError, match=r"would rebuild a different model"):
        save_for_hub(model, tmp_path / "b")
    model = _tiny("test_resnet")
    model._model_args = {**model._model_args, "budget": 0.5}  # an argument resnet does not take
    with pytest.raises(ValueError, match=r"would not rebuild this model.*budget"):
        save_for_hub(model, tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing written
    # verify=False writes it anyway (e.g. for a folder completed by hand)
    assert (save_for_hub(model, tmp_path / "d", verify=False) / "config.json").is_file()
