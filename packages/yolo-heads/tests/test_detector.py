from __future__ import annotations

import pytest
import torch
from torch import nn

from yolo_heads import YOLODetector, create_backbone


def one_target(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


TARGETS = [one_target([[4, 4, 30, 40], [30, 30, 60, 62]], [3, 1]), one_target([], [])]


@pytest.mark.parametrize("neck", ["pan", "fpn"])
@pytest.mark.parametrize("head", ["anchor_free", "anchor_based"])
def test_forward_loss_backward_predict(neck, head, tiny):
    kwargs = dict(tiny)
    head_kwargs = None
    if head == "anchor_based":
        head_kwargs = {
            "anchors": [
                [[6, 8], [10, 14], [14, 10]],
                [[16, 16], [20, 28], [28, 20]],
                [[32, 32], [40, 52], [52, 40]],
            ]
        }
    model = YOLODetector(num_classes=10, neck=neck, head=head, head_kwargs=head_kwargs, **kwargs)
    outputs = model(torch.rand(2, 3, 64, 64))
    assert [o.shape[2] if o.ndim == 5 else o.shape[-1] for o in outputs] == [8, 4, 2]
    total, parts = model.loss(outputs, TARGETS)
    assert torch.isfinite(total) and total > 0
    assert set(parts) == ({"box", "dfl", "cls"} if head == "anchor_free" else {"box", "obj", "cls"})
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    preds = model.eval().predict(torch.rand(2, 3, 64, 64), conf=0.0, max_det=7)
    assert len(preds) == 2
    for p in preds:
        assert p["boxes"].shape[1] == 4 and len(p["boxes"]) <= 7
        assert len(p["scores"]) == len(p["labels"]) == len(p["boxes"])
        assert ((p["labels"] >= 0) & (p["labels"] < 10)).all()
        assert (p["boxes"] >= 0).all() and (p["boxes"] <= 64).all()


def test_loss_with_only_background_images(tiny):
    model = YOLODetector(num_classes=3, **tiny)
    total, parts = model.loss(model(torch.rand(2, 3, 64, 64)), [one_target([], [])] * 2)
    assert parts["box"] == 0 and parts["cls"] > 0
    total.backward()


def test_classification_head_is_retired(tiny):
    """One classification path: the old head's name points at timm's classifier and trainer."""
    with pytest.raises(
        ValueError,
        match=r"head='classification' was retired.*yolov9_c_cls.*"
        r"timm-knowledge train",
    ):
        YOLODetector(num_classes=5, head="classification", **tiny)


def test_full_size_resnet18_backbone_shapes():
    bb = create_backbone("resnet18")
    assert bb.channels == [128, 256, 512] and bb.strides == [8, 16, 32]
    assert bb.module_names == ["layer2", "layer3", "layer4"]


@pytest.mark.parametrize("name", ["test_efficientnet", "test_convnext", "test_byobnet"])
def test_other_timm_family_is_timms_feature_pyramid(name):
    """Any timm family with features_only: the detector's three levels are exactly timm's own
    stride-8/16/32 feature maps (same weights), with timm's channel counts."""
    import timm

    model = YOLODetector(name, num_classes=10, neck_channels=16).eval()
    reference = timm.create_model(name, features_only=True).eval()
    reference.load_state_dict(model.backbone.body.state_dict())
    info = reference.feature_info
    deepest = {r: i for i, r in enumerate(info.reduction())}  # last index at each stride
    assert model.backbone.channels == [info.channels()[deepest[s]] for s in (8, 16, 32)]
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference((images - model.mean) / model.std)
        ours = model.backbone((images - model.mean) / model.std)
    for level, stride in zip(ours, (8, 16, 32), strict=True):
        torch.testing.assert_close(level, expected[deepest[stride]], rtol=0, atol=0)
        assert level.shape[-1] == 64 // stride
    total, _ = model.train().loss(model(images), TARGETS)
    total.backward()
    assert torch.isfinite(total)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


class TwoLevels(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


class ThreeLevels(TwoLevels):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        a, b = super().forward(x)
        return [a, b, self.c(b)]


def test_module_backbone_is_probed():
    model = YOLODetector(ThreeLevels(), num_classes=2, neck_channels=8)
    assert model.backbone.channels == [8, 8, 16]
    assert len(model(torch.rand(1, 3, 64, 64))) == 3


def test_backbone_without_three_levels_is_rejected():
    with pytest.raises(ValueError, match=r"strides \[8, 16\].*\[8, 16, 32\]"):
        YOLODetector(TwoLevels(), num_classes=2)


def test_unknown_names_are_rejected(tiny):
    with pytest.raises(ValueError, match=r"head='ssd'.*anchor_free"):
        YOLODetector(num_classes=2, head="ssd", **tiny)
    with pytest.raises(ValueError, match="neck='bifpn'"):
        YOLODetector(num_classes=2, neck="bifpn", **tiny)
    with pytest.raises(ValueError, match="backbone='no_such_net'"):
        YOLODetector("no_such_net", num_classes=2)
    with pytest.raises(ValueError, match="num_classes=0"):
        YOLODetector(num_classes=0, **tiny)


@pytest.fixture(scope="module")
def model(tiny):
    return YOLODetector(num_classes=10, **tiny)


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match=r"1 channels.*in_chans=3"):
        model(torch.rand(1, 1, 64, 64))


def test_size_not_multiple_of_32(model):
    with pytest.raises(ValueError, match=r"70x64.*multiples of 32"):
        model(torch.rand(1, 3, 70, 64))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (one_target([[10, 10, 80, 20]], [1]), "outside the 64x64 image"),
        (one_target([[10, 10, 10, 20]], [1]), "degenerate"),
        (one_target([[10, 10, 20, 20]], [10]), r"labels'\]=\[10\].*\[0, 10\)"),
        (one_target([[10, 10, 20, float("nan")]], [1]), "non-finite"),
        ({"boxes": torch.zeros(1, 4)}, "'boxes' and 'labels'"),
    ],
)
def test_bad_targets(model, target, message):
    outputs = model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=message):
        model.loss(outputs, [target])


def test_target_count_must_match_batch(model):
    outputs = model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="1 entries but the batch has 2"):
        model.loss(outputs, [TARGETS[0]])


def test_predict_argument_checks(model):
    with pytest.raises(ValueError, match=r"conf=1\.5"):
        model.predict(torch.rand(1, 3, 64, 64), conf=1.5)
