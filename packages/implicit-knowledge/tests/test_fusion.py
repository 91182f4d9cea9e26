import copy

import pytest
import timm
import torch
from torch import nn

from implicit_knowledge import (
    ImplicitAdd,
    ImplicitConcat,
    ImplicitFeatureAlignment,
    ImplicitMul,
    ImplicitPredictionRefinement,
    fuse,
    implicit_layers,
)

PRIORS = ["vector", "network", "factorized"]

# (name, layer factory, input shape, implicit axis)
LAYERS = {
    "conv1d": (lambda: nn.Conv1d(6, 4, 3), (2, 6, 9), 1),
    "conv2d_1x1": (lambda: nn.Conv2d(6, 4, 1), (2, 6, 7, 7), 1),
    "conv2d_3x3_valid": (lambda: nn.Conv2d(6, 4, 3, stride=2), (2, 6, 9, 9), 1),
    "conv2d_3x3_reflect": (
        lambda: nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect"),
        (2, 6, 7, 7),
        1,
    ),
    "conv2d_grouped": (lambda: nn.Conv2d(6, 4, 1, groups=2, bias=False), (2, 6, 5, 5), 1),
    "conv2d_depthwise": (lambda: nn.Conv2d(6, 6, 3, groups=6), (2, 6, 7, 7), 1),
    "conv3d": (lambda: nn.Conv3d(6, 4, (1, 3, 3)), (2, 6, 3, 5, 5), 1),
    "linear": (lambda: nn.Linear(6, 4), (2, 5, 6), -1),
}


def _check_equal(model, fused, shape):
    x = torch.randn(shape) * 2
    with torch.no_grad():
        diff = (model(x) - fused(x)).abs().max().item()
    assert diff <= 1e-5, diff


def _width(layer, position):
    if isinstance(layer, nn.Linear):
        return layer.in_features if position == "before" else layer.out_features
    return layer.in_channels if position == "before" else layer.out_channels


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("op", [ImplicitAdd, ImplicitMul])
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_fold_is_exact_and_removes_implicit(layer_name, op, position, prior, scramble):
    make, shape, dim = LAYERS[layer_name]
    layer = make()
    implicit = op(_width(layer, position), prior=prior, dim=dim)
    parts = [implicit, layer] if position == "before" else [layer, implicit]
    model = scramble(nn.Sequential(*parts)).eval()
    fused = fuse(model)
    assert type(fused) is type(layer), fused  # the Sequential collapses to the layer
    assert not implicit_layers(fused)
    _check_equal(model, fused, shape)


@pytest.mark.parametrize("prior", PRIORS)
def test_add_conv_mul_becomes_one_conv(prior, scramble):
    model = scramble(
        nn.Sequential(ImplicitAdd(8, prior=prior), nn.Conv2d(8, 5, 1), ImplicitMul(5, prior=prior))
    )
    fused = fuse(model.eval())
    assert type(fused) is nn.Conv2d
    _check_equal(model, fused, (3, 8, 6, 6))


@pytest.mark.parametrize("prior", PRIORS)
def test_add_before_zero_padded_conv_stays_as_one_constant(prior, scramble):
    model = scramble(nn.Sequential(ImplicitAdd(4, prior=prior), nn.Conv2d(4, 4, 3, padding=1)))
    fused = fuse(model.eval())
    remaining = implicit_layers(fused)
    assert list(remaining) == ["0"]
    assert remaining["0"].prior_name == "vector"  # reduced to a constant
    assert sum(p.numel() for p in remaining["0"].parameters()) == 4
    _check_equal(model, fused, (2, 4, 6, 6))


def test_concat_before_conv_folds_into_bias(scramble):
    model = scramble(
        nn.Sequential(ImplicitConcat(3, in_channels=5, prior="network"), nn.Conv2d(8, 4, 1))
    )
    fused = fuse(model.eval())
    assert type(fused) is nn.Conv2d and fused.in_channels == 5
    _check_equal(model, fused, (2, 5, 4, 4))


def test_concat_after_conv_stays(scramble):
    model = scramble(nn.Sequential(nn.Conv2d(5, 4, 1), ImplicitConcat(3, prior="factorized")))
    fused = fuse(model.eval())
    assert list(implicit_layers(fused)) == ["1"]
    _check_equal(model, fused, (2, 5, 4, 4))


def test_chain_of_implicit_layers_folds_through(scramble):
    # After the first fold the next implicit layer becomes adjacent to the convolution.
    model = scramble(
        nn.Sequential(
            nn.Conv2d(4, 6, 3), ImplicitAdd(6), ImplicitMul(6, prior="network"), nn.ReLU()
        )
    )
    fused = fuse(model.eval())
    assert not implicit_layers(fused)
    assert [type(m) for m in fused] == [nn.Conv2d, nn.ReLU]
    _check_equal(model, fused, (2, 4, 8, 8))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), ImplicitMul(8, prior="factorized"), nn.ReLU()
        )
        self.ifa = ImplicitFeatureAlignment([8, 8], prior="network")
        self.head = ImplicitPredictionRefinement(nn.Conv2d(8, 5, 1), prior="factorized")

    def forward(self, x):
        x = self.stem(x)
        a, b = self.ifa([x, x[..., ::2, ::2]])
        return self.head(a).mean((2, 3)) + self.head(b).mean((2, 3))


def test_nested_model(scramble):
    model = scramble(_Block()).eval()
    before = copy.deepcopy(model.state_dict())
    fused = fuse(model)
    assert type(fused.head) is nn.Conv2d
    assert [type(m) for m in fused.stem] == [nn.Conv2d, nn.ReLU]
    # iFA has no visible neighbour: two constants remain, priors reduced.
    remaining = implicit_layers(fused)
    assert sorted(remaining) == ["ifa.0", "ifa.1"]
    assert all(m.prior_name == "vector" for m in remaining.values())
    _check_equal(model, fused, (2, 3, 8, 8))
    # fuse() copies by default: the trained model is untouched.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_fused_matches_plain_model_cost(scramble):
    fused = fuse(scramble(nn.Sequential(ImplicitAdd(8), nn.Conv2d(8, 8, 1), ImplicitMul(8))).eval())
    plain = nn.Conv2d(8, 8, 1)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in plain.parameters())


def test_timm_model_with_refined_classifier(scramble):
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    model.fc = ImplicitPredictionRefinement(model.fc, prior="factorized")
    scramble(model, scale=0.1).eval()  # logits reach ~10 here; keep float32 rounding below 1e-5
    fused = fuse(model)
    assert type(fused.fc) is nn.Linear
    assert not implicit_layers(fused)
    _check_equal(model, fused, (2, 3, 32, 32))


def test_fused_model_exports(scramble):
    model = scramble(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            ImplicitMul(8),
            nn.ReLU(),
            ImplicitPredictionRefinement(nn.Conv2d(8, 4, 1)),
        )
    ).eval()
    fused = fuse(model)
    x = torch.randn(1, 3, 16, 16)
    exported = torch.export.export(fused, (x,))
    torch.testing.assert_close(exported.module()(x), fused(x))


def test_fuse_rejects_non_module():
    with pytest.raises(TypeError, match=r"model=dict must be a torch.nn.Module"):
        fuse({})
