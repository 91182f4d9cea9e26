"""``yolo_detector`` in timm's factory, so a saved detector folder rebuilds anywhere timm runs.

A folder written by :func:`yolo_heads.save_checkpoint` holds timm's ``config.json``
(``architecture: yolo_detector`` and the detector's build arguments in ``model_args``) and
``model.safetensors``, which is what ``timm.create_model("local-dir:<folder>", pretrained=True)``
and ``timm.create_model("hf-hub:<repo>", pretrained=True)`` read.

Example:
    >>> import timm, yolo_heads
    >>> model = timm.create_model("yolo_detector", num_classes=3, neck_channels=16)
    >>> type(model).__name__, model.pretrained_cfg["architecture"]
    ('YOLODetector', 'yolo_detector')
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .detector import YOLODetector

ARCHITECTURE = "yolo_detector"

# The detector normalises inside (its backbone's statistics), so timm's data pipeline must
# not: mean 0, std 1.
PRETRAINED_CFG: dict[str, Any] = {
    "input_size": (3, 640, 640),
    "fixed_input_size": False,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
    "crop_pct": 1.0,
    "num_classes": 80,
    "classifier": "head",
    "first_conv": None,
    "license": "apache-2.0",
}

default_cfgs = generate_default_cfgs({ARCHITECTURE: dict(PRETRAINED_CFG)})


@register_model
def yolo_detector(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A :class:`~yolo_heads.YOLODetector` from its keyword arguments (see its docstring)."""
    if kwargs.get("features_only"):
        raise ValueError("features_only=True: yolo_detector is a detector; build its backbone")
    return build_model_with_cfg(YOLODetector, ARCHITECTURE, pretrained, **kwargs)
