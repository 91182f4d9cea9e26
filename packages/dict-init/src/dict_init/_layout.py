"""Where k-means' rows live: split over torch.distributed ranks, or a sample of a source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ._distributed import all_gather_int, all_reduce_, rank_and_world
from .sources import TensorSource, VectorSource


class Layout:
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

    def all_rows(self, device: torch.device) -> torch.Tensor:
        """All rows as one float32 tensor: the input itself when it already is one, else a copy."""
        if self.world == 1 and isinstance(self.source, TensorSource):
            return self.source.x.to(device, torch.float32)  # no copy for float32 on ``device``
        return self.gather_global(torch.arange(self.total), device)

    def sample(self, index: torch.Tensor, device: torch.device) -> VectorSource:
        """The rows at global ``index`` as a source every rank holds whole.

        From an in-memory tensor in one process the rows are gathered one chunk at a time
        (``chunk_size x d`` floats, not a copy of the sample); from disk or other ranks they
        are gathered once.
        """
        if self.world == 1 and isinstance(self.source, TensorSource):
            return RowsOf(self.source, index)
        return TensorSource(self.gather_global(index, device), check=False)


class RowsOf:
    """Rows ``index`` of a source as a source, gathered one chunk at a time."""

    def __init__(self, source: VectorSource, index: torch.Tensor):
        self.source, self.index = source, index

    @property
    def num_vectors(self) -> int:
        return self.index.numel()

    @property
    def dim(self) -> int:
        return self.source.dim

    def iter_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, self.num_vectors, chunk_size):
            yield self.source.gather(self.index[start : start + chunk_size])

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        return self.source.gather(self.index[indices])
