"""RetrieverDictionary: equation 7, variants, dictionaries, fused retriever, eval cache, errors."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from rd_core import (
    FusedRetriever,
    RetrieverDictionary,
    SplitRetriever,
    fuse_retriever,
    positional_norm,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_paper_forward_matches_equation_7(randomise):
    f, n, k, lam = 8, 12, 3, 0.7
    rd = RetrieverDictionary(f, num_atoms=n, kernel_size=k, residual=lam)
    randomise(rd)
    x = torch.randn(2, f, 5, 6)
    # Equation 7 written out from its parts, independently of the module's forward.
    y = F.conv2d(x, rd.retriever.generator.conv.weight)
    c = F.conv2d(y, rd.retriever.exchanger.conv.weight, padding=k // 2, groups=n)
    mu = c.mean(1, keepdim=True)
    var = ((c - mu) ** 2).mean(1, keepdim=True)
    gamma, beta = rd.norm.weight.view(1, n, 1, 1), rd.norm.bias.view(1, n, 1, 1)
    c_norm = (c - mu) / torch.sqrt(var + 1e-5) * gamma + beta
    atoms = rd.dictionary.raw_atoms / rd.dictionary.raw_atoms.norm(dim=1, keepdim=True)
    retrieved = torch.einsum("bnhw,nf->bfhw", c_norm, atoms)
    expected = lam * x + (1 - lam) * retrieved
    torch.testing.assert_close(rd(x), expected, atol=1e-5, rtol=1e-5)
    assert rd(x).shape == x.shape


def test_parameter_count_at_paper_defaults():
    rd = RetrieverDictionary(512)
    f, n, k = 512, 512, 5
    # G (f*N) + E (N*k*k) + PONO gamma/beta (2N) + D (N*f), no biases (equations 1, 2, 4, 5).
    assert sum(p.numel() for p in rd.parameters()) == f * n + n * k * k + 2 * n + n * f
    fused = RetrieverDictionary(512, fused_retriever=True)
    assert sum(p.numel() for p in fused.parameters()) == f * n * k * k + 2 * n + n * f


def test_atoms_are_unit_length_and_follow_the_given_dictionary():
    given = torch.randn(16, 8) * 3
    rd = RetrieverDictionary(8, num_atoms=16, dictionary=given)
    torch.testing.assert_close(rd.atoms.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(rd.atoms, F.normalize(given, dim=1))


def test_dictionary_from_any_object_with_atoms_and_count_inferred():
    artifact = types.SimpleNamespace(atoms=torch.randn(10, 6), metadata={"encoder": "test"})
    rd = RetrieverDictionary(6, num_atoms=None, dictionary=artifact)
    assert rd.num_atoms == 10
    torch.testing.assert_close(rd.atoms, F.normalize(artifact.atoms, dim=1))


def test_pono_normalises_every_position():
    c = torch.randn(3, 20, 4, 5) * 4 + 2
    out = positional_norm(c)
    torch.testing.assert_close(out.mean(1), torch.zeros(3, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(1, correction=0), torch.ones(3, 4, 5), atol=1e-3, rtol=0)


def test_frozen_dictionary_trains_the_retriever_only():
    atoms = torch.randn(16, 8)
    rd = RetrieverDictionary(8, num_atoms=16, dictionary=atoms, trainable_dictionary=False)
    rd.requires_grad_(True)  # a frozen dictionary must survive a blanket unfreeze
    assert not rd.trainable_dictionary
    assert "dictionary.raw_atoms" not in dict(rd.named_parameters())
    assert "dictionary.raw_atoms" in rd.state_dict()
    opt = torch.optim.SGD(rd.parameters(), lr=0.5)
    before_g = rd.retriever.generator.conv.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        rd(torch.randn(2, 8, 6, 6)).pow(2).mean().backward()
        opt.step()
    torch.testing.assert_close(rd.atoms, F.normalize(atoms, dim=1))
    assert not torch.allclose(rd.retriever.generator.conv.weight, before_g)


def test_trainable_dictionary_learns():
    rd = RetrieverDictionary(8, num_atoms=16)
    before = rd.atoms.clone()
    opt = torch.optim.SGD(rd.parameters(), lr=0.5)
    opt.zero_grad()
    rd(torch.randn(2, 8, 6, 6)).pow(2).mean().backward()
    opt.step()
    assert not torch.allclose(rd.atoms, before)
    torch.testing.assert_close(rd.atoms.norm(dim=1), torch.ones(16))


def test_frozen_and_trainable_checkpoints_are_interchangeable():
    a = RetrieverDictionary(8, num_atoms=16, trainable_dictionary=False)
    b = RetrieverDictionary(8, num_atoms=16)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_split_and_fused_shapes(variant):
    rd = RetrieverDictionary(8, num_atoms=16, variant=variant, fused_retriever=True)
    assert isinstance(rd.retriever, FusedRetriever) and rd.fused
    assert rd.retriever.conv.conv.weight.shape == (16, 8, 5, 5)
    assert rd(torch.randn(2, 8, 7, 7)).shape == (2, 8, 7, 7)


def test_split_to_fused_conversion_is_exact(randomise):
    rd = RetrieverDictionary(8, num_atoms=16, kernel_size=5)
    randomise(rd)
    rd.eval()
    x = torch.randn(2, 8, 9, 7)  # border positions included: the padding must agree too
    split_coefficients = rd.coefficients(x)
    before = rd(x)
    rd.fuse_retriever()
    assert rd.fused
    torch.testing.assert_close(rd.coefficients(x), split_coefficients, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rd(x), before, atol=1e-5, rtol=1e-4)
    # Equation 14 itself: W_eq[c, i] = W_G[c, i] * W_E[c].
    split = SplitRetriever(4, 6, 3)
    fused = fuse_retriever(split)
    w_g = split.generator.conv.weight[:, :, 0, 0]
    w_e = split.exchanger.conv.weight[:, 0]
    torch.testing.assert_close(fused.conv.conv.weight, w_g[:, :, None, None] * w_e[:, None])


def test_authors_variant_cannot_be_fused_exactly():
    rd = RetrieverDictionary(8, num_atoms=16, variant="authors")
    with pytest.raises(ValueError, match=r"SiLU|activation"):
        rd.fuse_retriever()


def test_authors_variant_structure_and_mixing():
    rd = RetrieverDictionary(8, num_atoms=16, residual=0.8, variant="authors")
    gen, exch = rd.retriever.generator, rd.retriever.exchanger
    assert isinstance(gen.bn, torch.nn.BatchNorm2d) and isinstance(gen.act, torch.nn.SiLU)
    assert isinstance(exch.bn, torch.nn.BatchNorm2d) and not hasattr(exch, "act")
    assert rd.norm.weight is None and rd.norm.bias is None
    assert isinstance(rd.dictionary.bn, torch.nn.BatchNorm2d)
    assert rd.mix_weights == pytest.approx((0.2, 0.8))
    assert rd.norm.form == "std"  # the outputs against the authors' module: test_authors_reference


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_eval_normalises_the_dictionary_once(variant, monkeypatch, randomise):
    rd = RetrieverDictionary(8, num_atoms=16, variant=variant)
    randomise(rd)
    x = torch.randn(2, 8, 6, 6)
    rd.eval()
    with torch.no_grad():
        expected = rd.mix_weights[0] * x + rd.mix_weights[1] * rd.dictionary_term(x)
    calls = {"n": 0}
    original = rd.dictionary.linear_map

    def counting():
        calls["n"] += 1
        return original()

    monkeypatch.setattr(rd.dictionary, "linear_map", counting)
    with torch.no_grad():
        out1, out2 = rd(x), rd(x)
    assert calls["n"] == 1
    torch.testing.assert_close(out1, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2, expected, atol=1e-5, rtol=1e-5)
    # A parameter change (e.g. loading a checkpoint) rebuilds it once.
    with torch.no_grad():
        for p in rd.dictionary.parameters():
            p.mul_(1.5)
        rd(x)
        rd(x)
    assert calls["n"] == 2
    # Training mode never uses the cache: gradients must reach the atoms.
    rd.train()
    rd(x).sum().backward()
    assert calls["n"] == 2
    assert all(p.grad is not None for p in rd.dictionary.parameters())


def test_eval_with_gradients_keeps_dictionary_gradients():
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    rd(torch.randn(1, 8, 4, 4)).sum().backward()
    assert rd.dictionary.raw_atoms.grad is not None


def test_eval_cache_survives_inference_mode_then_grad():
    rd = RetrieverDictionary(8, num_atoms=16, trainable_dictionary=False).eval()
    rd.norm.requires_grad_(False)
    x = torch.randn(1, 8, 4, 4)
    with torch.inference_mode():
        a = rd(x)
    xg = x.clone().requires_grad_(True)
    b = rd(xg)
    b.sum().backward()  # must not reuse the inference-mode tensor for autograd
    torch.testing.assert_close(a, b.detach())
    assert xg.grad is not None


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"input has 4 channels but in_channels=8"):
        RetrieverDictionary(8, num_atoms=16)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"4-D"):
        RetrieverDictionary(8, num_atoms=16)(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match=r"dimension 6 .*in_channels=8"):
        RetrieverDictionary(8, num_atoms=16, dictionary=torch.randn(16, 6))
    with pytest.raises(ValueError, match=r"has 10 atoms but num_atoms=16"):
        RetrieverDictionary(8, num_atoms=16, dictionary=torch.randn(10, 8))
    with pytest.raises(ValueError, match="NaN"):
        RetrieverDictionary(8, num_atoms=4, dictionary=torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="2-D"):
        RetrieverDictionary(8, num_atoms=4, dictionary=torch.randn(4, 8, 1))
    with pytest.raises(TypeError, match="dictionary"):
        RetrieverDictionary(8, num_atoms=4, dictionary=object())
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        RetrieverDictionary(8, kernel_size=4)
    with pytest.raises(ValueError, match=r"residual must be in \[0, 1\]"):
        RetrieverDictionary(8, residual=1.5)
    with pytest.raises(ValueError, match=r"unknown variant 'yolo'.*authors.*paper"):
        RetrieverDictionary(8, variant="yolo")
    with pytest.raises(ValueError, match="num_atoms must be an int"):
        RetrieverDictionary(8, num_atoms=0)


def test_eval_cache_follows_dtype_and_state_dict_changes():
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        rd(x)
        out64 = rd.double()(x.double())  # .double() must drop the float32 folded weights
        assert out64.dtype == torch.float64
        other = RetrieverDictionary(8, num_atoms=16).double().eval()
        rd.load_state_dict(other.state_dict())  # copies in place: the cache must notice
        torch.testing.assert_close(rd(x.double()), other(x.double()))
