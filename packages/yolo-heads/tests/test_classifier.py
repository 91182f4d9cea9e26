"""The authors' YOLOv9 classifier (v9-c-cls) as a timm classifier, its RD variant, and the
digits crops it trains on. The fixture itself is checked in test_authors_fixtures.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from yolo_heads.architectures import GraphClassifier, GraphDetector
from yolo_heads.architectures.classifier import Classification
from yolo_heads.config import ConfigError, load_config
from yolo_heads.data import make_digits_classification, make_digits_detection, write_box_crops
from yolo_heads.official import authors_outputs, load, to_authors_key


@pytest.fixture(scope="module")
def classifier() -> GraphClassifier:
    return timm.create_model("yolov9_c_cls", num_classes=10).eval()


def test_head_is_the_authors_formula():
    """Their ``Classification``: Linear(avgpool(SiLU(BN_eval(conv1x1(x))))), BN eps 1e-3."""
    head = Classification(16, num_classes=5, neck_channels=8).eval()
    with torch.no_grad():
        head.conv.bn.running_mean.uniform_(-1, 1)
        head.conv.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 3, 3)
    bn = head.conv.bn
    hidden = F.silu(
        (F.conv2d(x, head.conv.conv.weight) - bn.running_mean.view(1, -1, 1, 1))
        / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-3)
        * bn.weight.view(1, -1, 1, 1)
        + bn.bias.view(1, -1, 1, 1)
    )
    expected = F.linear(hidden.mean((2, 3)), head.head.weight, head.head.bias)
    torch.testing.assert_close(head(x), expected)


def test_timm_classifier_interface(classifier):
    images = torch.rand(2, 3, 64, 64)
    logits = classifier(images)
    assert logits.shape == (2, 10)
    assert classifier.get_classifier() is classifier.layers[9].head
    assert classifier.pretrained_cfg["classifier"] == "layers.9.head"
    assert classifier.num_features == 1024
    features = classifier.forward_features(images)
    assert features.shape == (2, 1024, 2, 2)
    pooled = classifier.forward_head(features, pre_logits=True)
    torch.testing.assert_close(pooled, features.mean((2, 3)))
    torch.testing.assert_close(logits, classifier.get_classifier()(pooled))
    # timm's reset: a fresh Linear for 3 classes, then none (the pooled features)
    other = timm.create_model("yolov9_c_cls", num_classes=10)
    other.load_state_dict(classifier.state_dict())
    other.eval().reset_classifier(3)
    assert other(images).shape == (2, 3)
    other.reset_classifier(0)
    torch.testing.assert_close(other(images), pooled)
    assert timm.create_model("yolov9_c_cls", num_classes=0)(images[:1]).shape == (1, 1024)


def test_features_only_gives_the_backbone_maps(classifier):
    backbone = timm.create_model("yolov9_c_cls", features_only=True)
    assert backbone.feature_info.channels() == [512, 512, 512]
    assert backbone.feature_info.reduction() == [8, 16, 32]
    own = classifier.state_dict()
    backbone.load_state_dict({k: own[k.removeprefix("model.")] for k in backbone.state_dict()})
    images = torch.rand(1, 3, 64, 64)
    maps = backbone.eval()(images)
    tagged = classifier.forward_tags(images)  # B3 / B4 / B5 of the whole model
    for got, tag in zip(maps, ("B3", "B4", "B5"), strict=True):
        torch.testing.assert_close(got, tagged[tag])
    assert len(backbone.model.layers) == 9  # the head is pruned


def test_rd_variant_is_rd_9c_backbone_with_the_head():
    """yolo_rd_9c_cls = yolov9_c_cls + rd-9c's RD block: the parameter difference equals that
    between the detectors yolo_rd_9c and yolov9_c; a dictionary initialises its atoms."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rd_params = count(GraphDetector("yolo_rd_9c", auxiliary=False)) - count(
        GraphDetector("yolov9_c", auxiliary=False)
    )
    plain, rd = GraphClassifier("yolov9_c_cls"), GraphClassifier("yolo_rd_9c_cls")
    assert count(rd) - count(plain) == rd_params > 0
    assert rd.rd_at == "layers.4" and plain.rd_at is None
    atoms = torch.randn(8, 512)
    seeded = GraphClassifier("yolo_rd_9c_cls", num_classes=3, dictionary=atoms)
    weight = seeded.layers[4].dconv.dictionary.conv.weight  # [C, N, 1, 1]: atoms as columns
    torch.testing.assert_close(weight[:, :, 0, 0], atoms.T)
    assert seeded.config["B3"] == {"num_atoms": 8}  # the weights carry the atoms
    rebuilt = GraphClassifier("yolo_rd_9c_cls", **seeded.config)
    rebuilt.load_state_dict(seeded.state_dict())


def test_authors_weights_with_another_class_count():
    """official.load keeps every weight but the Linear when the class count differs."""
    torch.manual_seed(1)
    theirs = {to_authors_key(k): v for k, v in GraphClassifier("yolov9_c_cls").state_dict().items()}
    assert "9.head.weight" in theirs and "0.conv.weight" in theirs  # their key layout
    model = load(theirs, model=GraphClassifier("yolov9_c_cls", num_classes=10))
    assert sorted(model.skipped_keys) == ["layers.9.head.bias", "layers.9.head.weight"]
    for key, value in model.state_dict().items():
        if "head." not in key:
            assert torch.equal(value, theirs[to_authors_key(key)]), key
    assert authors_outputs(model, torch.rand(2, 3, 64, 64))["out.Main"].shape == (2, 10)
    with pytest.raises(ValueError, match=r"'9.head.weight' has shape \(80, 1024\)"):
        load(theirs, model=GraphClassifier("yolov9_c_cls", num_classes=10), strict_classes=True)
    with pytest.raises(ValueError, match=r"has no '9\.head\.bias'"):
        load({k: v for k, v in theirs.items() if k != "9.head.bias"}, model="yolov9_c_cls")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="'yolov9_t' is a detector table"):
        GraphClassifier("yolov9_t")
    with pytest.raises(ValueError, match="'yolov9_c_cls' is a classifier"):
        GraphDetector("yolov9_c_cls")
    with pytest.raises(ValueError, match="dictionary= is only for a table with a Retriever"):
        GraphClassifier("yolov9_c_cls", dictionary=torch.zeros(4, 512))
    with pytest.raises(ValueError, match="global_pool='max'"):
        GraphClassifier("yolov9_c_cls").reset_classifier(3, global_pool="max")
    with pytest.raises(ValueError, match="drop_rate=2"):
        GraphClassifier("yolov9_c_cls", drop_rate=2)
    with pytest.raises(ConfigError, match=r"is a classifier.*timm-knowledge train --model"):
        load_config("digits", ["model=yolov9_c_cls"])


def test_box_crops_are_the_square_around_each_box(tmp_path):
    """One crop per box: the square of side max(w, h) * 1.5 around the box centre, resized."""
    ann = make_digits_detection(tmp_path / "det", num_images=2, image_size=64, progress=False)
    counts = write_box_crops(ann, tmp_path / "cls", crop_size=24, context=0.25)
    coco = json.loads(ann.read_text())
    assert sum(counts.values()) == len(coco["annotations"])
    first = coco["annotations"][0]
    x, y, w, h = first["bbox"]
    side = max(w, h) * 1.5
    box = [round(v) for v in (x + w / 2 - side / 2, y + h / 2 - side / 2)]
    box += [round(x + w / 2 + side / 2), round(y + h / 2 + side / 2)]
    canvas = Image.open(tmp_path / "det" / "train" / coco["images"][0]["file_name"])
    expected = canvas.convert("RGB").crop(box).resize((24, 24), Image.BILINEAR)
    name = str(first["category_id"] - 1)  # the digits' category names are "0" .. "9"
    got = Image.open(tmp_path / "cls" / "train" / name / f"000001_{first['id']:06d}.png")
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    folder = make_digits_classification(tmp_path / "set", num_images=4, split="val", progress=False)
    assert {p.parent.name for p in (folder / "val").glob("*/*.png")} <= set("0123456789")
