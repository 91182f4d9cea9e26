"""TorchScript: implicit layers script, and the scripted layer computes what the eager one does."""

from __future__ import annotations

import warnings

import pytest
import torch

from implicit_knowledge import ImplicitAdd, ImplicitConcat, ImplicitMul


@pytest.mark.parametrize("prior", ["vector", "network", "factorized"])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda p: ImplicitAdd(8, prior=p), (2, 8, 4, 4)),
        (lambda p: ImplicitMul(8, prior=p, dim=-1), (2, 5, 8)),
        (lambda p: ImplicitConcat(4, prior=p, in_channels=8), (2, 8, 3, 3)),
    ],
)
def test_scripted_layer_matches_eager(make, shape, prior):
    torch.manual_seed(0)
    layer = make(prior)
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x), layer(x), rtol=0, atol=0)
    # gradients reach the prior's parameters in the scripted layer too
    grads = torch.autograd.grad(scripted(x).sum(), list(scripted.parameters()))
    expected = torch.autograd.grad(layer(x).sum(), list(layer.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
