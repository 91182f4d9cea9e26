"""The Dictionary ``D``: ``N`` atoms of dimension ``f`` applied as a 1x1 convolution ``N -> f``.

Two forms are provided:

* :class:`NormalizedDictionary` (the paper, equations 5-7): every atom is divided by its length
  (weight normalisation without a gain, equation 6) before it is used, so the atoms stay on the
  unit sphere whatever the optimiser does.
* :class:`ConvBNDictionary` (the authors' public module): a plain 1x1 convolution without bias
  followed by BatchNorm; the atoms are not normalised.

Both accept an initial set of atoms: a tensor ``[N, f]`` or any object with an ``.atoms`` tensor
(the artifacts written by ``dict-init``). A frozen dictionary keeps its atoms as buffers, so
``model.requires_grad_(True)`` cannot unfreeze it by accident; the state-dict keys are the
same either way, so checkpoints move freely between the two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int

__all__ = ["ConvBNDictionary", "NormalizedDictionary", "as_atoms"]


def as_atoms(
    dictionary: Any,
    *,
    num_atoms: int | None = None,
    dim: int | None = None,
    arg: str = "dictionary",
) -> torch.Tensor:
    """Return the atoms of ``dictionary`` as a float tensor ``[N, f]``, checked.

    ``dictionary`` may be a tensor (or array) ``[N, f]`` or any object with an ``.atoms``
    attribute holding one (for example a ``dict_init`` artifact). ``num_atoms`` and ``dim``,
    when given, are the count and dimension the caller needs.

    Example:
        >>> import torch
        >>> as_atoms(torch.ones(4, 8), num_atoms=4, dim=8).shape
        torch.Size([4, 8])
    """
    check_int("as_atoms", "num_atoms", num_atoms, 1, optional=True)
    check_int("as_atoms", "dim", dim, 1, optional=True)
    source = dictionary
    if not isinstance(dictionary, torch.Tensor) and hasattr(dictionary, "atoms"):
        source = dictionary.atoms
    try:
        atoms = torch.as_tensor(source)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{arg}: expected a tensor [N, f] or an object with an `.atoms` tensor, got "
            f"{type(dictionary).__name__}"
        ) from error
    if atoms.dim() != 2:
        raise ValueError(
            f"{arg}: atoms must be a 2-D tensor [num_atoms, dim], got shape {tuple(atoms.shape)}"
        )
    if not atoms.is_floating_point():
        atoms = atoms.float()
    n, f = atoms.shape
    if num_atoms is not None and n != num_atoms:
        raise ValueError(
            f"{arg}: has {n} atoms but num_atoms={num_atoms}; pass num_atoms={n} (or None to "
            f"take the count from the dictionary), or build a dictionary with {num_atoms} atoms"
        )
    if dim is not None and f != dim:
        raise ValueError(
            f"{arg}: atoms have dimension {f} but the features have {dim} channels "
            f"(dim=in_channels={dim}); build the dictionary from a layer with {dim} channels or "
            f"map its atoms to {dim} dimensions first (see dict-init)"
        )
    if not torch.isfinite(atoms).all():
        bad = int((~torch.isfinite(atoms)).any(dim=1).sum())
        raise ValueError(f"{arg}: {bad} of {n} atoms contain NaN or infinite values")
    return atoms.detach().clone()


def _random_unit_atoms(num_atoms: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(num_atoms, dim), dim=1)


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor, trainable: bool) -> None:
    """Register ``value`` as a parameter (trainable) or a buffer (frozen) under ``name``."""
    if name in module._parameters:
        del module._parameters[name]
    if name in module._buffers:
        del module._buffers[name]
    if trainable:
        module.register_parameter(name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


class NormalizedDictionary(nn.Module):
    """The paper's dictionary: ``N`` atoms normalised to unit length, applied as a 1x1 conv.

    Args:
        num_atoms: ``N``.
        dim: ``f``, the feature dimension (channels of the layer the RD sits after).
        atoms: initial atoms (tensor ``[N, f]`` or object with ``.atoms``); random unit
            vectors when ``None``.
        trainable: learn the atoms (default) or keep them fixed (Table 7).
        eps: guards the division for atoms of (near) zero length.

    Example:
        >>> import torch
        >>> d = NormalizedDictionary(6, 4)
        >>> torch.allclose(d.atoms.norm(dim=1), torch.ones(6))
        True
        >>> d(torch.randn(1, 6, 3, 3)).shape
        torch.Size([1, 4, 3, 3])
    """

    __jit_unused_properties__ = ("trainable", "atoms")  # Python-side views, not for TorchScript

    def __init__(
        self,
        num_atoms: int,
        dim: int,
        atoms: Any = None,
        trainable: bool = True,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        check_int("NormalizedDictionary", "num_atoms", num_atoms, 1)
        check_int("NormalizedDictionary", "dim", dim, 1)
        self.num_atoms, self.dim, self.eps = num_atoms, dim, eps
        init = (
            _random_unit_atoms(num_atoms, dim)
            if atoms is None
            else as_atoms(atoms, num_atoms=num_atoms, dim=dim)
        )
        if atoms is not None and bool((init.norm(dim=1) <= eps).any()):
            raise ValueError(
                "dictionary: contains atoms of zero length, which cannot be normalised"
            )
        _set_tensor(self, "raw_atoms", init, trainable)

    @property
    def trainable(self) -> bool:
        return "raw_atoms" in self._parameters

    def normalized_atoms(self) -> torch.Tensor:
        """``WN(D)``: every atom divided by its length (equation 6), ``[N, f]``."""
        return F.normalize(self.raw_atoms, dim=1, eps=self.eps)

    @property
    def atoms(self) -> torch.Tensor:
        """The atoms as the module uses them (unit length), ``[N, f]``, detached."""
        return self.normalized_atoms().detach()

    def linear_map(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight [f, N], bias [f] or None)`` such that ``forward(c) = weight @ c + bias``."""
        return self.normalized_atoms().t(), None

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        weight = self.normalized_atoms().t()
        return F.conv2d(coefficients, weight[:, :, None, None])

    def extra_repr(self) -> str:
        return f"num_atoms={self.num_atoms}, dim={self.dim}, trainable={self.trainable}"


class ConvBNDictionary(nn.Module):
    """The authors' dictionary: 1x1 convolution ``N -> f`` (no bias, no normalisation) + BatchNorm.

    ``atoms`` are the convolution's columns, ``[N, f]``, as they are (not normalised).

    Example:
        >>> import torch
        >>> d = ConvBNDictionary(6, 4)
        >>> d(torch.randn(2, 6, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    __jit_unused_properties__ = ("trainable", "atoms")  # Python-side views, not for TorchScript

    def __init__(
        self,
        num_atoms: int,
        dim: int,
        atoms: Any = None,
        trainable: bool = True,
        bn_eps: float = 1e-3,
        bn_momentum: float = 3e-2,
    ) -> None:
        super().__init__()
        check_int("ConvBNDictionary", "num_atoms", num_atoms, 1)
        check_int("ConvBNDictionary", "dim", dim, 1)
        self.num_atoms, self.dim = num_atoms, dim
        self.conv = nn.Conv2d(num_atoms, dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim, eps=bn_eps, momentum=bn_momentum)
        if atoms is not None:
            with torch.no_grad():
                init = as_atoms(atoms, num_atoms=num_atoms, dim=dim)
                self.conv.weight.copy_(init.t()[:, :, None, None])
        if not trainable:
            _set_tensor(self.conv, "weight", self.conv.weight.detach().clone(), False)
            _set_tensor(self.bn, "weight", self.bn.weight.detach().clone(), False)
            _set_tensor(self.bn, "bias", self.bn.bias.detach().clone(), False)

    @property
    def trainable(self) -> bool:
        return "weight" in self.conv._parameters

    @property
    def atoms(self) -> torch.Tensor:
        return self.conv.weight[:, :, 0, 0].t().detach()

    def linear_map(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convolution and BatchNorm folded into one affine map (valid in eval mode)."""
        if self.bn.training:
            raise RuntimeError("ConvBNDictionary.linear_map: BatchNorm is in training mode")
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.conv.weight[:, :, 0, 0] * scale[:, None]
        bias = self.bn.bias - self.bn.running_mean * scale
        return weight, bias

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(coefficients))

    def extra_repr(self) -> str:
        return f"num_atoms={self.num_atoms}, dim={self.dim}, trainable={self.trainable}"
