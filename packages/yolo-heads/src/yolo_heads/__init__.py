"""YOLO detection on any timm backbone, with optional YOLO-RD and YOLOR implicit knowledge.

>>> import torch, yolo_heads
>>> model = yolo_heads.YOLODetector("resnet18", num_classes=3, neck_channels=32).eval()
>>> len(model.predict(torch.zeros(2, 3, 64, 64)))
2
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os
import re as _re
import sys as _sys
from importlib import import_module as _import_module
from typing import Any as _Any

# Public name -> the submodule that defines it. Add new public names here (not as a plain
# ``from .x import y`` line, which would load torch in the console script's --help).
_EXPORTS = {
    "TaskAlignedAssigner": "assigner",
    "PyramidBackbone": "backbone",
    "create_backbone": "backbone",
    "box_iou": "boxes",
    "complete_iou": "boxes",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "YOLODetector": "detector",
    "evaluate_coco": "evaluate",
    "evaluate_detector": "evaluate",
    "export_onnx": "export",
    "export_program": "export",
    "FusionError": "fuse",
    "conv_bn_pairs": "fuse",
    "fuse_conv_bn": "fuse",
    "fuse_for_inference": "fuse",
    "HEADS": "heads",
    "AnchorBasedHead": "heads",
    "AnchorFreeHead": "heads",
    "register_head": "heads",
    "AnchorBasedLoss": "losses",
    "AnchorFreeLoss": "losses",
    "distribution_focal_loss": "losses",
    "FPN": "necks",
    "NECKS": "necks",
    "PAN": "necks",
    "register_neck": "necks",
    "batched_nms": "nms",
    "nms": "nms",
    "postprocess": "nms",
    "yolo_detector": "registry",  # importing registry registers the detectors in timm's factory
}


def __getattr__(name: str) -> _Any:
    """Load a public name on first use (only happens in the console script, see below)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def _console_script() -> bool:
    """Whether this process is the ``yolo-heads`` console script, which imports this package
    before ``yolo_heads.cli`` can parse its arguments: there the names load on first use, so
    ``--help`` and argument errors answer without importing torch and timm (~15 s of CPU)."""
    argv = getattr(_sys, "argv", None) or [""]
    name = _os.path.basename(str(argv[0])).lower()
    # as pip's launchers name it: yolo-heads, yolo-heads.exe, yolo-heads-script.py(w)
    return _re.sub(r"(-script\.pyw?|\.exe)$", "", name) == "yolo-heads"


if not _console_script():
    # ``import yolo_heads`` loads everything and registers the detectors and the authors'
    # architectures in timm's factory (model cards rely on it).
    for _name in _EXPORTS:
        __getattr__(_name)
    del _name

__all__ = [
    "FPN",
    "HEADS",
    "NECKS",
    "PAN",
    "AnchorBasedHead",
    "AnchorBasedLoss",
    "AnchorFreeHead",
    "AnchorFreeLoss",
    "FusionError",
    "PyramidBackbone",
    "TaskAlignedAssigner",
    "YOLODetector",
    "__version__",
    "batched_nms",
    "box_iou",
    "complete_iou",
    "conv_bn_pairs",
    "create_backbone",
    "distribution_focal_loss",
    "evaluate_coco",
    "evaluate_detector",
    "export_onnx",
    "export_program",
    "fuse_conv_bn",
    "fuse_for_inference",
    "load_checkpoint",
    "nms",
    "postprocess",
    "register_head",
    "register_neck",
    "save_checkpoint",
    "yolo_detector",
]
