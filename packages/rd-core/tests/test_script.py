"""TorchScript and tracing: a RetrieverDictionary scripts and traces, and the scripted / traced
module computes what the eager module computes (the reference), in both variants."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from rd_core import RetrieverDictionary


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "paper"},
        {"variant": "paper", "fused_retriever": True, "trainable_dictionary": False},
        {"variant": "authors"},
    ],
)
def test_scripted_rd_matches_eager(kwargs, randomise):
    rd = randomise(RetrieverDictionary(8, num_atoms=16, kernel_size=3, residual=0.7, **kwargs))
    x = torch.randn(2, 8, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(rd)
    rd.eval()
    scripted.eval()
    with torch.no_grad():  # eager takes the folded (cached) dictionary here
        torch.testing.assert_close(scripted(x), rd(x), rtol=1e-5, atol=1e-5)
    rd.train()
    scripted.train()
    torch.testing.assert_close(scripted(x), rd(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "authors"])
@pytest.mark.parametrize("frozen", [False, True], ids=["no_grad", "frozen"])
def test_trace_of_an_rd_model_passes_its_check_and_follows_the_weights(variant, frozen, randomise):
    # in eval mode without gradients the fold of PONO + dictionary used to be cached between
    # the two runs torch.jit.trace compares: "Graphs differed across invocations"
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        RetrieverDictionary(8, num_atoms=16, kernel_size=3, variant=variant),
    )
    randomise(model[1])
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    with warnings.catch_warnings(), torch.set_grad_enabled(frozen):
        warnings.simplefilter("error", torch.jit.TracerWarning)
        if frozen:
            model.requires_grad_(False)
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)
        other = torch.randn(3, 3, 6, 6)
        torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-5)
        next(model[1].dictionary.parameters()).mul_(2.0)  # the graph folds current weights
        torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-5)
