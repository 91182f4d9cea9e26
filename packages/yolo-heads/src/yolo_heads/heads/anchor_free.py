"""Anchor-free decoupled head with distribution focal loss (YOLOv8 / YOLOv9 style)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_int
from ..boxes import distance_to_box, make_anchor_points
from ..knowledge import implicit_prediction_refinement
from ..layers import ConvBnAct
from ..losses import AnchorFreeLoss
from . import check_head_args, register_head


@register_head("anchor_free")
class AnchorFreeHead(nn.Module):
    """Per level: a box branch predicting ``4 x reg_max`` distance-bin logits (left, top, right,
    bottom, in strides) and a class branch predicting ``num_classes`` logits.

    The box is the expectation of each side's softmax over bins 0..reg_max-1 (DFL, Li et al.
    2020). With ``implicit=True`` both output convolutions get YOLOR's implicit prediction
    refinement (add before, multiply after; folded away by ``implicit_knowledge.fuse``).

    >>> head = AnchorFreeHead([16, 16, 16], num_classes=3)
    >>> [o.shape[1] for o in head([torch.zeros(1, 16, s, s) for s in (8, 4, 2)])]
    [67, 67, 67]
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        reg_max: int = 16,
        implicit: bool = False,
        implicit_prior: str = "vector",
        image_size_hint: int = 640,
        objects_per_image_hint: float = 5.0,
    ) -> None:
        super().__init__()
        in_channels, strides, num_classes = check_head_args(
            "AnchorFreeHead", in_channels, strides, num_classes
        )
        # Two bins at least: the DFL target lies between two neighbouring bins.
        reg_max = check_int("reg_max", reg_max, low=2, fn="AnchorFreeHead")
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, strides
        box_ch = max(16, in_channels[0] // 4, 4 * reg_max)
        cls_ch = max(in_channels[0], min(num_classes, 100))
        self.box_branch = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, box_ch, 3), ConvBnAct(box_ch, box_ch, 3))
            for c in in_channels
        )
        self.cls_branch = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, cls_ch, 3), ConvBnAct(cls_ch, cls_ch, 3))
            for c in in_channels
        )
        box_out = [nn.Conv2d(box_ch, 4 * reg_max, 1) for _ in in_channels]
        cls_out = [nn.Conv2d(cls_ch, num_classes, 1) for _ in in_channels]
        # Biases as in YOLOv8: flat bins; class prior ~ objects per image over cells.
        for conv in box_out:
            nn.init.constant_(conv.bias, 1.0)
        for conv, s in zip(cls_out, self.strides):
            cells = (image_size_hint / s) ** 2
            nn.init.constant_(
                conv.bias, math.log(objects_per_image_hint / max(num_classes, 1) / cells)
            )
        if implicit:
            box_out = [implicit_prediction_refinement(c, implicit_prior) for c in box_out]
            cls_out = [implicit_prediction_refinement(c, implicit_prior) for c in cls_out]
        self.box_out = nn.ModuleList(box_out)
        self.cls_out = nn.ModuleList(cls_out)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [
            torch.cat((box_out(box(f)), cls_out(cls(f))), dim=1)
            for f, box, cls, box_out, cls_out in zip(
                feats, self.box_branch, self.cls_branch, self.box_out, self.cls_out
            )
        ]

    def flatten(self, outputs: Sequence[torch.Tensor]):
        """Raw outputs to distance logits [B, A, 4R], class logits [B, A, C], anchor points
        [A, 2] and strides [A, 1] (pixels)."""
        b = outputs[0].shape[0]
        flat = torch.cat([o.flatten(2) for o in outputs], dim=2).transpose(1, 2)
        dist, cls = flat.split((4 * self.reg_max, self.num_classes), dim=-1)
        points, strides = make_anchor_points([o.shape[-2:] for o in outputs], self.strides)
        del b
        return dist, cls, points.to(flat.device), strides.to(flat.device)

    def decode_distances(
        self, pred_dist: torch.Tensor, points: torch.Tensor, strides: torch.Tensor
    ) -> torch.Tensor:
        """Distance-bin logits [B, A, 4, R] to xyxy boxes in pixels."""
        distance = pred_dist.softmax(-1) @ self.bins.to(pred_dist.dtype)
        return distance_to_box(distance * strides, points)

    def decode(self, outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs to boxes [B, A, 4] (xyxy pixels) and class probabilities [B, A, C]."""
        dist, cls, points, strides = self.flatten(outputs)
        b, a, _ = cls.shape
        boxes = self.decode_distances(dist.view(b, a, 4, self.reg_max), points, strides)
        return boxes, cls.sigmoid()

    def loss_fn(self, **kwargs) -> AnchorFreeLoss:
        """The matching loss (keyword arguments set its gains or assigner)."""
        return AnchorFreeLoss(self, **kwargs)
