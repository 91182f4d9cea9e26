"""Ways to model an implicit representation (YOLOR section 4.2).

A prior is a module with no input: calling it returns the implicit representation, a vector of
``channels`` values. Whatever the modelling, that vector does not depend on the observation, so at
inference every prior reduces to one constant (:func:`implicit_knowledge.fuse` does that).

Each prior starts at ``mean`` with a spread of ``std`` per entry (YOLOR section 4.3: an addition
starts near 0, a multiplication near 1, so the untrained network is unchanged).

New priors register under a name and become available to every implicit layer::

    >>> import torch
    >>> from implicit_knowledge.priors import create_prior
    >>> prior = create_prior("factorized", channels=8, mean=1.0, std=0.02)
    >>> prior().shape
    torch.Size([8])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "FactorizedPrior",
    "NetworkPrior",
    "VectorPrior",
    "create_prior",
    "list_priors",
    "register_prior",
]

_PRIORS: dict[str, type[nn.Module]] = {}


def register_prior(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a prior available to implicit layers as ``prior=name``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        _PRIORS[name] = cls
        return cls

    return decorator


def list_priors() -> list[str]:
    return sorted(_PRIORS)


def create_prior(
    name: str, channels: int, mean: float, std: float, prior_dim: int | None = None
) -> nn.Module:
    """Build the prior registered as ``name`` for a representation of ``channels`` values.

    ``prior_dim`` is the dimension of the prior ``z`` (network) or the number of bases
    (factorized); it defaults to twice ``channels`` as in YOLOR's Table 6 experiments.
    """
    if name not in _PRIORS:
        raise ValueError(f"prior={name!r} is not a known prior; valid: {list_priors()}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels={channels!r} must be a positive integer")
    if prior_dim is not None and (not isinstance(prior_dim, int) or prior_dim < 1):
        raise ValueError(f"prior_dim={prior_dim!r} must be a positive integer or None")
    return _PRIORS[name](channels, mean=mean, std=std, prior_dim=prior_dim or 2 * channels)


@register_prior("vector")
class VectorPrior(nn.Module):
    """The representation is the learned vector itself (YOLOR equation 6)."""

    def __init__(
        self, channels: int, mean: float, std: float, prior_dim: int | None = None
    ) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.empty(channels))
        nn.init.normal_(self.value, mean=mean, std=std)

    def forward(self) -> torch.Tensor:
        return self.value


@register_prior("network")
class NetworkPrior(nn.Module):
    """A learned linear map of a learned prior: ``mean + W z`` (YOLOR equation 7).

    ``z`` has ``prior_dim`` entries drawn from N(0, 1) and ``W`` is scaled so that each entry of
    ``W z`` starts with standard deviation ``std``. ``mean`` is a fixed offset, not a parameter,
    so a multiplication starts near 1 like the vector prior does.
    """

    def __init__(self, channels: int, mean: float, std: float, prior_dim: int) -> None:
        super().__init__()
        self.mean = mean
        self.z = nn.Parameter(torch.randn(prior_dim))
        self.weight = nn.Parameter(torch.randn(channels, prior_dim) * (std / math.sqrt(prior_dim)))

    def forward(self) -> torch.Tensor:
        return self.mean + self.weight @ self.z


@register_prior("factorized")
class FactorizedPrior(nn.Module):
    """A learned combination of learned bases: ``mean + Z^T c`` (YOLOR equation 8).

    ``Z`` holds ``prior_dim`` basis vectors of ``channels`` entries (unit variance per entry) and
    ``c`` their coefficients, scaled so each entry of ``Z^T c`` starts with deviation ``std``.
    Function-wise this spans what :class:`NetworkPrior` does; it differs in which factor
    carries the small scale, and so in how training moves it.
    """

    def __init__(self, channels: int, mean: float, std: float, prior_dim: int) -> None:
        super().__init__()
        self.mean = mean
        self.bases = nn.Parameter(torch.randn(prior_dim, channels))
        self.coefficients = nn.Parameter(torch.randn(prior_dim) * (std / math.sqrt(prior_dim)))

    def forward(self) -> torch.Tensor:
        return self.mean + self.coefficients @ self.bases
