"""Non-maximum suppression (greedy, per class) and the post-processing of decoded outputs."""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_fraction, check_positive
from .boxes import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, highest score first (same contract as torchvision's).

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``.

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    [0, 2]
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    # One IoU matrix, then a cheap greedy pass over it (the pass is inherently sequential).
    overlap = (box_iou(boxes[order], boxes[order], eps=0.0) > iou_threshold).cpu().numpy()
    n = len(order)
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlap[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each class: boxes of different classes never suppress each other.

    Shifts each class's boxes by a class-dependent offset larger than any coordinate, so one
    greedy pass handles all classes (as torchvision does).

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]])
    >>> batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist()
    [0, 1]
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes - boxes.min() + classes.to(boxes)[:, None] * span
    return nms(shifted, scores, iou_threshold)


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.65,
    max_det: int = 300,
    max_candidates: int = 30000,
    multi_label: bool = True,
    image_size: tuple[int, int] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Decoded boxes [B, A, 4] and class scores [B, A, C] to per-image detections.

    Keeps (box, class) pairs scoring above ``conf`` (every class of a box when ``multi_label``,
    else its best), runs per-class NMS at ``iou`` and keeps the ``max_det`` best. Boxes are
    clipped to ``image_size`` (height, width) when given.
    """
    check_fraction("conf", conf)
    check_fraction("iou", iou)
    check_positive("max_det", max_det, integer=True)
    results = []
    for b in range(boxes.shape[0]):
        bx, sc = boxes[b], scores[b]
        if multi_label:
            anchor_idx, cls = (sc > conf).nonzero(as_tuple=True)
            score = sc[anchor_idx, cls]
        else:
            score, cls = sc.max(-1)
            anchor_idx = (score > conf).nonzero(as_tuple=True)[0]
            score, cls = score[anchor_idx], cls[anchor_idx]
        if len(score) > max_candidates:
            top = score.topk(max_candidates).indices
            anchor_idx, cls, score = anchor_idx[top], cls[top], score[top]
        box = bx[anchor_idx]
        if image_size is not None:
            h, w = image_size
            box = torch.stack(
                (
                    box[:, 0].clamp(0, w),
                    box[:, 1].clamp(0, h),
                    box[:, 2].clamp(0, w),
                    box[:, 3].clamp(0, h),
                ),
                dim=1,
            )
        keep = batched_nms(box, score, cls, iou)[:max_det]
        results.append({"boxes": box[keep], "scores": score[keep], "labels": cls[keep]})
    return results
