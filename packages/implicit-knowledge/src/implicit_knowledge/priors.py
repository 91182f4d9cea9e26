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
    """Class decorator: make a prior available to implicit layers as ``prior=name``.

    A name can be registered once; registering it again raises ``ValueError`` naming the class
    that holds it (never a silent overwrite).

    Example:
        >>> @register_prior("my_prior")
        ... class MyPrior(VectorPrior):
        ...     pass
        >>> "my_prior" in list_priors()
        True
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_prior: name={name!r} must be a non-empty string")
    if name in _PRIORS:
        held = _PRIORS[name]
        raise ValueError(
            f"priors registry: name={name!r} is already registered by "
            f"{held.__module__}.{held.__qualname__}; choose another name"
        )

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_prior({name!r}): {cls!r} must be an nn.Module subclass")
        if name in _PRIORS:  # registered between the call and the decoration
            held = _PRIORS[name]
            raise ValueError(
                f"priors registry: name={name!r} is already registered by "
                f"{held.__module__}.{held.__qualname__}; choose another name"
            )
        _PRIORS[name] = cls
        return cls

    return decorator


def list_priors() -> list[str]:
    """Names :func:`create_prior` accepts.

    Example:
        >>> list_priors()[:3]
        ['factorized', 'network', 'vector']
    """
    return sorted(_PRIORS)


def _positive_int(name: str, value: object, *, none_ok: bool = False) -> None:
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        valid = "a positive integer" + (" or None" if none_ok else "")
        raise ValueError(f"{name}={value!r} must be {valid}")


def _finite(name: str, value: object, *, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} must be a real number")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name}={value!r} must be a finite number{bound}")


def create_prior(
    name: str, channels: int, mean: float, std: float, prior_dim: int | None = None
) -> nn.Module:
    """Build the prior registered as ``name`` for a representation of ``channels`` values.

    ``prior_dim`` is the dimension of the prior ``z`` (network) or the number of bases
    (factorized); it defaults to twice ``channels`` as in YOLOR's Table 6 experiments.
    ``mean`` is any finite number, ``std`` a finite number >= 0.

    Raises:
        ValueError: an unknown ``name``, ``channels`` / ``prior_dim`` not positive integers,
            a non-finite ``mean`` or ``std``, a negative ``std``.
        TypeError: ``mean`` or ``std`` not a number.
    """
    if not isinstance(name, str) or name not in _PRIORS:
        raise ValueError(f"prior={name!r} is not a known prior name; valid: {list_priors()}")
    _positive_int("channels", channels)
    _positive_int("prior_dim", prior_dim, none_ok=True)
    _finite("mean", mean)
    _finite("std", std, minimum=0.0)
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
