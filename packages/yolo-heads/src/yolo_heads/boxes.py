"""Box geometry: conversions, IoU / CIoU, anchor points and distance encoding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corners ``(x1, y1, x2, y2)`` to COCO's ``(x, y, w, h)`` (top-left corner and size)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre and size ``(cx, cy, w, h)`` to corners ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Pairwise IoU of ``[..., N, 4]`` and ``[..., M, 4]`` xyxy boxes, giving ``[..., N, M]``.

    >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]]))
    tensor([[0.1429]])
    """
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter / (union + eps)


def complete_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise Complete IoU (Zheng et al. 2020) of matching xyxy boxes ``[..., 4]``.

    CIoU = IoU - rho^2 / c^2 - alpha * v, with rho the centre distance, c the diagonal of the
    smallest enclosing box and v the aspect-ratio consistency term.

    >>> complete_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 2]]))
    tensor([1.0000])
    """
    b1x1, b1y1, b1x2, b1y2 = boxes1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = boxes2.unbind(-1)
    w1, h1 = b1x2 - b1x1, (b1y2 - b1y1).clamp(min=eps)
    w2, h2 = b2x2 - b2x1, (b2y2 - b2y1).clamp(min=eps)
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def make_anchor_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every level, in pixels, and the stride of each: ``[A, 2]`` and ``[A, 1]``.

    >>> points, strides = make_anchor_points([(2, 2)], [8])
    >>> points.tolist(), strides.flatten().tolist()
    ([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]], [8.0, 8.0, 8.0, 8.0])
    """
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides):
        ys = (torch.arange(h, dtype=torch.float32) + offset) * s
        xs = (torch.arange(w, dtype=torch.float32) + offset) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), dim=-1).reshape(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s)))
    return torch.cat(points), torch.cat(stride_list)


def distance_to_box(distance: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Left, top, right, bottom distances from ``points`` to xyxy boxes."""
    lt, rb = distance.chunk(2, dim=-1)
    return torch.cat((points - lt, points + rb), dim=-1)


def box_to_distance(boxes: torch.Tensor, points: torch.Tensor, max_distance: float) -> torch.Tensor:
    """xyxy boxes to (left, top, right, bottom) distances from ``points``, clamped for the DFL."""
    lt = points - boxes[..., :2]
    rb = boxes[..., 2:] - points
    return torch.cat((lt, rb), dim=-1).clamp(0, max_distance)
