"""k-means++ seeding and the random rows k-means starts from.

k-means++ (Arthur & Vassilvitskii 2007, greedy: ``2 + ln k`` candidates per step, as
scikit-learn does) picks ``k`` centres one after another. Each of its ``k`` steps is a dozen
small tensor ops, so on busy cores a second thread costs more than it gains: every parallel
region waits for a descheduled thread (measured at 4,096 x 512 rows, k = 512, load 4-7 on 2
cores: 31.7 s with 2 threads, 2.5 s with one). :func:`kmeans_plusplus` therefore runs on one
intra-op thread and restores the caller's setting afterwards.

Example:
    >>> import torch
    >>> seed_index, sample_index = sample_rows(1000, 200, 4, torch.Generator().manual_seed(0))
    >>> seed_index.numel(), sample_index.numel(), bool((seed_index.diff() > 0).all())
    (32, 200, True)
    >>> sample_rows(1000, 900, 4, torch.Generator().manual_seed(0))[1].numel()  # a third
    333
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ._validation import bad_value, check_matrix, check_positive_int

__all__ = ["SEED_ROWS_PER_CENTER", "kmeans_plusplus", "sample_rows"]

# k-means++ seeds on at most this many random rows per centre: the seeding copy is then
# O(k x d) whatever the data size, and Lloyd moves the centres from there. 8 rows per centre
# ended within 0.01% of 32 (the earlier default) after Lloyd, at a quarter of the seeding
# cost (benchmarks/results/dict_init.md).
SEED_ROWS_PER_CENTER = 8
# Lloyd runs first on a sample of at most a third of the rows (each iteration there costs a
# third of a full pass; at 50k x 128, 4 sample iterations saved about 2 full passes for the
# same inertia), when it holds at least 32 rows per centre.
SAMPLE_FRACTION = 3
SAMPLE_ROWS_PER_CENTER = 32


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean norm of every row."""
    return torch.linalg.vector_norm(x, dim=1).square_()


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``x`` ``[n, d]``.

    Each step draws ``n_local_trials`` candidates with probability proportional to the squared
    distance to the chosen centres and keeps the one that lowers the potential most. Runs on
    one intra-op thread (see the module docstring).

    Example:
        >>> import torch
        >>> x = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)])
        >>> c = kmeans_plusplus(x, 2, torch.Generator().manual_seed(0))
        >>> sorted(c[:, 0].tolist())
        [0.0, 10.0]
    """
    x = check_matrix("x", x)
    check_positive_int("k", k)
    if k > x.shape[0]:
        raise bad_value("k", k, f"at most the number of rows of x ({x.shape[0]})")
    if not isinstance(generator, torch.Generator):
        raise bad_value("generator", generator, "a torch.Generator")
    if n_local_trials is not None:
        check_positive_int("n_local_trials", n_local_trials)
    with _one_thread():
        return _kmeans_plusplus(x, k, generator, n_local_trials, progress)


def _kmeans_plusplus(x, k, generator, n_local_trials, progress) -> torch.Tensor:
    n = x.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    x_sq = sq_norms(x)
    centers = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=generator))
    centers[0] = x[first]
    # (x @ row) first: "2 * x @ row" would multiply (copy) all of x before the product.
    closest = (x_sq - 2 * (x @ x[first]) + x_sq[first]).clamp_min_(0.0)
    potential = closest.sum(dtype=torch.float64)
    for c in tqdm(range(1, k), desc="k-means++", disable=not progress, leave=False):
        if potential <= 0:  # fewer distinct rows than k: repeat rows, Lloyd relocates later
            centers[c:] = x[torch.randint(n, (k - c,), generator=generator)]
            break
        draws = torch.rand(trials, generator=generator, dtype=torch.float64) * potential
        candidates = torch.searchsorted(closest.cumsum(0, dtype=torch.float64), draws.to(x.device))
        candidates = candidates.clamp_(max=n - 1)
        # [n, trials] = x @ candidates^T: x is read once, row-major (the transposed product
        # [trials, n] = candidates @ x^T is 2-3x slower on CPU for this skinny shape).
        dist = torch.addmm(x_sq.unsqueeze(1), x, x[candidates].T, alpha=-2.0)
        dist.add_(x_sq[candidates].unsqueeze(0)).clamp_min_(0.0)
        torch.minimum(dist, closest.unsqueeze(1), out=dist)
        potentials = dist.sum(dim=0, dtype=torch.float64)
        best = int(potentials.argmin())
        closest, potential = dist[:, best].contiguous(), potentials[best]
        centers[c] = x[candidates[best]]
    return centers


def sample_rows(
    total: int, size: int | None, k: int, generator: torch.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Global row indices (sorted) for k-means++ and for the Lloyd sample.

    ``size=None`` seeds on all rows (scikit-learn's way) and skips the sample: ``(None, None)``.
    Otherwise k-means++ runs on ``min(total, size, SEED_ROWS_PER_CENTER * k)`` random rows, and
    Lloyd first runs on a random sample of ``min(size, total // SAMPLE_FRACTION)`` rows (which
    contains the seeding rows) when that is at least ``SAMPLE_ROWS_PER_CENTER * k`` rows; else
    the sample is ``None`` and Lloyd starts on all rows. Both depend only on ``total``,
    ``size``, ``k`` and the generator, so one process and several pick the same rows.
    """
    if size is None:
        return None, None
    seed_size = min(size, total, SEED_ROWS_PER_CENTER * k)
    sample_size = min(size, total // SAMPLE_FRACTION)
    if sample_size < SAMPLE_ROWS_PER_CENTER * k:
        sample_size = 0
    perm = torch.randperm(total, generator=generator)[: max(seed_size, sample_size)]
    sample = perm.sort().values if sample_size else None
    return perm[:seed_size].sort().values, sample
