"""Coefficient maps, atom usage and the saved plot."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from rd_core import RetrieverDictionary, atom_usage, attach, coefficient_maps, plot_coefficients


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_coefficient_maps_are_consistent():
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    x = torch.randn(2, 8, 5, 6)
    maps = coefficient_maps(rd, x)
    with torch.no_grad():
        torch.testing.assert_close(maps.coefficients, rd.coefficients(x))
    assert maps.top_atom.shape == (2, 5, 6)
    torch.testing.assert_close(
        maps.top_coefficient, maps.coefficients.gather(1, maps.top_atom[:, None])[:, 0]
    )
    assert maps.input_correlation.abs().max() <= 1.0 + 1e-5


def test_correlation_is_one_when_the_retriever_matches_the_atoms():
    # G = the atoms themselves, E = identity, no PONO affine: c = <x, alpha_n>; with unit-norm
    # inputs c is exactly the cosine similarity, so the correlation is 1 everywhere.
    rd = RetrieverDictionary(8, num_atoms=16, kernel_size=1).eval()
    with torch.no_grad():
        rd.retriever.generator.conv.weight.copy_(rd.atoms[:, :, None, None])
        rd.retriever.exchanger.conv.weight.fill_(1.0)
    x = F.normalize(torch.randn(1, 8, 4, 4), dim=1)
    maps = coefficient_maps(rd, x)
    torch.testing.assert_close(maps.input_correlation, torch.ones(1, 4, 4), atol=1e-4, rtol=0)


def test_atom_usage_counts_every_position():
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    data = [torch.randn(2, 8, 3, 3), (torch.randn(1, 8, 3, 3), "label")]
    usage = atom_usage(rd, data)
    assert usage.num_positions == 27
    torch.testing.assert_close(usage.top1_fraction.sum(), torch.tensor(1.0))
    with torch.no_grad():
        c = torch.cat([rd.coefficients(data[0]), rd.coefficients(data[1][0])])
    expected = c.abs().permute(1, 0, 2, 3).reshape(16, -1).mean(1)
    torch.testing.assert_close(usage.mean_abs, expected)
    assert usage.most_used(3).tolist() == torch.argsort(expected, descending=True)[:3].tolist()
    with pytest.raises(ValueError, match="unknown score"):
        usage.most_used(3, score="popularity")


def test_usage_through_a_timm_model():
    model = timm.create_model("test_resnet").eval()
    rd = attach(model, at="layer3", num_atoms=16, input_size=(3, 32, 32))
    images = torch.randn(2, 3, 32, 32)
    usage = atom_usage(rd, [images], model=model)
    assert usage.num_positions == 2 * 2 * 2
    maps = coefficient_maps(rd, images, model=model)
    with torch.no_grad():
        stem = model.maxpool(model.act1(model.bn1(model.conv1(images))))
        features = model.layer3.module(model.layer2(model.layer1(stem)))
        torch.testing.assert_close(maps.coefficients, rd.coefficients(features))


def test_plot_is_written_atomically(tmp_path):
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    out = plot_coefficients(rd, torch.randn(2, 8, 6, 6), tmp_path / "plots" / "rd.png", sample=1)
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["rd.png"]  # no temporary left
    with pytest.raises(ValueError, match="sample"):
        plot_coefficients(rd, torch.randn(1, 8, 6, 6), tmp_path / "x.png", sample=3)
