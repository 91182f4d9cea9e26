"""YOLOR's two detection uses of implicit knowledge as drop-in blocks.

- :class:`ImplicitFeatureAlignment` (iFA, YOLOR section 5.2): an implicit addition on every
  FPN/PAN level, aligning the levels' feature spaces.
- :class:`ImplicitPredictionRefinement` (iPR, section 5.3): an implicit addition before and an
  implicit multiplication after a detection output convolution. :func:`implicit_knowledge.fuse`
  folds both into the convolution, leaving exactly the plain convolution.

    >>> import torch
    >>> from torch import nn
    >>> from implicit_knowledge import ImplicitFeatureAlignment, ImplicitPredictionRefinement, fuse
    >>> levels = [torch.randn(1, c, s, s) for c, s in [(32, 16), (64, 8), (128, 4)]]
    >>> aligned = ImplicitFeatureAlignment([32, 64, 128])(levels)
    >>> head = ImplicitPredictionRefinement(nn.Conv2d(32, 85, 1))
    >>> type(fuse(head)).__name__
    'Conv2d'
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ImplicitAdd, ImplicitMul

__all__ = ["ImplicitFeatureAlignment", "ImplicitPredictionRefinement"]


class ImplicitFeatureAlignment(nn.ModuleList):
    """One :class:`ImplicitAdd` per pyramid level; ``forward`` maps a list of maps to a list.

    When fused, each addition stays as one constant per level (its neighbours are not visible
    from here); place the following convolution in an ``nn.Sequential`` after an ``ImplicitAdd``
    instead if the constant should disappear into that convolution's bias.
    """

    def __init__(
        self, channels: Sequence[int], prior: str = "vector", prior_dim: int | None = None
    ):
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
            raise ValueError(
                f"channels={channels!r} must be a non-empty sequence of positive "
                "integers, one per pyramid level"
            )
        super().__init__([ImplicitAdd(c, prior=prior, prior_dim=prior_dim) for c in channels])

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(features, torch.Tensor) or not isinstance(features, Sequence):
            raise TypeError(
                f"features={type(features).__name__} must be a list of {len(self)} feature maps"
            )
        if len(features) != len(self):
            raise ValueError(
                f"ImplicitFeatureAlignment has {len(self)} levels "
                f"({[m.channels for m in self]} channels) but got {len(features)} feature maps"
            )
        return [add(x) for add, x in zip(self, features)]


class ImplicitPredictionRefinement(nn.Sequential):
    """``ImplicitMul(conv(ImplicitAdd(x)))`` around an output convolution (or linear layer).

    It is an ``nn.Sequential`` (``add``, ``conv``, ``mul``) so that :func:`fuse` folds it with the
    same rules as any other sequence and returns the bare convolution.
    """

    def __init__(self, conv: nn.Module, prior: str = "vector", prior_dim: int | None = None):
        in_channels = getattr(conv, "in_channels", getattr(conv, "in_features", None))
        out_channels = getattr(conv, "out_channels", getattr(conv, "out_features", None))
        if in_channels is None or out_channels is None:
            raise TypeError(
                f"conv={type(conv).__name__} must be a convolution or linear layer "
                "(with in_channels/out_channels or in_features/out_features)"
            )
        dim = -1 if isinstance(conv, nn.Linear) else 1
        super().__init__()
        self.add_module("add", ImplicitAdd(in_channels, prior=prior, prior_dim=prior_dim, dim=dim))
        self.add_module("conv", conv)
        self.add_module("mul", ImplicitMul(out_channels, prior=prior, prior_dim=prior_dim, dim=dim))
