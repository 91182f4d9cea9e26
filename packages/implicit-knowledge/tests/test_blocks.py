import pytest
import torch
from torch import nn

from implicit_knowledge import (
    ImplicitAdd,
    ImplicitFeatureAlignment,
    ImplicitMul,
    ImplicitPredictionRefinement,
)


def test_feature_alignment_adds_per_level():
    ifa = ImplicitFeatureAlignment([8, 16, 32], prior="factorized")
    levels = [torch.randn(2, c, s, s) for c, s in [(8, 16), (16, 8), (32, 4)]]
    out = ifa(levels)
    for add, x, y in zip(ifa, levels, out):
        torch.testing.assert_close(y, x + add.implicit().detach().view(1, -1, 1, 1))


def test_feature_alignment_level_count_checked():
    with pytest.raises(ValueError, match=r"has 2 levels \(\[8, 16\] channels\) but got 3"):
        ImplicitFeatureAlignment([8, 16])([torch.randn(1, 8, 2, 2)] * 3)


def test_prediction_refinement_structure():
    ipr = ImplicitPredictionRefinement(nn.Conv2d(16, 24, 1))
    assert isinstance(ipr.add, ImplicitAdd) and ipr.add.channels == 16
    assert isinstance(ipr.mul, ImplicitMul) and ipr.mul.channels == 24
    x = torch.randn(2, 16, 5, 5)
    expected = ipr.conv(x + ipr.add.implicit().view(1, -1, 1, 1)) * ipr.mul.implicit().view(
        1, -1, 1, 1
    )
    torch.testing.assert_close(ipr(x), expected)


def test_prediction_refinement_linear_works_on_last_axis():
    ipr = ImplicitPredictionRefinement(nn.Linear(6, 3))
    assert ipr(torch.randn(2, 9, 6)).shape == (2, 9, 3)


def test_prediction_refinement_rejects_non_conv():
    with pytest.raises(TypeError, match=r"conv=ReLU must be a convolution or linear layer"):
        ImplicitPredictionRefinement(nn.ReLU())
