"""The Retriever core: features ``[B, f, H, W]`` -> coarse coefficients ``[B, N, H, W]``.

* :class:`SplitRetriever` — the paper's form (equations 1-3): a 1x1 coefficient generator ``G``
  (``f -> N``) followed by a depth-wise ``k x k`` global information exchanger ``E``.
* :class:`FusedRetriever` — the single ``k x k`` convolution ``f -> N`` of Table 4.
* :func:`fuse_retriever` — equation 14: ``W_eq[c, i, m, n] = W_G[c, i] * W_E[c, m, n]`` turns a
  linear split retriever into a fused one with the same outputs (borders included, because
  neither part has a bias, so zero padding before or after ``G`` is the same thing).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._checks import bad, check_int

__all__ = ["ConvNormAct", "FusedRetriever", "SplitRetriever", "fuse_retriever"]


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias) with optional BatchNorm and SiLU, 'same' padding.

    Example:
        >>> ConvNormAct(8, 4, 3, norm=True, act=True)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    __jit_unused_properties__ = ("is_linear",)  # a Python-side view, not for TorchScript

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        groups: int = 1,
        norm: bool = False,
        act: bool = False,
        bn_eps: float = 1e-3,
        bn_momentum: float = 3e-2,
    ) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("groups", groups)):  # fmt: skip
            check_int("ConvNormAct", name, value, 1)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            {
                "conv": nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel_size,
                    padding=kernel_size // 2,
                    groups=groups,
                    bias=False,
                )
            }
        )
        if norm:
            # eps/momentum of the authors' Conv block (YOLO conventions).
            layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if act:
            layers["act"] = nn.SiLU()
        super().__init__(layers)

    @property
    def is_linear(self) -> bool:
        """True when the block is a bare convolution (no norm, no activation)."""
        return len(self) == 1


def _check_sizes(fn: str, in_channels: int, num_atoms: int, kernel_size: int) -> None:
    check_int(fn, "in_channels", in_channels, 1)
    check_int(fn, "num_atoms", num_atoms, 1)
    check_int(fn, "kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise bad(fn, "kernel_size", kernel_size, "an odd int, so the map keeps its size")


class SplitRetriever(nn.Module):
    """``E(G(X))``: 1x1 generator ``f -> N`` then depth-wise ``k x k`` exchanger on ``N`` channels.

    Args:
        in_channels: ``f``.
        num_atoms: ``N``.
        kernel_size: ``k`` of the exchanger (odd).
        generator_norm, generator_act: BatchNorm / SiLU after ``G`` (authors' code: both).
        exchanger_norm: BatchNorm after ``E`` (authors' code: yes).

    Example:
        >>> SplitRetriever(8, 16, 5)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        num_atoms: int,
        kernel_size: int = 5,
        *,
        generator_norm: bool = False,
        generator_act: bool = False,
        exchanger_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes("SplitRetriever", in_channels, num_atoms, kernel_size)
        self.in_channels, self.num_atoms, self.kernel_size = in_channels, num_atoms, kernel_size
        self.generator = ConvNormAct(
            in_channels, num_atoms, 1, norm=generator_norm, act=generator_act
        )
        self.exchanger = ConvNormAct(
            num_atoms, num_atoms, kernel_size, groups=num_atoms, norm=exchanger_norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exchanger(self.generator(x))


class FusedRetriever(nn.Module):
    """``Fuse(E, G)``: one ``k x k`` convolution ``f -> N`` (Table 4), optional BN + SiLU.

    Example:
        >>> FusedRetriever(8, 16, 5)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        num_atoms: int,
        kernel_size: int = 5,
        *,
        norm: bool = False,
        act: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes("FusedRetriever", in_channels, num_atoms, kernel_size)
        self.in_channels, self.num_atoms, self.kernel_size = in_channels, num_atoms, kernel_size
        self.conv = ConvNormAct(in_channels, num_atoms, kernel_size, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@torch.no_grad()
def fuse_retriever(retriever: SplitRetriever) -> FusedRetriever:
    """Equation 14: the fused retriever that computes exactly what ``retriever`` computes.

    Only a linear split retriever (no BatchNorm, no activation: ``variant="paper"``) has an
    exact fused form; the authors' ``G`` ends in SiLU, which no single convolution reproduces.

    Example:
        >>> split = SplitRetriever(8, 16, 3)
        >>> fused = fuse_retriever(split)
        >>> x = torch.randn(1, 8, 7, 7)
        >>> bool(torch.allclose(split(x), fused(x), atol=1e-5))
        True
    """
    if not isinstance(retriever, SplitRetriever):
        raise TypeError(
            f"fuse_retriever: retriever must be a SplitRetriever, got {type(retriever).__name__}"
        )
    if not (retriever.generator.is_linear and retriever.exchanger.is_linear):
        raise ValueError(
            "fuse_retriever: retriever has BatchNorm or an activation between G and E "
            "(variant='authors'); only the linear split retriever of variant='paper' can be "
            "fused exactly"
        )
    w_g = retriever.generator.conv.weight  # [N, f, 1, 1]
    w_e = retriever.exchanger.conv.weight  # [N, 1, k, k]
    fused = FusedRetriever(retriever.in_channels, retriever.num_atoms, retriever.kernel_size)
    fused = fused.to(device=w_g.device, dtype=w_g.dtype)
    fused.conv.conv.weight.copy_(w_g * w_e)  # broadcast: [N, f, 1, 1] * [N, 1, k, k]
    return fused
