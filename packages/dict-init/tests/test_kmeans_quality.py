"""k-means quality on clustered data against scikit-learn's KMeans (k-means++ on all rows,
``n_init=1``): Gaussian blobs of unequal size, where a centre seeded in the wrong blob stays
there (on random normal data every local optimum is alike and any seeding looks fine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from dict_init import kmeans


def unequal_blobs(n: int, d: int, blobs: int, seed: int) -> np.ndarray:
    """``blobs`` Gaussian blobs with Dirichlet(1) sizes (some hold a few dozen rows, others
    thousands), centres uniform in [-10, 10]^d, widths uniform in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(blobs)))
    centres = rng.uniform(-10, 10, (blobs, d))
    widths = rng.uniform(0.5, 2.0, blobs)
    parts = [c + w * rng.standard_normal((m, d)) for c, w, m in zip(centres, widths, sizes)]
    return np.concatenate(parts).astype(np.float32)


def test_unequal_blobs_at_most_scikit_learns_inertia():
    ratios = []
    for seed in range(5):
        x = unequal_blobs(20_000, 32, 64, seed)
        reference = KMeans(64, n_init=1, random_state=seed).fit(x).inertia_
        ours = kmeans(torch.from_numpy(x), 64, seed=seed, progress=False)
        ratios.append(ours.inertia / reference)
    assert np.mean(ratios) <= 1.0, ratios
    assert max(ratios) <= 1.01, ratios


def test_a_swap_lowers_the_inertia_by_what_it_predicted():
    """The swap search's bookkeeping (removal cost, candidate gain and its correction for the
    moved centre's rows) against the inertia recomputed from scratch (``dict_init.inertia``)."""
    from dict_init import inertia
    from dict_init._layout import Layout
    from dict_init.lloyd import LloydRun
    from dict_init.sources import as_source
    from dict_init.swaps import swap_centres

    # Two blobs share a centre while a third blob has two: one swap fixes it.
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([m + 0.5 * torch.randn(300, 2, generator=g) for m in means])
    centers = torch.tensor([[5.0, 0.0], [0.0, 9.5], [0.0, 10.5]])
    source = as_source(x)
    layout = Layout(source, None)
    before = inertia(x, centers)
    run = LloydRun(centers, centers, before, torch.zeros(3), 0, True)
    settings = {"max_iter": 1, "tol": 0.0, "inertia_tol": 0.0, "overrelax": 1.0,
                "chunk_size": 128, "device": torch.device("cpu")}  # fmt: skip
    after, swaps, _ = swap_centres(
        source, run, layout, rounds=1, candidates=64, min_gain=0.0,
        generator=torch.Generator().manual_seed(0), chunk_size=128,
        device=torch.device("cpu"), lloyd_kwargs=settings,
    )  # fmt: skip
    assert swaps == 1
    moved = (after.centers != centers).any(dim=1)
    assert int(moved.sum()) == 1 and bool(moved[1:].any())  # one of the pair moved
    # max_iter=1: the returned run is the swapped centres' own pass, exact
    assert after.inertia == pytest.approx(inertia(x, after.centers), rel=1e-5)
    assert after.inertia < 0.6 * before
