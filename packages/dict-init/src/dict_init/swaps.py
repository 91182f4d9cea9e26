"""Local search after Lloyd: move one centre at a time to where it lowers the inertia most.

Lloyd only moves centres downhill: a centre seeded in a blob that already has one stays there
while a blob without a centre shares one with its neighbour. On clustered data (Gaussian blobs
of unequal size) that left the default at 1.10x scikit-learn's inertia on average (1.25x on
one seed); more seeding rows or more k-means++ trials narrowed the gap but never closed it
for every seed (``benchmarks/results/dict_init.md``). A swap step fixes exactly these cases,
as the swap heuristics of Kanungo et al. (2002) do:

1. One pass over the rows finds each row's nearest and second-nearest centre (``d1``, ``d2``,
   chunk by chunk). Removing centre ``j`` raises the inertia by exactly
   ``R[j] = sum over its rows of (d2 - d1)``: they move to their second-nearest centre.
2. ``candidates`` rows are drawn with probability proportional to ``d1`` (k-means++'s rule,
   by global row index, so every rank draws the same rows), and a second pass, ``chunk x
   candidates`` distances per chunk, gives the exact inertia after moving any centre ``j``
   to any candidate ``t``: ``inertia + R[j] - G[t] - C[j, t]``, where ``G[t]`` is what
   candidate ``t`` gains from all rows and ``C[j, t]`` corrects it for the rows of ``j``.
3. If the best move lowers the inertia by at least ``min_gain`` of it, the centre moves and
   Lloyd runs again to convergence; else the search stops.

Memory: ``d1``, ``d2`` (float32) and the nearest centre (int64) of every local row, 16 bytes a
row, besides the chunk blocks; never ``n x k``.
"""

from __future__ import annotations

from typing import Any

import torch

from ._layout import Layout
from .lloyd import LloydRun, cluster_sums, lloyd
from .seeding import sq_norms
from .sources import VectorSource

__all__ = ["SWAP_CANDIDATES", "swap_centres"]

# Rows drawn per swap round: 64 found the missed blobs of the clustered benchmark (32 left
# one seed at 1.03x scikit-learn's inertia); each costs one column in the second pass.
SWAP_CANDIDATES = 64


def _two_nearest(source: VectorSource, centers: torch.Tensor, chunk_size: int, device):
    """Per local row: distance to the nearest and second-nearest centre, and the nearest."""
    center_sq = sq_norms(centers)
    d1, d2, labels = [], [], []
    for chunk in source.iter_chunks(chunk_size):
        chunk = chunk.to(device, torch.float32)
        partial = torch.addmm(center_sq.unsqueeze(0), chunk, centers.T, alpha=-2.0)
        best, index = partial.topk(2, dim=1, largest=False)
        best.add_(sq_norms(chunk).unsqueeze(1)).clamp_min_(0.0)
        d1.append(best[:, 0])
        d2.append(best[:, 1])
        labels.append(index[:, 0])
    return torch.cat(d1), torch.cat(d2), torch.cat(labels)


def _draw_rows(d1: torch.Tensor, count: int, layout: Layout, generator: torch.Generator):
    """``count`` global row indices drawn with probability proportional to ``d1`` (with
    replacement); the same on every rank."""
    totals = torch.zeros(layout.world, dtype=torch.float64)
    totals[layout.rank] = d1.sum(dtype=torch.float64)
    layout.reduce(totals)
    prefix = torch.cumsum(totals, 0)
    draws = torch.rand(count, generator=generator, dtype=torch.float64) * prefix[-1]
    owner = torch.searchsorted(prefix, draws, right=True).clamp_(max=layout.world - 1)
    mine = owner == layout.rank
    index = torch.zeros(count, dtype=torch.int64)
    if bool(mine.any()):
        local = draws[mine] - (prefix[layout.rank] - totals[layout.rank])
        cumulative = torch.cumsum(d1.double().cpu(), 0)
        position = torch.searchsorted(cumulative, local).clamp_(max=d1.numel() - 1)
        index[mine] = position + layout.offset
    return layout.reduce(index)


def swap_centres(
    source: VectorSource,
    run: LloydRun,
    layout: Layout,
    *,
    rounds: int,
    candidates: int,
    min_gain: float,
    generator: torch.Generator,
    chunk_size: int,
    device: torch.device,
    lloyd_kwargs: dict[str, Any],
) -> tuple[LloydRun, int, int]:
    """Up to ``rounds`` swaps after Lloyd (see the module docstring).

    Returns the last Lloyd run (its centres, exact inertia and counts), the number of swaps
    made and the Lloyd passes they took.

    Example (Lloyd keeps two centres in one blob and one between the two others):
        >>> import torch
        >>> from dict_init._layout import Layout
        >>> from dict_init.sources import as_source
        >>> g = torch.Generator().manual_seed(0)
        >>> means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
        >>> x = torch.cat([m + 0.5 * torch.randn(100, 2, generator=g) for m in means])
        >>> source, cpu = as_source(x), torch.device("cpu")
        >>> layout = Layout(source, None)
        >>> settings = dict(max_iter=50, tol=1e-4, inertia_tol=1e-3, chunk_size=4096, device=cpu)
        >>> start = torch.cat([x[[0, 1]], torch.tensor([[5.0, 5.0]])])
        >>> stuck = lloyd(source, start, layout, **settings)
        >>> run, swaps, _ = swap_centres(source, stuck, layout, rounds=4, candidates=16,
        ...     min_gain=1e-3, generator=g, chunk_size=4096, device=cpu, lloyd_kwargs=settings)
        >>> swaps, round(stuck.inertia), round(run.inertia)
        (1, 10191, 163)
    """
    swaps = passes = 0
    k = run.centers.shape[0]
    for _ in range(rounds):
        if k < 2:
            break
        centers = run.centers.to(device)
        d1, d2, labels = _two_nearest(source, centers, chunk_size, device)
        removal = torch.bincount(labels, weights=(d2 - d1).double(), minlength=k)
        inertia = d1.sum(dtype=torch.float64)
        layout.reduce(removal)
        layout.reduce(inertia)
        rows = layout.gather_global(_draw_rows(d1, candidates, layout, generator), device)
        row_sq = sq_norms(rows)
        gain = torch.zeros(candidates, dtype=torch.float64, device=device)
        correction = torch.zeros(k, candidates, dtype=torch.float64, device=device)
        ones = torch.ones(chunk_size, device=device)
        start = 0
        for chunk in source.iter_chunks(chunk_size):
            chunk = chunk.to(device, torch.float32)
            stop = start + chunk.shape[0]
            dist = torch.addmm(row_sq.unsqueeze(0), chunk, rows.T, alpha=-2.0)
            dist.add_(sq_norms(chunk).unsqueeze(1)).clamp_min_(0.0)
            base = (d1[start:stop].unsqueeze(1) - dist).clamp_min_(0.0)
            gain += base.sum(0, dtype=torch.float64)
            # rows of the moved centre compare with their second-nearest instead (sums per
            # centre through a sparse one-hot product: index_add_ is ~20x slower on CPU)
            moved = (d2[start:stop].unsqueeze(1) - dist).clamp_min_(0.0).sub_(base)
            correction += cluster_sums(moved, labels[start:stop], k, ones)
            start = stop
        layout.reduce(gain)
        layout.reduce(correction)
        lowered = gain.unsqueeze(0) + correction - removal.unsqueeze(1)
        best = int(lowered.argmax())
        j, t = divmod(best, candidates)
        if not float(lowered[j, t]) >= min_gain * float(inertia) or float(lowered[j, t]) <= 0:
            break
        centers = centers.clone()
        centers[j] = rows[t]
        run = lloyd(source, centers, layout, **lloyd_kwargs)
        swaps += 1
        passes += run.n_iter
    return run, swaps, passes
