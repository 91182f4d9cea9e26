"""Prediction heads, in a registry: ``anchor_free``, ``anchor_based`` and ``classification``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_head(name: str) -> Callable:
    """Decorator adding a head class to :data:`HEADS` under ``name`` (a name already taken
    raises ``ValueError``: registries never overwrite silently)."""

    def wrap(cls: Callable) -> Callable:
        if name in HEADS:
            holder = HEADS[name]
            raise ValueError(
                f"register_head: {name!r} is already registered in HEADS "
                f"(by {holder.__module__}.{holder.__qualname__}); pick another name"
            )
        HEADS[name] = cls
        return cls

    return wrap


from .anchor_based import DEFAULT_ANCHORS, AnchorBasedHead  # noqa: E402
from .anchor_free import AnchorFreeHead  # noqa: E402
from .classification import ClassificationHead  # noqa: E402

__all__ = [
    "DEFAULT_ANCHORS",
    "HEADS",
    "AnchorBasedHead",
    "AnchorFreeHead",
    "ClassificationHead",
    "register_head",
]
