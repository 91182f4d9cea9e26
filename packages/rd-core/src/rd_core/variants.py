"""Registry of RD variants: how each part of the module is built and how the terms are mixed.

``"paper"`` follows YOLO-RD section 3.1: linear ``G`` and ``E`` (no bias, no normalisation, no
activation), PONO as in equation 4 (biased variance, ``eps`` under the square root) with learned
``gamma`` and ``beta``, unit-length atoms, ``Z = residual * X + (1 - residual) * dictionary_term``
(equation 7).

``"authors"`` is the authors' public module (``DConv`` in MultimediaTechLab/YOLO
``yolo/model/module.py``, attributes ``CG``, ``GIE``, ``D``): ``G`` = 1x1 conv + BatchNorm +
SiLU, ``E`` = depth-wise conv + BatchNorm, PONO without affine terms that divides by the
*unbiased* standard deviation with ``eps`` added to it, ``(x - mean) / (std + eps)``, ``D`` =
plain 1x1 conv + BatchNorm (no weight normalisation), every BatchNorm with ``eps=1e-3``,
``momentum=0.03``, and the residual weight multiplies the dictionary term:
``Z = residual * dictionary_term + (1 - residual) * X``. Same weights, same outputs as their
module (tested to 1e-5 relative in train and eval mode, running statistics included).

New variants are added with :func:`register_variant`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._checks import check_free_name
from .dictionary import ConvBNDictionary, NormalizedDictionary
from .pono import PositionalNorm
from .retriever import FusedRetriever, SplitRetriever

__all__ = ["VariantSpec", "get_variant", "list_variants", "register_variant"]


@dataclass(frozen=True)
class VariantSpec:
    """Builders for the parts of one RD variant.

    Attributes:
        name: registry key.
        build_retriever: ``(in_channels, num_atoms, kernel_size, fused) -> nn.Module``.
        build_norm: ``(num_atoms, eps) -> PositionalNorm``.
        build_dictionary: ``(num_atoms, dim, atoms, trainable) -> nn.Module`` with ``.atoms``,
            ``.linear_map()`` and ``forward(coefficients)``.
        mix: ``residual -> (weight on the input X, weight on the dictionary term)``.
        description: one line for docs and errors.
    """

    name: str
    build_retriever: Callable[[int, int, int, bool], nn.Module]
    build_norm: Callable[[int, float], PositionalNorm]
    build_dictionary: Callable[[int, int, Any, bool], nn.Module]
    mix: Callable[[float], tuple[float, float]]
    description: str = ""


_VARIANTS: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> VariantSpec:
    """Add ``spec`` to the registry under ``spec.name`` and return it.

    A name is registered once: registering it again raises ``ValueError`` (a variant that
    changes how ``"paper"`` computes would silently change every model built with it).

    Example:
        >>> register_variant(VariantSpec("paper", None, None, None, None))
        Traceback (most recent call last):
        ...
        ValueError: register_variant: 'paper' is already in the variant registry (held by ...
    """
    if not isinstance(spec, VariantSpec):
        raise TypeError(f"register_variant: spec must be a VariantSpec, got {type(spec).__name__}")
    held = _VARIANTS.get(spec.name)
    holder = held and f"VariantSpec({held.name!r}): {held.description}"
    check_free_name("register_variant", "variant", _VARIANTS, spec.name, holder)
    _VARIANTS[spec.name] = spec
    return spec


def list_variants() -> list[str]:
    """Names of the registered variants.

    Example:
        >>> sorted(list_variants())[:2]
        ['authors', 'paper']
    """
    return sorted(_VARIANTS)


def get_variant(name: str) -> VariantSpec:
    """The registered :class:`VariantSpec` called ``name``."""
    return lookup_variant("get_variant", "name", name)


def lookup_variant(fn: str, arg: str, name: Any) -> VariantSpec:
    """:func:`get_variant` with the error naming the caller's function and argument."""
    if not isinstance(name, str) or name not in _VARIANTS:
        raise ValueError(
            f"{fn}: {arg}={name!r}: unknown variant {name!r}; valid variants are {list_variants()}"
        )
    return _VARIANTS[name]


def _paper_retriever(f: int, n: int, k: int, fused: bool) -> nn.Module:
    return FusedRetriever(f, n, k) if fused else SplitRetriever(f, n, k)


def _authors_retriever(f: int, n: int, k: int, fused: bool) -> nn.Module:
    if fused:
        return FusedRetriever(f, n, k, norm=True, act=True)
    return SplitRetriever(f, n, k, generator_norm=True, generator_act=True, exchanger_norm=True)


register_variant(
    VariantSpec(
        name="paper",
        build_retriever=_paper_retriever,
        build_norm=lambda n, eps: PositionalNorm(n, affine=True, eps=eps),
        build_dictionary=lambda n, f, atoms, trainable: NormalizedDictionary(
            n, f, atoms=atoms, trainable=trainable
        ),
        mix=lambda residual: (residual, 1.0 - residual),
        description="YOLO-RD paper, eq. 7: linear G/E, affine PONO (eq. 4), unit-length atoms",
    )
)

register_variant(
    VariantSpec(
        name="authors",
        build_retriever=_authors_retriever,
        build_norm=lambda n, eps: PositionalNorm(n, affine=False, eps=eps, form="std"),
        build_dictionary=lambda n, f, atoms, trainable: ConvBNDictionary(
            n, f, atoms=atoms, trainable=trainable
        ),
        mix=lambda residual: (1.0 - residual, residual),
        description="authors' DConv: Conv-BN-SiLU G, Conv-BN E, PONO (unbiased std+eps), Conv-BN D",
    )
)
