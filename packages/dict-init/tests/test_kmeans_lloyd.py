"""The seeding / Lloyd / mini-batch modules against references written out here."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from dict_init import kmeans, kmeans_plusplus


def _reference_lloyd(x, centers, passes, overrelax):
    """Plain numpy Lloyd with over-relaxation, as dict_init.lloyd documents it.

    Pass t assigns the rows to ``c_t``; ``c_{t+1} = c_t + w (mean_t - c_t)`` with ``w = 1`` on
    the first step and after an overshoot (inertia above the previous pass: the previous plain
    step is taken instead). Returns the centres of the last pass and their inertia.
    """
    x = x.astype(np.float64)
    c = centers.astype(np.float64)
    step, allowed, previous, fallback, result = 1.0, overrelax, np.inf, None, None
    for _ in range(passes):
        dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        labels, value = dist.argmin(1), dist.min(1).sum()
        if value > previous and fallback is not None:
            c, fallback, step, allowed = fallback, None, 1.0, 1.0
            continue
        means = np.stack([x[labels == j].mean(0) for j in range(len(c))])
        result = (c, value)
        previous, fallback = value, means
        c, step = c + step * (means - c), allowed
    return result


@pytest.mark.parametrize("overrelax", [1.0, 1.8])
def test_lloyd_matches_the_written_out_iteration(overrelax):
    # Gaussian rows: no cluster structure, so Lloyd is still moving after 6 passes.
    x = torch.randn(600, 5, generator=torch.Generator().manual_seed(0))
    k, passes = 8, 6
    init = kmeans_plusplus(x, k, torch.Generator().manual_seed(3))
    ref_centers, ref_inertia = _reference_lloyd(x.numpy(), init.numpy(), passes, overrelax)
    # init_sample_size=None: k-means++ on all rows from the same generator, no sample.
    result = kmeans(
        x, k, seed=3, init_sample_size=None, max_iter=passes, tol=0, inertia_tol=0,
        overrelax=overrelax, progress=False,
    )  # fmt: skip
    assert result.n_iter == passes and not result.converged
    torch.testing.assert_close(
        result.centers, torch.from_numpy(ref_centers).float(), atol=1e-4, rtol=1e-4
    )
    assert result.inertia == pytest.approx(ref_inertia, rel=1e-5)


def test_plain_lloyd_matches_scikit_learn():
    x = torch.randn(800, 6, generator=torch.Generator().manual_seed(1))
    init = kmeans_plusplus(x, 10, torch.Generator().manual_seed(0))
    ours = kmeans(
        x, 10, seed=0, init_sample_size=None, max_iter=5, tol=0, inertia_tol=0, overrelax=1.0,
        progress=False,
    )  # fmt: skip
    # Ours returns the centres the 5th pass assigned to: after 4 updates.
    sk = KMeans(10, init=init.double().numpy(), n_init=1, max_iter=4, tol=0).fit(x.double().numpy())
    torch.testing.assert_close(
        ours.centers.double(), torch.from_numpy(sk.cluster_centers_), atol=1e-4, rtol=1e-4
    )


def test_overshoot_falls_back_to_the_plain_step():
    # Two tight pairs of points with a large over-relaxation: the extrapolated step overshoots.
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [30.0], [31.0]])
    init = torch.tensor([[0.0], [10.0], [30.0]])
    ref_centers, ref_inertia = _reference_lloyd(x.numpy(), init.numpy(), 4, 1.99)
    from dict_init._layout import Layout
    from dict_init.lloyd import lloyd
    from dict_init.sources import TensorSource

    source = TensorSource(x)
    run = lloyd(
        source, init.clone(), Layout(source, None), max_iter=4, tol=0, inertia_tol=0, overrelax=1.99
    )
    torch.testing.assert_close(run.centers, torch.from_numpy(ref_centers).float())
    assert run.inertia == pytest.approx(ref_inertia)
    assert run.inertia == pytest.approx(3 * 0.5)  # each pair around its mean


@pytest.mark.parametrize("bad", [0.5, 2.0, "fast"])
def test_bad_overrelax(bad):
    with pytest.raises(ValueError, match=r"overrelax=.*\[1, 2\)"):
        kmeans(torch.randn(20, 3), 2, overrelax=bad, progress=False)


def test_kmeans_plusplus_restores_the_thread_count():
    before = torch.get_num_threads()
    kmeans_plusplus(torch.randn(50, 3), 4, torch.Generator().manual_seed(0))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "name", ["dict_init.seeding", "dict_init.lloyd", "dict_init.minibatch", "dict_init.swaps"]
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests or name.endswith("minibatch")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
