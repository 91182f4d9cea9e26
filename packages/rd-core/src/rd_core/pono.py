"""Positional normalisation (PONO) over the coefficient channels.

YOLO-RD (equation 4) normalises the coefficient vector at every spatial position so that it
cannot simply copy the input and collapse the dictionary into an identity. This is PONO
(Li et al., 2019): mean and spread are taken over the channel axis only, separately for
each sample and each position.

Two forms, registered in :data:`PONO_FORMS`:

* ``"variance"`` (equation 4, the paper): ``(x - mean) / sqrt(var + eps)`` with the biased
  variance (divide by ``C``);
* ``"std"`` (the authors' public ``DConv.PONO``): ``(x - mean) / (std + eps)`` with the
  *unbiased* standard deviation (divide by ``C - 1``, as ``torch.std``) and ``eps`` added to
  the standard deviation. At ``C = 512`` the two differ by ``sqrt(512 / 511) - 1 = 1e-3``
  relative, far above float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_bool, check_float, check_tensor

__all__ = ["PONO_FORMS", "PositionalNorm", "positional_norm"]

PONO_FORMS = ("variance", "std")


def positional_norm(x: torch.Tensor, eps: float = 1e-5, form: str = "variance") -> torch.Tensor:
    """Normalise ``x`` ``[B, C, H, W]`` to zero mean and unit spread over ``C`` per position.

    ``form="variance"``: biased variance, ``eps`` under the square root (YOLO-RD equation 4).
    ``form="std"``: unbiased standard deviation plus ``eps`` (the authors' code).

    Example:
        >>> import torch
        >>> y = positional_norm(torch.randn(2, 8, 3, 3))
        >>> bool(torch.allclose(y.mean(1), torch.zeros(2, 3, 3), atol=1e-5))
        True
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        check_tensor("positional_norm", "x (with a channel axis)", x, (2, 3, 4, 5))
    check_float("positional_norm", "eps", eps)
    if form not in PONO_FORMS:
        raise ValueError(f"positional_norm: form={form!r} is not one of {PONO_FORMS}")
    return _positional_norm(x, eps, form)


def _positional_norm(x: torch.Tensor, eps: float, form: str) -> torch.Tensor:
    # Two explicit passes instead of torch.var_mean(dim=1): on CPU the fused reduction over the
    # channel axis of an NCHW map was ~4x slower than mean + centred mean of squares, and the
    # centred form keeps the variance exact (no E[x^2] - E[x]^2 cancellation).
    centred = x - x.mean(dim=1, keepdim=True)
    if form == "std":
        std = ((centred * centred).sum(dim=1, keepdim=True) / (x.shape[1] - 1)).sqrt()
        return centred / (std + eps)
    var = (centred * centred).mean(dim=1, keepdim=True)
    return centred * torch.rsqrt(var + eps)


class PositionalNorm(nn.Module):
    """PONO with optional learned per-channel ``gamma`` and ``beta`` (equation 4).

    Args:
        num_channels: number of channels ``C`` (the number of atoms ``N`` in an RD module).
        affine: learn ``gamma`` (init 1) and ``beta`` (init 0); the paper's module has them,
            the authors' public module does not.
        eps: added to the variance before the square root (``form="variance"``) or to the
            standard deviation (``form="std"``).
        form: one of :data:`PONO_FORMS`, see the module docstring.

    Example:
        >>> import torch
        >>> norm = PositionalNorm(16)
        >>> norm(torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(
        self, num_channels: int, affine: bool = True, eps: float = 1e-5, form: str = "variance"
    ) -> None:
        super().__init__()
        if not isinstance(num_channels, int) or num_channels < 2:
            raise ValueError(
                f"PositionalNorm: num_channels must be an int >= 2 (a normalisation over one "
                f"channel is constant), got {num_channels!r}"
            )
        if form not in PONO_FORMS:
            raise ValueError(f"PositionalNorm: form={form!r} is not one of {PONO_FORMS}")
        check_float("PositionalNorm", "eps", eps)
        check_bool("PositionalNorm", "affine", affine)
        self.num_channels = num_channels
        self.eps = float(eps)
        self.form = form
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation alone, without ``gamma`` / ``beta``."""
        if torch.jit.is_scripting():
            return _positional_norm(x, self.eps, self.form)
        return self._normalize_checked(x)

    @torch.jit.unused
    def _normalize_checked(self, x: torch.Tensor) -> torch.Tensor:
        return positional_norm(x, self.eps, self.form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x)
        weight, bias = self.weight, self.bias
        if weight is not None and bias is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * weight.view(shape) + bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_channels}, affine={self.affine}, eps={self.eps}, form={self.form!r}"
