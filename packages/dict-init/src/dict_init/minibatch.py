"""Streaming mini-batch k-means (Sculley 2010): per-centre learning rate ``1 / count``."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ._layout import Layout
from .lloyd import _nearest, cluster_sums
from .seeding import sq_norms
from .sources import VectorSource

__all__ = ["minibatch"]


def minibatch(
    source: VectorSource,
    centers: torch.Tensor,
    layout: Layout,
    *,
    max_iter: int,
    tol: float,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[torch.Tensor, int, bool]:
    """Centres after at most ``max_iter`` epochs, the epochs run and whether ``tol`` was met.

    Each epoch streams the rows once in batches; one batch updates the centres with the batch
    means weighted by how many rows each centre has absorbed so far. It stops when an epoch
    moves the centres by at most ``tol`` (squared shift relative to the centres' squared
    norm). Under torch.distributed the batch sums of all ranks are all-reduced, so ranks step
    together.
    """
    k, d = centers.shape
    centers = centers.clone()
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
                _, labels = _nearest(chunk, centers, sq_norms(centers))
                sums += cluster_sums(chunk, labels, k)
                counts += torch.bincount(labels, minlength=k)
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
