"""Instance segmentation head: a detection head plus mask coefficients and prototype masks.

As in YOLACT, YOLOv8-seg and the YOLO-RD authors' ``MultiheadSegmentation``: every anchor
predicts ``num_masks`` coefficients beside its box and classes, and one small network predicts
``num_masks`` prototype masks at stride 4 for the whole image; an object's mask is the sigmoid of
its coefficients times the prototypes, cropped to its box (:mod:`yolo_heads.masks`).

Outputs are a list: per level ``[B, 4 reg_max + C + M, H, W]`` (the detection head's channels,
then the coefficients), then the prototypes ``[B, M, H4, W4]``. :meth:`SegmentHead.split` takes
them apart; the detection part decodes, scores and exports as the detection head's own.

Two places for the prototypes:

- ``prototype_channels=None`` (any yolo-heads detector, timm backbones included): computed from
  the finest level, Conv 3x3, 2x nearest up-sampling, Conv 3x3, Conv 1x1 (Ultralytics' ``Proto``
  with nearest up-sampling instead of a transposed convolution);
- ``prototype_channels=c`` (the authors' v9-c-seg): the head takes one more input, a stride-4
  map of ``c`` channels built by the layer table, and the prototypes are a Conv 1x1 of it.

The module names follow the authors' (``detect.heads.<l>.*``, ``heads.<l>.mask_conv.*``,
``heads.<levels>``: the prototypes), so their state dict loads unchanged. Unlike theirs, the
forward also runs ``detect``, so a segmenter returns boxes and classes.

    >>> head = SegmentHead([16, 16, 16], num_classes=3, num_masks=8)
    >>> outs = head([torch.zeros(1, 16, s, s) for s in (8, 4, 2)])
    >>> [tuple(o.shape) for o in outs]
    [(1, 75, 8, 8), (1, 75, 4, 4), (1, 75, 2, 2), (1, 8, 16, 16)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_int
from ..architectures.blocks import Conv
from . import HEADS, check_head_args, register_head

#: detection heads a segmenter can carry: those whose levels are ``[B, channels, H, W]`` maps
DETECTION_HEADS = ("anchor_free", "yolov9")


class MaskBranch(nn.Module):
    """One level's mask coefficients (the authors' ``Segmentation``): Conv 3x3, Conv 3x3, 1x1.
    The width is ``max(first_channels // 4, num_masks)`` from the first level, as theirs."""

    def __init__(self, first_channels: int, in_channels: int, num_masks: int) -> None:
        super().__init__()
        neck = max(first_channels // 4, num_masks)
        self.mask_conv = nn.Sequential(
            Conv(in_channels, neck, 3), Conv(neck, neck, 3), nn.Conv2d(neck, num_masks, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_conv(x)


class Prototypes(nn.Sequential):
    """Prototype masks at twice the input's resolution (stride 4 from the stride-8 level)."""

    def __init__(self, in_channels: int, channels: int, num_masks: int) -> None:
        super().__init__(
            Conv(in_channels, channels, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            Conv(channels, channels, 3),
            Conv(channels, num_masks, 1),
        )


@register_head("segment")
class SegmentHead(nn.Module):
    """A detection head (``detect``: ``"anchor_free"`` or ``"yolov9"``) with mask coefficients
    and prototypes; see the module doc.

    Args:
        in_channels, num_classes, strides: as every head (one channel count per level).
        detect: the detection head's name in :data:`~yolo_heads.heads.HEADS`.
        num_masks: prototypes (and coefficients per anchor); 32 as the authors and Ultralytics.
        prototype_channels: ``None``: prototypes from the finest level; an int: the width of
            an extra last input at stride 4 (the authors' layout).
        prototype_width: width of the prototype network (default the first level's channels).
        **detect_kwargs: the detection head's arguments (``reg_max``, ``implicit`` ...).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        detect: str = "anchor_free",
        num_masks: int = 32,
        prototype_channels: int | None = None,
        prototype_width: int | None = None,
        **detect_kwargs: Any,
    ) -> None:
        super().__init__()
        fn = "SegmentHead"
        in_channels, strides, num_classes = check_head_args(fn, in_channels, strides, num_classes)
        check_choice("detect", detect, DETECTION_HEADS, fn=fn)
        self.num_masks = check_int("num_masks", num_masks, fn=fn)
        self.detect = HEADS[detect](in_channels, num_classes, strides, **detect_kwargs)
        self.num_classes, self.strides = num_classes, list(strides)
        self.reg_max = self.detect.reg_max
        self.prototype_input = prototype_channels is not None
        self.heads = nn.ModuleList(MaskBranch(in_channels[0], c, num_masks) for c in in_channels)
        if self.prototype_input:
            self.heads.append(Conv(check_int("prototype_channels", prototype_channels), num_masks))
        else:
            width = prototype_width or in_channels[0]
            self.heads.append(Prototypes(in_channels[0], width, num_masks))
        #: the prototypes' stride in input pixels
        self.prototype_stride = self.strides[0] // 2

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        levels = list(feats[:-1]) if self.prototype_input else list(feats)
        detections = self.detect(levels)
        coefficients = [branch(f) for branch, f in zip(self.heads[:-1], levels)]
        prototypes = self.heads[-1](feats[-1] if self.prototype_input else levels[0])
        return [torch.cat(pair, dim=1) for pair in zip(detections, coefficients)] + [prototypes]

    def split(
        self, outputs: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Raw outputs to the detection head's levels, the coefficient maps and the prototypes."""
        levels, m = list(outputs[:-1]), self.num_masks
        return [o[:, :-m] for o in levels], [o[:, -m:] for o in levels], outputs[-1]

    def coefficients(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mask coefficients per anchor ``[B, A, M]``, anchors in :meth:`flatten`'s order."""
        _, coefficients, _ = self.split(outputs)
        return torch.cat([c.flatten(2) for c in coefficients], dim=2).transpose(1, 2)

    # the detection head's interface, on the detection part of the outputs
    @property
    def bins(self) -> torch.Tensor:
        return self.detect.bins

    def flatten(self, outputs: Sequence[torch.Tensor]):
        return self.detect.flatten(self.split(outputs)[0])

    def decode_distances(self, *args: Any) -> torch.Tensor:
        return self.detect.decode_distances(*args)

    def decode(self, outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes [B, A, 4] (xyxy pixels) and class probabilities [B, A, C]."""
        return self.detect.decode(self.split(outputs)[0])

    def class_outputs(self) -> list[nn.Conv2d]:
        return self.detect.class_outputs()

    def predict(
        self,
        outputs: Sequence[torch.Tensor],
        image_size: tuple[int, int],
        conf: float = 0.25,
        iou: float = 0.65,
        max_det: int = 300,
        multi_label: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes``, ``scores``, ``labels`` and ``masks`` [K, H, W] (bool, input
        pixels): NMS on the boxes, then each kept box's mask from its anchor's coefficients."""
        from ..masks import masks_for_boxes
        from ..nms import postprocess

        boxes, scores = self.decode(outputs)
        coefficients = self.coefficients(outputs)
        prototypes = outputs[-1]
        results = postprocess(
            boxes, scores, conf, iou, max_det, multi_label=multi_label,
            image_size=image_size, extras=coefficients,
        )  # fmt: skip
        for result, protos in zip(results, prototypes):
            result["masks"] = masks_for_boxes(
                result.pop("extras"), protos, result["boxes"], image_size
            )
        return results

    def loss_fn(self, **kwargs: Any):
        """Detection loss plus the mask loss (:class:`~yolo_heads.losses_segment.SegmentLoss`)."""
        from ..losses_segment import SegmentLoss

        return SegmentLoss(self, **kwargs)
