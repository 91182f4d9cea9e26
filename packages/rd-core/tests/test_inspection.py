"""Coefficient maps, atom usage and the saved plot."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from rd_core import RetrieverDictionary, atom_usage, attach, coefficient_maps, plot_coefficients


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference_maps(rd: RetrieverDictionary, x: torch.Tensor) -> dict[str, np.ndarray]:
    """YOLO-RD equations 1-4 and the inspection statistics, written out in float64 numpy."""
    w_g = rd.retriever.generator.conv.weight[:, :, 0, 0].detach().double().numpy()  # [N, f]
    w_e = rd.retriever.exchanger.conv.weight[:, 0].detach().double().numpy()  # [N, k, k]
    gamma = rd.norm.weight.detach().double().numpy()[None, :, None, None]
    beta = rd.norm.bias.detach().double().numpy()[None, :, None, None]
    atoms = rd.atoms.double().numpy()  # [N, f], unit length (equation 6)
    x = x.double().numpy()
    _, _, h, w = x.shape
    k = w_e.shape[-1]
    r = k // 2
    y = np.einsum("nf,bfhw->bnhw", w_g, x)  # eq. 1: G, a 1x1 map f -> N at every position
    padded = np.pad(y, ((0, 0), (0, 0), (r, r), (r, r)))  # "same" size, zeros outside
    c = np.zeros_like(y)
    for i in range(k):  # eq. 2: E, one k x k filter per coefficient channel
        for j in range(k):
            c += w_e[None, :, i, j, None, None] * padded[:, :, i : i + h, j : j + w]
    mean = c.mean(1, keepdims=True)  # eq. 4: PONO over the N channels at each position
    var = ((c - mean) ** 2).mean(1, keepdims=True)
    c = (c - mean) / np.sqrt(var + rd.eps) * gamma + beta
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = np.einsum("bfhw,nf->bnhw", unit_x, atoms / np.linalg.norm(atoms, axis=1)[:, None])
    correlation = np.empty((x.shape[0], h, w))
    for index in np.ndindex(*correlation.shape):
        b, p, q = index
        correlation[index] = np.corrcoef(c[b, :, p, q], similarity[b, :, p, q])[0, 1]
    return {
        "coefficients": c,
        "top_atom": c.argmax(1),
        "top_coefficient": c.max(1),
        "input_similarity": similarity,
        "input_correlation": correlation,
    }


def test_coefficient_maps_match_the_papers_formula():
    rd = RetrieverDictionary(8, num_atoms=16, kernel_size=3).eval()
    with torch.no_grad():  # PONO's gamma / beta away from 1 / 0, so they are checked too
        rd.norm.weight.uniform_(0.5, 1.5)
        rd.norm.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 8, 5, 6)
    maps = coefficient_maps(rd, x)
    ref = _reference_maps(rd, x)
    for name, expected in ref.items():
        got = getattr(maps, name)
        if name == "top_atom":
            assert got.tolist() == expected.tolist()
        else:
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4, err_msg=name)


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
    rd = attach(model, at="layer3", num_atoms=16, image_size=32)
    images = torch.randn(2, 3, 32, 32)
    usage = atom_usage(rd, [images], model=model)
    assert usage.num_positions == 2 * 2 * 2
    maps = coefficient_maps(rd, images, model=model)
    with torch.no_grad():
        stem = model.maxpool(model.act1(model.bn1(model.conv1(images))))
        features = model.layer3.module(model.layer2(model.layer1(stem)))
    ref = _reference_maps(rd, features)["coefficients"]
    np.testing.assert_allclose(maps.coefficients.numpy(), ref, rtol=0, atol=1e-4)
    # atom usage over the same positions, from the written-out coefficients
    np.testing.assert_allclose(usage.mean_abs.numpy(), np.abs(ref).mean((0, 2, 3)), atol=1e-5)
    top1 = np.bincount(ref.argmax(1).ravel(), minlength=16) / ref[:, 0].size
    np.testing.assert_allclose(usage.top1_fraction.numpy(), top1, atol=1e-6)


def test_plot_follows_the_umask_and_clears_stale_temporaries(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".rd.png.{dead.pid}-0bad.tmp"  # left by a killed writer
    stale.write_bytes(b"half a png")
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    old = os.umask(0o022)
    try:
        out = plot_coefficients(rd, torch.randn(1, 8, 6, 6), tmp_path / "rd.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rd.png"]


def test_plot_is_written_atomically(tmp_path):
    rd = RetrieverDictionary(8, num_atoms=16).eval()
    out = plot_coefficients(rd, torch.randn(2, 8, 6, 6), tmp_path / "plots" / "rd.png", sample=1)
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["rd.png"]  # no temporary left
    with pytest.raises(ValueError, match="sample"):
        plot_coefficients(rd, torch.randn(1, 8, 6, 6), tmp_path / "x.png", sample=3)
