"""YOLO detection on any timm backbone, with optional YOLO-RD and YOLOR implicit knowledge.

>>> import torch, yolo_heads
>>> model = yolo_heads.YOLODetector("resnet18", num_classes=3, neck_channels=32).eval()
>>> len(model.predict(torch.zeros(2, 3, 64, 64)))
2
"""

from __future__ import annotations

__version__ = "0.1.0"

from .assigner import TaskAlignedAssigner
from .backbone import PyramidBackbone, create_backbone
from .boxes import box_iou, complete_iou
from .checkpoint import load_checkpoint, save_checkpoint
from .detector import YOLODetector
from .evaluate import evaluate_coco, evaluate_detector
from .export import export_onnx, export_program
from .fuse import FusionError, conv_bn_pairs, fuse_conv_bn, fuse_for_inference
from .heads import HEADS, AnchorBasedHead, AnchorFreeHead, register_head
from .losses import AnchorBasedLoss, AnchorFreeLoss, distribution_focal_loss
from .necks import FPN, NECKS, PAN, register_neck
from .nms import batched_nms, nms, postprocess
from .registry import yolo_detector  # registers "yolo_detector" in timm's factory

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
