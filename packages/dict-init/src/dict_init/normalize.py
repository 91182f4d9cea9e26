"""Feature normalisation before clustering (YOLO-RD section 3.2 and Table 5).

Language-model embeddings have dimensions far from the unit interval; the paper standardises
each dimension (``"standard"``: zero mean, unit variance over the whole feature set) and tried
``"tanh"`` (squashes large values) as the alternative. Statistics are computed in one streamed
pass (float64 sums, all-reduced under torch.distributed), then applied chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._distributed import all_reduce_
from ._validation import check_choice
from .sources import VectorSource


class Normalizer:
    """Identity: features are clustered as the encoder gives them."""

    name = "none"

    def fit(self, source: VectorSource, group: Any = None) -> Normalizer:
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to store beside the atoms (e.g. the per-dimension mean and std)."""
        return {}


class StandardNormalizer(Normalizer):
    """``(x - mean) / std`` per dimension, statistics over every feature.

    Example:
        >>> import torch
        >>> from dict_init.sources import TensorSource
        >>> x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
        >>> StandardNormalizer().fit(TensorSource(x))(x).round(decimals=4).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
    """

    name = "standard"

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, source: VectorSource, group: Any = None) -> StandardNormalizer:
        total = torch.zeros(source.dim, dtype=torch.float64)
        squares = torch.zeros(source.dim, dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        for chunk in source.iter_chunks(65536):
            chunk = chunk.double().cpu()
            total += chunk.sum(0)
            squares += (chunk**2).sum(0)
            count += chunk.shape[0]
        for t in (total, squares, count):
            all_reduce_(t, group)
        mean = total / count.clamp_min(1)
        variance = (squares / count.clamp_min(1) - mean**2).clamp_min(0)
        self.mean, self.std = mean.float(), variance.sqrt().float()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            raise RuntimeError("StandardNormalizer.fit must run before it is applied")
        return (x - self.mean.to(x.device)) / (self.std.to(x.device) + self.eps)

    def state(self) -> dict[str, torch.Tensor]:
        return {"normalization.mean": self.mean, "normalization.std": self.std}


class TanhNormalizer(Normalizer):
    """``tanh(x)`` element-wise: compresses large values (the paper's Table 5 alternative)."""

    name = "tanh"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


NORMALIZERS: dict[str, Callable[[], Normalizer]] = {
    "none": Normalizer,
    "standard": StandardNormalizer,
    "tanh": TanhNormalizer,
}


def create_normalizer(name: str) -> Normalizer:
    """A fresh normaliser by name: ``"none"``, ``"standard"`` or ``"tanh"``."""
    return NORMALIZERS[check_choice("normalization", name, NORMALIZERS)]()
