"""Positional normalisation (PONO) over the coefficient channels.

YOLO-RD (equation 4) normalises the coefficient vector at every spatial position so that it
cannot simply copy the input and collapse the dictionary into an identity. This is PONO
(Li et al., 2019): mean and variance are taken over the channel axis only, separately for
each sample and each position.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PositionalNorm", "positional_norm"]


def positional_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise ``x`` ``[B, C, H, W]`` to zero mean and unit variance over ``C`` per position.

    The variance is the biased one (divide by ``C``) and ``eps`` goes under the square root,
    exactly as in equation 4 of YOLO-RD.

    Example:
        >>> import torch
        >>> y = positional_norm(torch.randn(2, 8, 3, 3))
        >>> bool(torch.allclose(y.mean(1), torch.zeros(2, 3, 3), atol=1e-5))
        True
    """
    if x.dim() < 2:
        raise ValueError(
            f"positional_norm: x must have a channel axis (dim >= 2), got shape {tuple(x.shape)}"
        )
    # Two explicit passes instead of torch.var_mean(dim=1): on CPU the fused reduction over the
    # channel axis of an NCHW map was ~4x slower than mean + centred mean of squares, and the
    # centred form keeps the variance exact (no E[x^2] - E[x]^2 cancellation).
    centred = x - x.mean(dim=1, keepdim=True)
    var = (centred * centred).mean(dim=1, keepdim=True)
    return centred * torch.rsqrt(var + eps)


class PositionalNorm(nn.Module):
    """PONO with optional learned per-channel ``gamma`` and ``beta`` (equation 4).

    Args:
        num_channels: number of channels ``C`` (the number of atoms ``N`` in an RD module).
        affine: learn ``gamma`` (init 1) and ``beta`` (init 0); the paper's module has them,
            the authors' public module does not.
        eps: added to the variance before the square root.

    Example:
        >>> import torch
        >>> norm = PositionalNorm(16)
        >>> norm(torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, num_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(num_channels, int) or num_channels < 2:
            raise ValueError(
                f"PositionalNorm: num_channels must be an int >= 2 (a normalisation over one "
                f"channel is constant), got {num_channels!r}"
            )
        self.num_channels = num_channels
        self.eps = float(eps)
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = positional_norm(x, self.eps)
        if self.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_channels}, affine={self.affine}, eps={self.eps}"
