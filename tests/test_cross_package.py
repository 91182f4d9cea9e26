"""Members used together, as the demo and users combine them."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from implicit_knowledge import fuse, implicit_layers


def _have(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_implicit_refinement_on_timm_head_fuses_away():
    timm = pytest.importorskip("timm")
    from implicit_knowledge import ImplicitPredictionRefinement

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5)
    model.classifier = ImplicitPredictionRefinement(model.classifier)
    model.eval()
    fused = fuse(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - fused(x)).abs().max() <= 1e-5
    assert not implicit_layers(fused)
