"""K-means in torch: k-means++ seeding, chunked Lloyd iterations, mini-batch mode, faiss option.

Design (why it is fast and bounded in memory):

* Distances are computed chunk by chunk as ``|c|^2 - 2 x c^T`` with one ``addmm``; only a
  ``[chunk_size, k]`` block exists at a time, never ``[n, k]``.
* Cluster sums come from a sparse one-hot matrix product per chunk (``index_add_`` is ~20x
  slower on CPU), accumulate in float64 and, under ``torch.distributed``, are all-reduced, so
  every rank holds the same centres (the data stays split across ranks).
* A random sample of ``init_sample_size`` rows is drawn by global row index (one process and
  several processes pick the same rows). Greedy k-means++ (``2 + ln k`` candidates per step,
  as scikit-learn does) seeds on ``SEED_ROWS_PER_CENTER * k`` of them (32 k): each step is one
  row-major ``x @ candidates^T`` product over those rows. scikit-learn seeds on all rows: at
  200k x 512 rows and 512 centres its seeding takes over half of its run. Lloyd then runs on
  the sample (cheap) and then on all rows until the centre shift falls below ``tol`` times the
  mean per-dimension variance (scikit-learn's criterion) or an iteration gains less than
  ``inertia_tol`` of the inertia (the centre-shift rule alone spends many iterations on gains
  far below 0.01%: scikit-learn runs ~230 iterations on the benchmark data, we ~30 on all rows,
  within 0.3% of its inertia).
* Memory beyond the input (one process, in-memory input): ``chunk_size x (k + d)`` floats of
  blocks, ``k x d`` centres and float64 sums, and the ``32 k x d`` seeding rows. The sample is
  never copied whole: Lloyd reads it from the input by index, one chunk at a time. Seeding on
  all rows (``init_sample_size=None`` or ``n <= init_sample_size``) holds ``n x (2 + ln k)``
  candidate distances; from shards or under torch.distributed the sample is gathered once
  (``init_sample_size x d``). ``tests/test_kmeans.py`` checks that no torch op creates more.
* Hamerly-style distance bounds were tried and dropped: in 128-512 dimensions the lower
  bounds are too loose to skip enough rows (60-90% of rows still needed distances).
* Empty clusters take the rows farthest from their centres (scikit-learn's remedy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ._distributed import all_gather_int, all_reduce_, rank_and_world
from ._validation import bad_value, check_choice, check_finite, check_positive_int
from .sources import TensorSource, VectorSource, as_source

__all__ = ["KMEANS_BACKENDS", "KMeansResult", "assign", "inertia", "kmeans", "kmeans_plusplus"]


@dataclass
class KMeansResult:
    """What :func:`kmeans` returns.

    Attributes:
        centers: ``[k, d]`` cluster centres (float32).
        inertia: sum of squared distances of every row to its nearest centre, for ``centers``.
        counts: ``[k]`` rows per centre, for ``centers``.
        n_iter: Lloyd iterations (or mini-batch epochs) on the full data.
        converged: whether the tolerance was reached before ``max_iter``.
        info: backend, algorithm and settings, for metadata; the torch backend adds
            ``seconds`` per phase (``seeding``, ``sample_lloyd``, ``lloyd`` or ``minibatch``,
            ``final_pass``), ``seed_sample_size`` and ``sample_iter``.
    """

    centers: torch.Tensor
    inertia: float
    counts: torch.Tensor
    n_iter: int
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=1).square_()


def _nearest(
    chunk: torch.Tensor, centers: torch.Tensor, center_sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, the nearest centre for each row of ``chunk``."""
    # |x|^2 is constant per row, so the argmin needs only |c|^2 - 2 x.c (one addmm).
    partial = torch.addmm(center_sq.unsqueeze(0), chunk, centers.T, alpha=-2.0)
    best, labels = partial.min(dim=1)
    return (best + _sq_norms(chunk)).clamp_min_(0.0), labels


def assign(
    x: Any, centers: torch.Tensor, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre (labels) and squared distance of every row of ``x``.

    Example:
        >>> import torch
        >>> labels, dist = assign(torch.tensor([[0.0], [9.0]]), torch.tensor([[1.0], [10.0]]))
        >>> labels.tolist(), dist.tolist()
        ([0, 1], [1.0, 1.0])
    """
    source = as_source(x)
    centers = centers.float()
    center_sq = _sq_norms(centers)
    labels, dists = [], []
    for chunk in source.iter_chunks(chunk_size):
        d, lab = _nearest(chunk.float(), centers, center_sq)
        labels.append(lab)
        dists.append(d)
    return torch.cat(labels), torch.cat(dists)


def inertia(x: Any, centers: torch.Tensor, chunk_size: int = 4096) -> float:
    """Sum of squared distances of the rows of ``x`` to their nearest centre (float64 sum)."""
    _, dists = assign(x, centers, chunk_size)
    return float(dists.double().sum())


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``x`` ``[n, d]``.

    Each step draws ``n_local_trials`` candidates with probability proportional to the squared
    distance to the chosen centres and keeps the one that lowers the potential most.

    Example:
        >>> import torch
        >>> x = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)])
        >>> c = kmeans_plusplus(x, 2, torch.Generator().manual_seed(0))
        >>> sorted(c[:, 0].tolist())
        [0.0, 10.0]
    """
    n = x.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    x_sq = _sq_norms(x)
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


class _Topk:
    """Running top-``r`` rows by distance (value, global index), for empty-cluster relocation."""

    def __init__(self, r: int):
        self.r = r
        self.values = torch.empty(0, dtype=torch.float32)
        self.index = torch.empty(0, dtype=torch.int64)

    def update(self, dists: torch.Tensor, first_index: int) -> None:
        r = min(self.r, dists.numel())
        values, index = dists.float().cpu().topk(r)
        values = torch.cat([self.values, values])
        index = torch.cat([self.index, index + first_index])
        keep = values.topk(min(self.r, values.numel())).indices
        self.values, self.index = values[keep], index[keep]


class _Distributed:
    """The global layout of the rows split over ranks (one rank: the identity).

    ``local=True`` treats the rows as this process' alone even under torch.distributed (the
    seeding sample, which every rank holds whole).
    """

    def __init__(self, source: VectorSource, group: Any, local: bool = False):
        self.group = group
        self.rank, self.world = (0, 1) if local else rank_and_world(group)
        counts = [source.num_vectors] if local else all_gather_int(source.num_vectors, group)
        self.offset = sum(counts[: self.rank])
        self.total = sum(counts)
        self.source = source

    def reduce(self, tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
        """Sum (or ``op``) over the ranks; nothing for one rank."""
        return all_reduce_(tensor, self.group, op) if self.world > 1 else tensor

    def gather_global(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows at global ``indices`` on every rank (each row comes from its owner, exactly)."""
        if self.world == 1:  # one copy of the rows, no zero-filled buffer beside it
            return self.source.gather(indices).to(device, torch.float32)
        local = (indices >= self.offset) & (indices < self.offset + self.source.num_vectors)
        out = torch.zeros(indices.numel(), self.source.dim, dtype=torch.float32)
        if bool(local.any()):
            out[local] = self.source.gather(indices[local] - self.offset).float().cpu()
        return self.reduce(out).to(device)


def _cluster_sums(chunk: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``[k, d]`` sums of the rows of ``chunk`` per label.

    A sparse one-hot ``[k, b]`` times the chunk: O(b d) like ``index_add_``, but ~20x faster on
    CPU (index_add_ serialises on repeated labels). The float32 chunk sums are then added into
    float64 accumulators by the caller.
    """
    b = chunk.shape[0]
    rows = torch.stack([labels, torch.arange(b, device=chunk.device)])
    ones = torch.ones(b, dtype=chunk.dtype, device=chunk.device)
    onehot = torch.sparse_coo_tensor(rows, ones, (k, b), check_invariants=False)
    return torch.sparse.mm(onehot, chunk)


def _lloyd_pass(
    source: VectorSource,
    centers: torch.Tensor,
    chunk_size: int,
    device: torch.device,
    offset: int,
    topk: _Topk | None,
    moments: list[torch.Tensor] | None,
    exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One assignment pass: float64 sums ``[k, d]``, counts ``[k]`` and inertia (scalar).

    ``exact`` sums per-row distances (clamped at 0) for the reported inertia; otherwise the
    inertia, only used to decide when to stop, is ``sum(|c|^2 - 2 x.c) + sum(|x|^2)``.
    """
    k, d = centers.shape
    sums = torch.zeros(k, d, dtype=torch.float64, device=device)
    counts = torch.zeros(k, dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    center_sq = _sq_norms(centers)
    seen = offset
    for chunk in source.iter_chunks(chunk_size):
        chunk = chunk.to(device, torch.float32)
        if topk is None and not exact:
            # Only the sum of distances is needed: |x|^2 summed over the chunk is one dot.
            partial = torch.addmm(center_sq.unsqueeze(0), chunk, centers.T, alpha=-2.0)
            best, labels = partial.min(dim=1)
            flat = chunk.reshape(-1)
            total += best.sum(dtype=torch.float64) + torch.dot(flat, flat).double()
        else:
            dists, labels = _nearest(chunk, centers, center_sq)
            total += dists.sum(dtype=torch.float64)
            if topk is not None:
                topk.update(dists, seen)
        sums += _cluster_sums(chunk, labels, k).double()
        counts += torch.bincount(labels, minlength=k).double()
        if moments is not None:
            moments[0] += chunk.sum(0, dtype=torch.float64)
            moments[1] += chunk.square().sum(0, dtype=torch.float64)
        seen += chunk.shape[0]
    return sums, counts, total


def _lloyd(
    source: VectorSource,
    centers: torch.Tensor,
    layout: _Distributed,
    *,
    max_iter: int,
    tol: float,
    inertia_tol: float,
    chunk_size: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> tuple[torch.Tensor, int, bool]:
    """Lloyd iterations until converged (see :func:`kmeans` for the two stopping rules)."""
    k, d = centers.shape
    converged = False
    mean_variance = None
    previous = float("inf")
    bar = tqdm(total=max_iter, desc=desc, disable=not progress or layout.rank != 0, leave=False)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is used after the loop)
        moments = None
        if mean_variance is None:  # the data's variance, read during the first pass
            moments = [torch.zeros(d, dtype=torch.float64, device=device) for _ in range(2)]
        sums, counts, total = _lloyd_pass(
            source, centers, chunk_size, device, layout.offset, None, moments
        )
        for t in (sums, counts, total):
            layout.reduce(t)
        if moments is not None:
            for t in moments:
                layout.reduce(t)
            mean = moments[0] / layout.total
            mean_variance = float((moments[1] / layout.total - mean**2).clamp_min(0).mean())
        new = (sums / counts.clamp_min(1).unsqueeze(1)).float()
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            # Rare: one more pass finds the rows farthest from their centres (all ranks agree
            # on the same rows), which become the empty clusters' new centres.
            topk = _Topk(min(k, 256))
            _lloyd_pass(source, centers, chunk_size, device, layout.offset, topk, None)
            new[empty] = centers[empty]
            new[empty[: topk.r]] = _farthest_rows(topk, empty.numel(), layout, device)
        shift = float((new - centers).pow(2).sum())
        centers = new
        current = float(total)
        gain = (previous - current) / max(current, 1e-30)
        previous = current
        bar.update(1)
        bar.set_postfix(inertia=f"{current:.5g}", shift=f"{shift:.3g}")
        if not empty.numel() and (shift <= tol * mean_variance or 0 <= gain < inertia_tol):
            converged = True
            break
    bar.close()
    return centers, n_iter, converged


def _farthest_rows(topk: _Topk, count: int, layout: _Distributed, device) -> torch.Tensor:
    """The ``count`` rows farthest from their centre over all ranks, as new centres."""
    r = topk.r
    values = torch.zeros(layout.world, r)
    index = torch.zeros(layout.world, r, dtype=torch.int64)
    valid = torch.zeros(layout.world, r, dtype=torch.int64)
    n = topk.values.numel()
    values[layout.rank, :n], index[layout.rank, :n], valid[layout.rank, :n] = (
        topk.values,
        topk.index,
        1,
    )
    for t in (values, index, valid):
        layout.reduce(t)
    keep = valid.flatten().bool()
    values, index = values.flatten()[keep], index.flatten()[keep]
    # Deterministic order: larger distance first, then lower global index.
    order = sorted(range(values.numel()), key=lambda i: (-float(values[i]), int(index[i])))
    chosen = [int(index[i]) for i in order][: min(count, r)]
    return layout.gather_global(torch.tensor(chosen, dtype=torch.int64), device)


def _minibatch(
    source: VectorSource,
    centers: torch.Tensor,
    layout: _Distributed,
    *,
    max_iter: int,
    tol: float,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[torch.Tensor, int, bool]:
    """Streaming mini-batch k-means (Sculley 2010): per-centre learning rate ``1 / count``.

    Each epoch streams the rows once in batches; one batch updates the centres with the batch
    means weighted by how many rows each centre has absorbed so far. Under torch.distributed
    the batch sums of all ranks are all-reduced, so ranks step together.
    """
    k, d = centers.shape
    seen = torch.zeros(k, dtype=torch.float64, device=device)
    local_batches = math.ceil(source.num_vectors / batch_size)
    steps = torch.tensor([local_batches])
    if layout.world > 1:
        layout.reduce(steps, torch.distributed.ReduceOp.MAX)
    converged = False
    epoch = 0
    bar = tqdm(total=max_iter, desc="k-means (mini-batch)", disable=not progress or layout.rank)
    for epoch in range(1, max_iter + 1):  # noqa: B007
        start = centers.clone()
        chunks = source.iter_chunks(batch_size)
        for _ in range(int(steps)):
            chunk = next(chunks, None)
            sums = torch.zeros(k, d, dtype=torch.float64, device=device)
            counts = torch.zeros(k, dtype=torch.float64, device=device)
            if chunk is not None:
                chunk = chunk.to(device, torch.float32)
                _, labels = _nearest(chunk, centers, _sq_norms(centers))
                sums += _cluster_sums(chunk, labels, k).double()
                counts += torch.bincount(labels, minlength=k).double()
            layout.reduce(sums)
            layout.reduce(counts)
            seen += counts
            hit = counts > 0
            blended = centers.double()[hit] * (seen[hit] - counts[hit]).unsqueeze(1) + sums[hit]
            centers[hit] = (blended / seen[hit].unsqueeze(1)).float()
        shift = float(((centers - start) ** 2).sum() / max(float((start**2).sum()), 1e-12))
        bar.update(1)
        if shift <= tol:
            converged = True
            break
    bar.close()
    return centers, epoch, converged


def _seeding_rows(total: int, size: int | None, generator: torch.Generator) -> torch.Tensor:
    """Global indices of the rows k-means++ seeds from: all, or a sorted random sample."""
    if size is None or size >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=generator)[:size].sort().values


# k-means++ seeds on at most this many rows per centre (a random part of the sample): the
# seeding copy is then O(k x d) whatever the data size, and Lloyd on the whole sample, then on
# all rows, moves the centres from there.
SEED_ROWS_PER_CENTER = 32


def _sample_rows(
    total: int, size: int | None, k: int, generator: torch.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Global row indices (sorted) for k-means++ and for the Lloyd sample (None: all rows).

    ``size=None`` or ``size >= total`` seeds on all rows (scikit-learn's way) and skips the
    sample. Otherwise a random sample of ``size`` rows is drawn; k-means++ runs on a random part
    of it of ``SEED_ROWS_PER_CENTER * k`` rows. Both depend only on ``total``, ``size``, ``k``
    and the generator, so one process and several pick the same rows.
    """
    if size is None or size >= total:
        return None, None
    seed_size = min(size, SEED_ROWS_PER_CENTER * k)
    perm = torch.randperm(total, generator=generator)[:size]
    return perm[:seed_size].sort().values, perm.sort().values


class _RowsOf:
    """Rows ``index`` of an in-memory source as a source, gathered one chunk at a time.

    Lloyd iterations on the sample then hold ``chunk_size x d`` floats, not a copy of the
    sample (``init_sample_size x d``).
    """

    def __init__(self, source: VectorSource, index: torch.Tensor):
        self.source, self.index = source, index

    @property
    def num_vectors(self) -> int:
        return self.index.numel()

    @property
    def dim(self) -> int:
        return self.source.dim

    def iter_chunks(self, chunk_size: int):
        for start in range(0, self.num_vectors, chunk_size):
            yield self.source.gather(self.index[start : start + chunk_size])

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        return self.source.gather(self.index[indices])


def _all_rows(source: VectorSource, layout: _Distributed, device: torch.device) -> torch.Tensor:
    """All rows as one float32 tensor: the input itself when it already is one, else a copy."""
    if layout.world == 1 and isinstance(source, TensorSource):
        return source.x.to(device, torch.float32)  # no copy for float32 on ``device``
    return layout.gather_global(torch.arange(layout.total), device)


def _kmeans_torch(
    source: VectorSource,
    k: int,
    *,
    seed: int,
    max_iter: int,
    tol: float,
    inertia_tol: float,
    algorithm: str,
    chunk_size: int,
    batch_size: int,
    init_sample_size: int | None,
    sample_iter: int,
    device: torch.device,
    group: Any,
    progress: bool,
) -> KMeansResult:
    seconds = {}
    start = time.perf_counter()
    layout = _Distributed(source, group)
    generator = torch.Generator().manual_seed(seed)
    # Samples chosen by global row index: identical for any number of ranks.
    seed_index, index = _sample_rows(layout.total, init_sample_size, k, generator)
    if seed_index is None:
        seeding = _all_rows(source, layout, device)
    else:
        seeding = layout.gather_global(seed_index, device)
    m_seed = seeding.shape[0]
    centers = kmeans_plusplus(seeding, k, generator, progress=progress and layout.rank == 0)
    del seeding
    seconds["seeding"] = time.perf_counter() - start
    m = layout.total if index is None else index.numel()
    sample_iter_done = 0
    if sample_iter and m < layout.total:
        start = time.perf_counter()
        if layout.world == 1 and isinstance(source, TensorSource):
            sample = _RowsOf(source, index)  # streamed from the tensor, chunk by chunk
        else:  # from disk or other ranks: one copy of the sample, gathered once
            sample = TensorSource(layout.gather_global(index, device), check=False)
        single = _Distributed(sample, group, local=True)
        centers, sample_iter_done, _ = _lloyd(
            single.source, centers, single, max_iter=sample_iter, tol=tol, inertia_tol=inertia_tol,
            chunk_size=chunk_size, device=device, progress=progress and layout.rank == 0,
            desc="k-means (sample)",
        )  # fmt: skip
        seconds["sample_lloyd"] = time.perf_counter() - start
        del sample, single
    start = time.perf_counter()
    if algorithm == "lloyd":
        centers, n_iter, converged = _lloyd(
            source, centers, layout, max_iter=max_iter, tol=tol, inertia_tol=inertia_tol,
            chunk_size=chunk_size,
            device=device, progress=progress, desc="k-means",
        )  # fmt: skip
    else:
        centers, n_iter, converged = _minibatch(
            source, centers, layout, max_iter=max_iter, tol=tol, batch_size=batch_size,
            device=device, progress=progress,
        )  # fmt: skip
    seconds[algorithm] = time.perf_counter() - start
    # Final assignment so inertia and counts describe the returned centres.
    start = time.perf_counter()
    _, counts, total = _lloyd_pass(source, centers, chunk_size, device, 0, None, None, True)
    layout.reduce(counts)
    layout.reduce(total)
    seconds["final_pass"] = time.perf_counter() - start
    return KMeansResult(
        centers=centers.cpu(),
        inertia=float(total),
        counts=counts.cpu().long(),
        n_iter=n_iter,
        converged=converged,
        info={"backend": "torch", "algorithm": algorithm, "init": "k-means++",
              "init_sample_size": m, "seed_sample_size": m_seed,
              "sample_iter": sample_iter_done,
              "world_size": layout.world, "seconds": seconds},
    )  # fmt: skip


def _kmeans_faiss(source: VectorSource, k: int, *, seed: int, max_iter: int, group: Any,
                  init_sample_size: int | None, **_: Any) -> KMeansResult:  # fmt: skip
    """faiss' Lloyd iterations on all rows (no sub-sampling), seeded by our k-means++."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "backend='faiss' needs faiss: pip install 'dict-init[faiss]' (faiss-cpu)"
        ) from error
    if rank_and_world(group)[1] > 1:
        raise bad_value("backend", "faiss", "'torch' under torch.distributed (faiss is local)")
    if isinstance(source, TensorSource) and source.x.dtype == torch.float32:
        x = source.x.cpu().contiguous()  # the input itself when it is float32 on the CPU
    else:
        x = torch.cat(list(source.iter_chunks(65536))).float().cpu().contiguous()
    generator = torch.Generator().manual_seed(seed)
    index = _seeding_rows(len(x), init_sample_size, generator)
    m = index.numel()
    init = kmeans_plusplus(x[index], k, generator)
    model = faiss.Kmeans(
        x.shape[1], k, niter=max_iter, seed=seed, verbose=False,
        max_points_per_centroid=math.ceil(len(x) / k) + 1,
    )  # fmt: skip
    model.train(x.numpy(), init_centroids=init.numpy())
    centers = torch.from_numpy(model.centroids.copy())
    labels, dists = assign(x, centers)
    return KMeansResult(
        centers=centers,
        inertia=float(dists.double().sum()),
        counts=torch.bincount(labels, minlength=k),
        n_iter=max_iter,
        converged=True,
        info={"backend": "faiss", "algorithm": "lloyd", "init": "k-means++",
              "init_sample_size": m},
    )  # fmt: skip


KMEANS_BACKENDS: dict[str, Callable[..., KMeansResult]] = {
    "torch": _kmeans_torch,
    "faiss": _kmeans_faiss,
}
ALGORITHMS = ("lloyd", "minibatch")


def kmeans(
    x: Any,
    k: int,
    seed: int = 0,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    inertia_tol: float = 1e-4,
    algorithm: str = "lloyd",
    backend: str = "torch",
    chunk_size: int = 4096,
    batch_size: int = 8192,
    init_sample_size: int | None = 65536,
    sample_iter: int = 20,
    device: str | torch.device | None = None,
    group: Any = None,
    progress: bool = True,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` centres.

    Args:
        x: ``[n, d]`` tensor or array, :class:`~dict_init.shards.FeatureShards` (streamed from
            disk) or any :class:`~dict_init.sources.VectorSource`. Under torch.distributed,
            each rank passes its own rows; the global data is rank 0's rows, then rank 1's...
        k: number of centres (at most the number of rows).
        seed: seeds the sample and k-means++; the same seed gives the same centres.
        max_iter: most Lloyd iterations (``algorithm="minibatch"``: epochs) on all rows.
        tol: stop when the squared centre shift is below ``tol`` times the mean per-dimension
            variance of the data (scikit-learn's rule)...
        inertia_tol: ...or when one iteration lowers the inertia by less than this fraction
            (``0`` disables it and leaves scikit-learn's rule alone). The centre-shift rule
            alone often runs dozens of iterations that each gain far less than 0.01%.
        algorithm: ``"lloyd"`` (exact, streamed over chunks) or ``"minibatch"``
            (Sculley's streaming updates, one pass per epoch).
        backend: ``"torch"`` or ``"faiss"`` (in memory, one process).
        chunk_size: rows per distance block; memory is ``chunk_size x (k + d)`` floats, never
            ``n x k`` (see the module docstring for the whole budget).
        batch_size: rows per mini-batch update.
        init_sample_size: rows of the random sample Lloyd runs on first; k-means++ seeds on
            ``32 k`` of them (``None``, or at least ``n``: k-means++ on all rows, no sample).
        sample_iter: Lloyd iterations on that sample before the full passes (0: none).
        device: where to compute (default: the tensor's device, else CPU).
        group: torch.distributed process group (default: the world when initialised).
        progress: show a tqdm bar (rank 0 only).

    Returns:
        :class:`KMeansResult` with centres, inertia, counts and iteration count.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(50, 2, generator=g) + off for off in (0.0, 20.0)])
        >>> result = kmeans(x, 2, seed=0, progress=False)
        >>> sorted(round(c) for c in result.centers[:, 0].tolist())
        [0, 20]
    """
    source = as_source(x)
    check_positive_int("k", k)
    check_positive_int("max_iter", max_iter)
    check_positive_int("chunk_size", chunk_size)
    check_positive_int("batch_size", batch_size)
    check_choice("backend", backend, KMEANS_BACKENDS)
    check_choice("algorithm", algorithm, ALGORITHMS)
    if init_sample_size is not None:
        check_positive_int("init_sample_size", init_sample_size)
    for name, value in (("tol", tol), ("inertia_tol", inertia_tol)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise bad_value(name, value, "a number >= 0")
    layout_total = sum(all_gather_int(source.num_vectors, group))
    if layout_total == 0:
        raise bad_value("x", f"{layout_total} rows", "at least k rows; the data is empty")
    if k > layout_total:
        raise bad_value("k", k, f"at most the number of rows ({layout_total})")
    if init_sample_size is not None and init_sample_size < k:
        raise bad_value("init_sample_size", init_sample_size, f"at least k={k} (or None)")
    if not isinstance(source, TensorSource):  # in-memory tensors are checked on wrapping
        for i, chunk in enumerate(source.iter_chunks(65536)):
            check_finite(f"x (chunk {i})", chunk)
    if device is None:
        device = source.x.device if isinstance(source, TensorSource) else torch.device("cpu")
    return KMEANS_BACKENDS[backend](
        source, k, seed=seed, max_iter=max_iter, tol=tol, inertia_tol=inertia_tol,
        algorithm=algorithm,
        chunk_size=chunk_size, batch_size=batch_size, init_sample_size=init_sample_size,
        sample_iter=sample_iter, device=torch.device(device), group=group, progress=progress,
    )  # fmt: skip
