"""Method metadata comes from the method packages; models with RDs attached after
``timm.create_model`` publish and rebuild through timm (local-dir: and hf-hub:, offline)."""

from __future__ import annotations

import json

import timm
import torch
import yaml
from huggingface_hub import constants

import dict_init
import kernelwarehouse
import rd_core
from hub_knowledge import add_to_cache, load, model_card, save_for_hub
from hub_knowledge.card import infer_task
from hub_knowledge.dictionaries import dictionary_card
from hub_knowledge.methods import FALLBACK, detect_methods, method_for


def _card_meta(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def test_method_metadata_is_declared_by_each_package():
    rd = method_for("rd_core")
    assert (rd.tag, rd.paper_url) == ("yolo-rd", rd_core.HUB_METADATA["paper_url"])
    assert rd.export_config is rd_core.factory.export_config
    assert "rd_core" not in FALLBACK and "dict_init" not in FALLBACK  # no sibling list
    assert method_for("dict_init").package == "dict-init"
    # kernelwarehouse declares nothing yet: hub-knowledge's fallback describes it
    if not hasattr(kernelwarehouse, "HUB_METADATA"):
        assert method_for("kernelwarehouse") is FALLBACK["kernelwarehouse"]
    text = dictionary_card(dict_init.Dictionary(torch.randn(4, 3), {"seed": 0}), name="me/d")
    assert {"retriever-dictionary", "yolo-rd"} <= set(_card_meta(text)["tags"])
    assert dict_init.HUB_METADATA["paper_url"] in text


def test_attached_after_create_publishes_and_rebuilds_through_timm(tmp_path, monkeypatch):
    model = timm.create_model("test_convnext", num_classes=3)
    rd_core.attach(model, at="stages.1", num_atoms=8, variant="authors", image_size=32)
    model.eval()
    folder = save_for_hub(model, tmp_path / "rd", model_name="me/rd-test-convnext")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "with_rd"
    assert config["model_args"]["base_architecture"] == "test_convnext"
    assert config["model_args"]["rd_attachments"] == rd_core.attachments(model)
    assert config["knowledge"]["methods"] == ["yolo-rd"]
    assert config["pretrained_cfg"].get("license")
    card = (folder / "README.md").read_text()
    assert "import rd_core  # registers with_rd" in card
    assert rd_core.HUB_METADATA["paper_url"] in card
    assert _card_meta(card)["pipeline_tag"] == "image-classification"

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert torch.equal(by_timm(x), expected)
        assert torch.equal(load(folder).eval()(x), expected)
        cache = tmp_path / "cache"
        add_to_cache(folder, "me/rd-test-convnext", cache_dir=cache)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        hub = "hf-hub:me/rd-test-convnext"
        from_hub = timm.create_model(hub, pretrained=True, cache_dir=cache).eval()
        assert torch.equal(from_hub(x), expected)
        features = timm.create_model(
            hub, pretrained=True, cache_dir=cache, features_only=True, out_indices=(1,)
        ).eval()
        (stage,) = features(x)
        assert rd_core.attached(features) and stage.shape[1] == features.feature_info.channels()[0]


def test_registered_rd_architectures_keep_their_config():
    # an architecture that builds its RDs itself is left as it is (nothing to rebuild)
    model = timm.create_model(
        "with_rd", base_architecture="test_resnet", rd_attachments=[{"at": "layer2"}]
    )
    config = rd_core.factory.export_config(model, {"architecture": "with_rd"})
    assert config["architecture"] == "with_rd"
    assert [m.tag for m in detect_methods(model)] == ["yolo-rd"]


class _Detector(torch.nn.Module):  # what a detector offers instead of timm's classifier API
    def forward(self, x):
        return x

    def predict(self, x):
        return []


def test_pipeline_tag_follows_the_task():
    assert infer_task(_Detector()) == "object-detection"
    assert infer_task(timm.create_model("test_resnet")) == "image-classification"
    declared = _Detector()
    declared.pipeline_tag = "image-segmentation"
    assert infer_task(declared) == "image-segmentation"
    meta = _card_meta(
        model_card(timm.create_model("test_resnet"), repo_id="me/x", task="object-detection")
    )
    assert meta["pipeline_tag"] == "object-detection"
    assert "image-classification" not in meta["tags"]


def test_every_registered_project_pretrained_cfg_has_a_license():
    project = ("rd_core", "kernelwarehouse", "dict_init", "timm_knowledge", "yolo_heads")
    cfgs = {
        tag: cfg
        for name in timm.list_models()
        if timm.models.model_entrypoint(name).__module__.split(".")[0] in project
        for tag, cfg in timm.models.get_arch_pretrained_cfgs(name).items()
    }
    assert "with_rd" in cfgs
    assert not [tag for tag, cfg in cfgs.items() if not cfg.license]
