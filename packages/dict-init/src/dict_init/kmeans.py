"""K-means in torch: k-means++ seeding, over-relaxed chunked Lloyd, centre swaps, mini-batch, faiss.

The pieces live in one module per idea: :mod:`dict_init.seeding` (k-means++ and the random
rows it starts from), :mod:`dict_init.lloyd` (chunked, over-relaxed Lloyd iterations),
:mod:`dict_init.swaps` (the local search) and :mod:`dict_init.minibatch` (Sculley's streaming
updates). This module runs them in order:

1. k-means++ on ``SEED_ROWS_PER_CENTER * k`` random rows (8 k), by global row index, so one
   process and several pick the same rows. scikit-learn seeds on all rows: at 200k x 512 and
   512 centres its seeding takes over half of its run.
2. When the data have more than ``init_sample_size`` rows, Lloyd on a random sample of that
   many rows (read from the input by index, one chunk at a time), at most ``sample_iter``
   iterations: each costs ``init_sample_size / n`` of a full pass.
   Then the swap search (:mod:`dict_init.swaps`) moves one centre at a time to a row drawn
   by k-means++'s rule while that lowers the sample's inertia by at least ``inertia_tol``,
   with Lloyd after each move: centres Lloyd left in a wrong blob (two in one, none in
   another) end up where the blobs are. Without a sample it runs after step 3 on all rows.
3. Lloyd on all rows until the centre shift falls below ``tol`` times the mean per-dimension
   variance (scikit-learn's criterion) or an iteration gains less than ``inertia_tol`` of the
   inertia (the centre-shift rule alone spends many iterations on gains far below 0.1%:
   scikit-learn runs ~230 iterations on the benchmark data). The centres of the last pass
   are returned with that pass' inertia and counts: no extra pass.

Memory beyond the input (one process, in-memory input): ``chunk_size x (k + d)`` floats of
blocks, ``k x d`` centres and float64 sums, and the ``8 k x d`` seeding rows; seeding on all
rows (``init_sample_size=None``) holds ``n x (2 + ln k)`` candidate distances; from shards or
under torch.distributed the sample is gathered once (``init_sample_size x d``); the swap
search keeps two distances and a label per row it searches (16 bytes a row).
``tests/test_kmeans.py`` checks that no torch op creates more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._distributed import all_gather_int, rank_and_world
from ._layout import Layout
from ._validation import bad_value, check_choice, check_finite, check_int, check_positive_int
from .lloyd import assign, inertia, lloyd, lloyd_pass
from .minibatch import minibatch
from .seeding import SEED_ROWS_PER_CENTER, kmeans_plusplus, sample_rows
from .sources import TensorSource, VectorSource, as_source
from .swaps import SWAP_CANDIDATES, swap_centres

__all__ = [
    "KMEANS_BACKENDS",
    "SEED_ROWS_PER_CENTER",
    "KMeansResult",
    "assign",
    "inertia",
    "kmeans",
    "kmeans_plusplus",
]


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
            ``seconds`` per phase (``seeding``, ``sample_lloyd``, ``lloyd`` or ``minibatch``
            and its ``final_pass``), ``seed_sample_size`` and ``sample_iter``.
    """

    centers: torch.Tensor
    inertia: float
    counts: torch.Tensor
    n_iter: int
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)


def _kmeans_torch(
    source: VectorSource,
    k: int,
    *,
    seed: int,
    max_iter: int,
    tol: float,
    inertia_tol: float,
    overrelax: float,
    algorithm: str,
    chunk_size: int,
    batch_size: int,
    init_sample_size: int | None,
    sample_iter: int,
    swaps: int,
    device: torch.device,
    group: Any,
    progress: bool,
) -> KMeansResult:
    seconds = {}
    start = time.perf_counter()
    layout = Layout(source, group)
    generator = torch.Generator().manual_seed(seed)
    # Samples chosen by global row index: identical for any number of ranks.
    seed_index, index = sample_rows(layout.total, init_sample_size, k, generator)
    if seed_index is None:
        seeding = layout.all_rows(device)
    else:
        seeding = layout.gather_global(seed_index, device)
    m_seed = seeding.shape[0]
    centers = kmeans_plusplus(seeding, k, generator, progress=progress and layout.rank == 0)
    del seeding
    seconds["seeding"] = time.perf_counter() - start
    m = layout.total if index is None else index.numel()
    sample_iter_done = swaps_done = 0
    settings = {"max_iter": max_iter, "tol": tol, "inertia_tol": inertia_tol,
                "overrelax": overrelax, "chunk_size": chunk_size, "device": device}  # fmt: skip
    rank0 = progress and layout.rank == 0
    # the swap search's [chunk, candidates] block stays within the chunk x (k + d) budget
    candidates = min(SWAP_CANDIDATES, max(k, source.dim))
    if sample_iter and index is not None:
        start = time.perf_counter()
        single = Layout(layout.sample(index, device), group, local=True)
        run = lloyd(
            single.source, centers, single, max_iter=sample_iter, tol=tol,
            inertia_tol=inertia_tol, overrelax=overrelax, chunk_size=chunk_size, device=device,
            progress=rank0, desc="k-means (sample)",
        )  # fmt: skip
        centers, sample_iter_done = run.next_centers, run.n_iter
        seconds["sample_lloyd"] = time.perf_counter() - start
        if swaps:  # on the sample (a third of the rows or fewer), before Lloyd or mini-batch
            start = time.perf_counter()
            run, swaps_done, swap_passes = swap_centres(
                single.source, run, single, rounds=swaps, candidates=candidates,
                min_gain=inertia_tol, generator=generator, chunk_size=chunk_size,
                device=device, lloyd_kwargs={**settings, "max_iter": sample_iter},
            )  # fmt: skip
            centers, sample_iter_done = run.next_centers, sample_iter_done + swap_passes
            seconds["swaps"] = time.perf_counter() - start
        del single
    start = time.perf_counter()
    if algorithm == "lloyd":
        run = lloyd(
            source, centers, layout, max_iter=max_iter, tol=tol, inertia_tol=inertia_tol,
            overrelax=overrelax, chunk_size=chunk_size, device=device, progress=progress,
        )  # fmt: skip
        seconds["lloyd"] = time.perf_counter() - start
        if swaps and "swaps" not in seconds:  # no sample: on all rows
            start = time.perf_counter()
            n_first = run.n_iter
            run, swaps_done, swap_passes = swap_centres(
                source, run, layout, rounds=swaps, candidates=candidates,
                min_gain=inertia_tol, generator=generator, chunk_size=chunk_size,
                device=device, lloyd_kwargs=settings,
            )  # fmt: skip
            run.n_iter = n_first + swap_passes
            seconds["swaps"] = time.perf_counter() - start
        centers, total, counts = run.centers, run.inertia, run.counts
        n_iter, converged = run.n_iter, run.converged
    else:
        centers, n_iter, converged = minibatch(
            source, centers, layout, max_iter=max_iter, tol=tol, batch_size=batch_size,
            device=device, progress=progress,
        )  # fmt: skip
        seconds["minibatch"] = time.perf_counter() - start
        # Final assignment so inertia and counts describe the returned centres.
        start = time.perf_counter()
        _, counts, total = lloyd_pass(source, centers, chunk_size, device, layout.offset)
        layout.reduce(counts)
        layout.reduce(total)
        total = float(total)
        seconds["final_pass"] = time.perf_counter() - start
    return KMeansResult(
        centers=centers.cpu(),
        inertia=total,
        counts=counts.cpu().long(),
        n_iter=n_iter,
        converged=converged,
        info={"backend": "torch", "algorithm": algorithm, "init": "k-means++",
              "init_sample_size": m, "seed_sample_size": m_seed,
              "sample_iter": sample_iter_done, "overrelax": overrelax,
              "swaps": swaps_done,
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
    index, _ = sample_rows(len(x), init_sample_size, k, generator)
    init = kmeans_plusplus(x if index is None else x[index], k, generator)
    m = len(x) if index is None else index.numel()
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
    inertia_tol: float = 1e-3,
    overrelax: float = 1.8,
    algorithm: str = "lloyd",
    backend: str = "torch",
    chunk_size: int = 4096,
    batch_size: int = 8192,
    init_sample_size: int | None = 65536,
    sample_iter: int = 20,
    swaps: int = 16,
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
            alone often runs dozens of iterations that each gain far less than 0.1%.
        overrelax: Lloyd step factor: the next centres are ``c + overrelax * (mean - c)``
            (``1``: plain Lloyd; ``1 < overrelax < 2`` extrapolates the step, which converges
            in fewer passes; an overshooting step falls back to plain Lloyd, see
            :mod:`dict_init.lloyd`).
        algorithm: ``"lloyd"`` (exact, streamed over chunks) or ``"minibatch"``
            (Sculley's streaming updates, one pass per epoch).
        backend: ``"torch"`` or ``"faiss"`` (in memory, one process).
        chunk_size: rows per distance block; memory is ``chunk_size x (k + d)`` floats, never
            ``n x k`` (see the module docstring for the whole budget).
        batch_size: rows per mini-batch update.
        init_sample_size: rows of the random sample Lloyd runs on first when ``n`` is larger;
            k-means++ seeds on ``8 k`` of them (``None``: k-means++ on all rows, no sample).
        sample_iter: Lloyd iterations on that sample before the full passes (0: none).
        swaps: at most this many centre swaps (local search, :mod:`dict_init.swaps`): a centre
            moves to a row drawn by k-means++'s rule when that lowers the inertia by at least
            ``inertia_tol``, and Lloyd runs again. On the Lloyd sample when there is one (both
            algorithms), else after Lloyd on all rows (``algorithm="lloyd"``); 0: none.
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
    check_int("seed", seed)
    check_positive_int("max_iter", max_iter)
    check_positive_int("chunk_size", chunk_size)
    check_positive_int("batch_size", batch_size)
    check_int("swaps", swaps)
    if swaps < 0:
        raise bad_value("swaps", swaps, "an integer >= 0 (0: no local search)")
    check_choice("backend", backend, KMEANS_BACKENDS)
    check_choice("algorithm", algorithm, ALGORITHMS)
    if init_sample_size is not None:
        check_positive_int("init_sample_size", init_sample_size)
    for name, value in (("tol", tol), ("inertia_tol", inertia_tol)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise bad_value(name, value, "a number >= 0")
    if not (isinstance(overrelax, (int, float)) and 1 <= overrelax < 2):
        raise bad_value("overrelax", overrelax, "a number in [1, 2) (1: plain Lloyd)")
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
        overrelax=overrelax, algorithm=algorithm,
        chunk_size=chunk_size, batch_size=batch_size, init_sample_size=init_sample_size,
        sample_iter=sample_iter, swaps=swaps, device=torch.device(device), group=group,
        progress=progress,
    )  # fmt: skip
