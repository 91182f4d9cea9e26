"""Implicit layers: explicit features combined with a learned, input-independent representation.

YOLOR (section 3) combines a feature map ``x`` with an implicit representation ``g(z)`` by
addition, multiplication or concatenation. The representation lives on the channel axis ``dim``
(1 for ``[B, C, ...]`` maps, -1 for ``[B, N, C]`` token sequences) and broadcasts over the rest.

    >>> import torch
    >>> from implicit_knowledge import ImplicitAdd, ImplicitMul
    >>> x = torch.randn(2, 16, 8, 8)
    >>> ImplicitAdd(16)(x).shape, ImplicitMul(16, prior="network")(x).shape
    (torch.Size([2, 16, 8, 8]), torch.Size([2, 16, 8, 8]))
"""

from __future__ import annotations

import torch
from torch import nn

from .priors import create_prior

__all__ = ["ImplicitAdd", "ImplicitConcat", "ImplicitLayer", "ImplicitMul"]


class ImplicitLayer(nn.Module):
    """Base class: owns the prior and checks the input; subclasses say how to combine."""

    # Initial distribution of the representation (YOLOR section 4.3).
    init_mean: float = 0.0
    init_std: float = 0.02
    # a Python-side view TorchScript must not compile (the checks around it run in eager only)
    __jit_unused_properties__ = ("expected_channels",)

    def __init__(
        self, channels: int, prior: str = "vector", prior_dim: int | None = None, dim: int = 1
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or dim not in (1, -1):
            raise ValueError(f"dim={dim!r} must be 1 (channels-first maps) or -1 (channels-last)")
        self.channels = channels
        self.prior_name = prior
        self.dim = dim
        self.prior = create_prior(prior, channels, self.init_mean, self.init_std, prior_dim)

    def implicit(self) -> torch.Tensor:
        """The representation ``g(z)`` as a ``[channels]`` tensor."""
        return self.prior()

    def reduced(self) -> ImplicitLayer:
        """The same layer with its prior replaced by the constant it currently produces."""
        layer = type(self)(self.channels, prior="vector", dim=self.dim)
        with torch.no_grad():
            layer.prior.value.copy_(self.implicit())
        return layer.to(self.prior_device())

    def prior_device(self) -> torch.device:
        return next(self.prior.parameters()).device

    @property
    def expected_channels(self) -> int | None:
        """Width the input must have on ``dim`` (None: any)."""
        return self.channels

    @torch.jit.unused
    def _channel_axis(self, x: torch.Tensor) -> int:
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects input of rank >= 2 ([B, C, ...] or [B, ..., C]), "
                f"got shape {tuple(x.shape)}"
            )
        axis = self.dim % x.dim()
        expected = self.expected_channels
        if expected is not None and x.shape[axis] != expected:
            raise ValueError(
                f"{type(self).__name__}(channels={self.channels}) got input of shape "
                f"{tuple(x.shape)} with {x.shape[axis]} channels on dim {self.dim}; "
                f"expected {expected}"
            )
        return axis

    def _broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """The representation shaped to broadcast against ``x``."""
        axis = self.dim % x.dim() if torch.jit.is_scripting() else self._channel_axis(x)
        shape = [1] * x.dim()
        shape[axis] = self.channels
        return self.implicit().to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, prior={self.prior_name!r}" + ("" if self.dim == 1 else ", dim=-1")


class ImplicitAdd(ImplicitLayer):
    """``x + g(z)``; the representation starts from N(0, 0.02)."""

    init_mean = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._broadcast(x)


class ImplicitMul(ImplicitLayer):
    """``x * g(z)``; the representation starts from N(1, 0.02)."""

    init_mean = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._broadcast(x)


class ImplicitConcat(ImplicitLayer):
    """``concat(x, g(z))`` on the channel axis: appends ``channels`` learned constant channels.

    ``in_channels`` (the width of ``x``) is checked when given; the output has
    ``in_channels + channels`` channels. The representation starts from N(0, 0.02).
    """

    init_mean = 0.0

    def __init__(
        self,
        channels: int,
        prior: str = "vector",
        prior_dim: int | None = None,
        dim: int = 1,
        in_channels: int | None = None,
    ) -> None:
        if in_channels is not None and (
            isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1
        ):
            raise ValueError(f"in_channels={in_channels!r} must be a positive integer or None")
        super().__init__(channels, prior=prior, prior_dim=prior_dim, dim=dim)
        self.in_channels = in_channels

    def reduced(self) -> ImplicitConcat:
        layer = super().reduced()
        layer.in_channels = self.in_channels
        return layer

    @property
    def expected_channels(self) -> int | None:
        return self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self._broadcast(x)
        size = list(x.shape)
        size[self.dim % x.dim()] = self.channels
        return torch.cat([x, value.expand(size)], dim=self.dim % x.dim())
