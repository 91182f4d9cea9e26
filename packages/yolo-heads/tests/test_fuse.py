"""Conv + BatchNorm folding and inference fusion, against the unfused model's outputs."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d, StdConv2d
from torch import nn

from yolo_heads import YOLODetector
from yolo_heads import fuse as fuse_module
from yolo_heads.fuse import FusionError, conv_bn_pairs, fuse_conv_bn, fuse_for_inference


def _randomise_batchnorm(model: nn.Module) -> None:
    """Running statistics and affine terms far from identity, so folding has work to do."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("head", ["anchor_free", "anchor_based"])
@pytest.mark.parametrize("knowledge", [{"implicit": True}, {"rd": {"num_atoms": 16}}])
def test_fuse_for_inference_matches_unfused(tiny, head, knowledge):
    model = YOLODetector(num_classes=3, head=head, **tiny, **knowledge)
    _randomise_batchnorm(model)
    if knowledge.get("implicit"):
        ik = pytest.importorskip("implicit_knowledge")
        with torch.no_grad():  # implicit terms away from their init, so folding them matters
            for layer in ik.implicit_layers(model).values():
                for p in layer.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    batchnorms = _count(model, nn.BatchNorm2d)
    convs = _count(model, nn.Conv2d)
    # In resnet18, the PAN neck and both heads every BatchNorm follows a convolution.
    assert len(conv_bn_pairs(model)) == batchnorms > 40

    fused = fuse_for_inference(model)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = model(images), fused(images)
    diff = max((a - b).abs().max().item() for a, b in zip(expected, got))
    assert diff <= 1e-4
    assert _count(fused, nn.BatchNorm2d) == 0
    assert _count(fused, nn.Conv2d) == convs
    assert not fused.training and model.training is False
    assert _count(model, nn.BatchNorm2d) == batchnorms  # the original is left alone
    if knowledge.get("implicit"):
        assert len(ik.implicit_layers(fused)) < len(ik.implicit_layers(model))


class _Residual(nn.Module):
    """The pre-norm map also feeds a residual: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _ReturnsPreNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return y, self.bn(y)


class _SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class _InPlaceBetween(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        y.mul_(2.0)
        return self.bn(y)


@pytest.mark.parametrize(
    "net",
    [
        _Residual,
        _ReturnsPreNorm,
        _SharedConv,
        _InPlaceBetween,
        lambda: nn.Sequential(StdConv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
    ],
)
def test_unfoldable_pairs_are_left_alone(net):
    model = net()
    _randomise_batchnorm(model)
    model.eval()
    x = torch.rand(2, 4, 8, 8)
    assert conv_bn_pairs(model, x) == []
    fused = fuse_conv_bn(model, x)
    assert _count(fused, nn.BatchNorm2d) == 1
    with torch.no_grad():
        expected, got = model(x), fused(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b)


def test_timm_batchnorm_act_keeps_its_activation():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), BatchNormAct2d(4, act_layer=nn.ReLU))
    _randomise_batchnorm(model)
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    fused = fuse_conv_bn(model, x)
    assert [type(m).__name__ for m in fused[1]] == ["Identity", "ReLU"]
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    assert (fused(x) >= 0).all()


def test_wrong_folding_is_caught(monkeypatch):
    """The output check is a real check: a folding that forgets the BatchNorm is reported."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    _randomise_batchnorm(model)
    monkeypatch.setattr(fuse_module.fusion, "fuse_conv_bn_eval", lambda conv, bn: conv)
    with pytest.raises(FusionError, match="changed Sequential's outputs"):
        fuse_conv_bn(model.eval(), torch.rand(1, 3, 8, 8))


def test_bad_input():
    with pytest.raises(TypeError, match=r"model='resnet18' is not valid; expected a torch\.nn"):
        fuse_conv_bn("resnet18")
    with pytest.raises(ValueError, match="atol=-1"):
        fuse_conv_bn(nn.Conv2d(3, 3, 1), atol=-1)
    with pytest.raises(ValueError, match="training mode"):
        conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_timm_backbone_with_norm_act_layers():
    """efficientnet_b0: timm's BatchNormAct2d, depth-wise convs, squeeze-excitation."""
    model = YOLODetector("efficientnet_b0", num_classes=3, neck_channels=16)
    _randomise_batchnorm(model)
    model.eval()
    assert _count(model, BatchNormAct2d) > 40
    fused = fuse_for_inference(model)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(model(images), fused(images)))
    assert diff <= 1e-4
    assert _count(fused, nn.BatchNorm2d) == 0
