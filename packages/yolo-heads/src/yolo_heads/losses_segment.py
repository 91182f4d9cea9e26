"""The segmentation loss: the detection loss plus BCE on prototype masks (YOLOv8-seg's recipe).

For every foreground anchor (the detection loss's task-aligned assignment) the mask logits
``coefficients @ prototypes`` are compared with its object's mask, resampled to the prototypes'
resolution, by per-pixel BCE; the loss is averaged over the pixels of the object's box only
(pixels outside are zeroed, the mean taken over the whole map) and divided by the box's area as
a fraction of the image, so small and large objects weigh the same; the sum over foreground
anchors is divided by their count and multiplied by ``mask_gain`` (Ultralytics: the box gain,
7.5). The targets are the masks' pixel coverage of each prototype pixel (area averaging), where
Ultralytics samples the nearest pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .losses import AnchorFreeLoss
from .masks import assemble_masks, crop_masks, resample_masks

__all__ = ["SegmentLoss", "mask_loss"]


def mask_loss(
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Summed mask loss of one image's foreground anchors (see the module doc).

    ``coefficients`` [N, M], ``prototypes`` [M, h, w], ``masks`` [N, H, W] (each anchor's
    object, input pixels), ``boxes`` [N, 4] (xyxy input pixels), ``image_size`` (H, W).
    """
    _, h, w = prototypes.shape
    height, width = image_size
    logits = assemble_masks(coefficients, prototypes)
    target = resample_masks(masks, (h, w)).to(logits.dtype)
    scale = boxes.new_tensor([w / width, h / height, w / width, h / height])
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    cropped = crop_masks(per_pixel, boxes * scale).mean(dim=(1, 2))
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / (height * width)
    return (cropped / area.clamp(min=1e-9)).sum()


class SegmentLoss:
    """Loss of a :class:`~yolo_heads.heads.SegmentHead`: its detection head's loss
    (:class:`~yolo_heads.losses.AnchorFreeLoss`, parts ``box``, ``dfl``, ``cls``) plus ``mask``.

    Targets need ``masks`` [N, H, W] (one per box, input pixels) beside ``boxes`` and ``labels``.
    ``mask_gain`` defaults to the box gain, as in Ultralytics.
    """

    def __init__(self, head, mask_gain: float | None = None, **detection: Any) -> None:
        self.head = head
        self.detection = AnchorFreeLoss(head.detect, **detection)
        self.mask_gain = float(self.detection.gains["box"] if mask_gain is None else mask_gain)

    def __call__(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        levels, _, prototypes = self.head.split(outputs)
        parts, assigned = self.detection.weighted_parts(levels, targets)
        coefficients = self.head.coefficients(outputs)
        image_size = (
            levels[0].shape[-2] * self.head.strides[0],
            levels[0].shape[-1] * self.head.strides[0],
        )
        total = (prototypes * 0).sum() + (coefficients * 0).sum()  # every output in the graph
        fg = assigned.fg_mask
        for i, target in enumerate(targets):
            if not fg[i].any():
                continue
            if "masks" not in target:
                raise ValueError(
                    f"targets[{i}] has no 'masks'; a segmentation loss needs masks [N, H, W] "
                    "beside the boxes (build the dataset with masks=True, config task: segment)"
                )
            gt_masks = torch.as_tensor(target["masks"], device=prototypes.device)
            n = len(target["boxes"])
            if gt_masks.ndim != 3 or gt_masks.shape[0] != n:
                raise ValueError(
                    f"targets[{i}]['masks'] has shape {tuple(gt_masks.shape)}; expected "
                    f"[{n}, H, W] (one mask per box)"
                )
            objects = assigned.gt_index[i][fg[i]]
            gt_masks = resample_masks(gt_masks, tuple(prototypes.shape[-2:]))  # once per image
            total = total + mask_loss(
                coefficients[i][fg[i]],
                prototypes[i],
                gt_masks[objects],
                assigned.boxes[i][fg[i]],
                image_size,
            )
        parts["mask"] = total / fg.sum().clamp(min=1) * self.mask_gain
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
