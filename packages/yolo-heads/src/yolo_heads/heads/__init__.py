"""Prediction heads, in a registry: ``anchor_free``, ``anchor_based``, ``yolov9`` and ``segment``;
image classification is timm's (``timm.create_model("yolov9_c_cls")``, ``timm-knowledge train``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .._checks import check_int, check_int_list

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


def check_head_args(
    fn: str, in_channels: Any, strides: Any, num_classes: Any
) -> tuple[list[int], list[int], int]:
    """The arguments every head takes: a channel count and a stride per level, a class count."""
    in_channels = check_int_list("in_channels", in_channels, fn=fn)
    strides = check_int_list("strides", strides, length=len(in_channels), fn=fn)
    return in_channels, strides, check_int("num_classes", num_classes, fn=fn)


from .anchor_based import DEFAULT_ANCHORS, AnchorBasedHead  # noqa: E402
from .anchor_free import AnchorFreeHead  # noqa: E402
from .segment import SegmentHead  # noqa: E402
from .yolov9 import YOLOv9Head  # noqa: E402

__all__ = [
    "DEFAULT_ANCHORS",
    "HEADS",
    "AnchorBasedHead",
    "AnchorFreeHead",
    "SegmentHead",
    "YOLOv9Head",
    "register_head",
]
