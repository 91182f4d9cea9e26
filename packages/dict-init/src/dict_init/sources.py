"""Vector sources: what k-means and the normalisers read, in memory or streamed from disk.

A source knows its size and dimension, yields its rows in chunks, and gathers rows by index.
K-means only ever holds one chunk (plus the centres) at a time, so a source on disk
(:class:`~dict_init.shards.FeatureShards`) can be larger than memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ._validation import bad_value, check_finite, check_matrix


@runtime_checkable
class VectorSource(Protocol):
    """Rows ``[num_vectors, dim]`` read in chunks."""

    @property
    def num_vectors(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def iter_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        """Consecutive row blocks of at most ``chunk_size`` rows, in order."""
        ...

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows at ``indices`` (int64, any order) as ``[len(indices), dim]``."""
        ...


class TensorSource:
    """An in-memory ``[n, d]`` tensor as a :class:`VectorSource` (chunks are views, no copy).

    Example:
        >>> import torch
        >>> source = TensorSource(torch.randn(10, 4))
        >>> [c.shape[0] for c in source.iter_chunks(4)]
        [4, 4, 2]
    """

    def __init__(self, x: torch.Tensor, *, check: bool = True, name: str = "x") -> None:
        x = check_matrix(name, x)
        if check:
            check_finite(name, x)
        self.x = x

    @property
    def num_vectors(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def iter_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, self.num_vectors, chunk_size):
            yield self.x[start : start + chunk_size]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        return self.x[indices.to(self.x.device)]


class TransformedSource:
    """A source whose chunks pass through ``transform`` (e.g. a fitted normaliser) on the fly."""

    def __init__(self, source: VectorSource, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.source = source
        self.transform = transform

    @property
    def num_vectors(self) -> int:
        return self.source.num_vectors

    @property
    def dim(self) -> int:
        return self.source.dim

    def iter_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        for chunk in self.source.iter_chunks(chunk_size):
            yield self.transform(chunk)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        return self.transform(self.source.gather(indices))


def as_source(x: object, name: str = "x") -> VectorSource:
    """Wrap a tensor or array as a source; sources pass through unchanged."""
    if isinstance(x, VectorSource):
        return x
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return TensorSource(x, name=name)
    raise bad_value(
        name, type(x).__name__, "a tensor or array [n, d], FeatureShards, or a VectorSource"
    )
