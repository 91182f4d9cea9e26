from __future__ import annotations

import pytest
import torch

from dict_init.normalize import StandardNormalizer, TanhNormalizer, create_normalizer
from dict_init.projection import project_atoms
from dict_init.sources import TensorSource


def test_pca_keeps_the_top_directions():
    g = torch.Generator().manual_seed(0)
    # Variance mostly along the first two axes.
    atoms = torch.randn(64, 6, generator=g) * torch.tensor([10.0, 5.0, 0.1, 0.1, 0.1, 0.1])
    mapped, maps = project_atoms(atoms, 2, "pca")
    assert mapped.shape == (64, 2)
    kept = mapped.var(0).sum() / (atoms - atoms.mean(0)).var(0).sum()
    assert kept > 0.99
    m = maps["projection.matrix"]
    torch.testing.assert_close(m.T @ m, torch.eye(2), atol=1e-5, rtol=0)


def test_pca_fitted_on_features_allows_more_dims_than_atoms():
    features = torch.randn(500, 12) * torch.linspace(5, 0.1, 12)
    atoms = features[:4]
    mapped, maps = project_atoms(atoms, 8, "pca", features=features)
    assert mapped.shape == (4, 8)
    # The first direction is the largest-variance axis of the features (axis 0).
    assert maps["projection.matrix"][:, 0].abs().argmax() == 0


def test_orthogonal_up_projection_keeps_distances():
    atoms = torch.randn(10, 4)
    mapped, _ = project_atoms(atoms, 16, "orthogonal", seed=1)
    torch.testing.assert_close(torch.cdist(mapped, mapped), torch.cdist(atoms, atoms),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    again, _ = project_atoms(atoms, 16, "orthogonal", seed=1)
    assert torch.equal(mapped, again)


def test_pca_cannot_go_up():
    with pytest.raises(ValueError, match=r"feature_dim=16.*encoder dimension 4.*orthogonal"):
        project_atoms(torch.randn(10, 4), 16, "pca")
    with pytest.raises(ValueError, match="projection='svd'"):
        project_atoms(torch.randn(10, 4), 2, "svd")


def test_standard_and_tanh_normalisers():
    x = torch.randn(500, 3) * torch.tensor([100.0, 1.0, 0.01]) + 7.0
    z = StandardNormalizer().fit(TensorSource(x))(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert torch.equal(TanhNormalizer()(x), torch.tanh(x))
    with pytest.raises(ValueError, match="normalization='l2'"):
        create_normalizer("l2")
