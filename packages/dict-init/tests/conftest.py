from __future__ import annotations

import pytest
import torch


def blobs(n: int, d: int, centers: int, seed: int = 0, spread: float = 4.0) -> torch.Tensor:
    """Gaussian blobs with varied widths (like scikit-learn's make_blobs, in torch)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, d, generator=g) * spread
    labels = torch.randint(centers, (n,), generator=g)
    widths = torch.rand(centers, 1, generator=g) + 0.5
    return means[labels] + torch.randn(n, d, generator=g) * widths[labels]


@pytest.fixture
def make_blobs():
    return blobs


@pytest.fixture(scope="session")
def sentence_encoder():
    """The bundled all-MiniLM-L6-v2, loaded once (importing sentence-transformers is slow)."""
    from dict_init.encoders import SentenceEncoder

    return SentenceEncoder()
