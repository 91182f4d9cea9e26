"""TorchScript: KW layers script (``torch.jit.script``, timm's ``--torchscript``) and the scripted
module computes what the eager one computes (reference: the eager module, the authors'
formulation), in eval and in training mode, through shared warehouses and a save / load."""

from __future__ import annotations

import io
import warnings

import pytest
import timm
import torch

import kernelwarehouse as kw


def _script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        return torch.jit.script(module)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: kw.KWConv2d(16, 32, 3, padding=1, budget=2.0), (3, 16, 8, 8)),
        (
            lambda: kw.KWConv2d(16, 32, 3, stride=2, padding=1, budget=0.5, bias=False),
            (2, 16, 9, 9),
        ),
        (lambda: kw.KWConv2d(16, 16, 3, padding="same", groups=4), (2, 16, 6, 6)),
        (lambda: kw.KWConv2d(16, 24, 1, budget=1.0), (1, 16, 5, 5)),
        (lambda: kw.KWConv1d(8, 16, 3, padding=1), (2, 8, 10)),
        (lambda: kw.KWConv3d(8, 8, 3, padding=1), (2, 8, 4, 4, 4)),
        (lambda: kw.KWLinear(32, 64), (2, 5, 32)),
    ],
)
def test_scripted_layer_matches_eager(layer, shape):
    torch.manual_seed(0)
    module = layer()
    kw.set_temperature(module, 0.3)
    x = torch.randn(*shape)
    keys = list(module.state_dict())
    scripted = _script(module)
    assert list(module.state_dict()) == keys  # scripting leaves the eager module as it was
    for mode in ("eval", "train"):
        getattr(module, mode)()
        getattr(scripted, mode)()
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), module(x), rtol=1e-5, atol=1e-5)
    # gradients reach the same parameters (the warehouse included)
    module.train()
    scripted.train()
    eager_grads = torch.autograd.grad(module(x).square().sum(), list(module.parameters()))
    script_grads = torch.autograd.grad(scripted(x).square().sum(), list(scripted.parameters()))
    for g_eager, g_script in zip(eager_grads, script_grads):
        torch.testing.assert_close(g_script, g_eager, rtol=1e-4, atol=1e-5)


def test_scripted_kw_resnet_shares_warehouses_and_survives_save_load():
    torch.manual_seed(0)
    model = timm.create_model("kw_resnet18", num_classes=10).eval()
    kw.set_temperature(model, 0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    scripted = _script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
        # a warehouse updated through the eager model is what the scripted model reads
        for layer in model.modules():
            if isinstance(layer, kw.KWLayer) and layer.owns_warehouse:
                layer.warehouse.cells.mul_(0.5)
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)
