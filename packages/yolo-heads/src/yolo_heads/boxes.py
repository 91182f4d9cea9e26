"""Box geometry: torchvision.ops under the names the losses and assigner use, plus anchor points
and the distance encoding of the anchor-free head (which torchvision has no counterpart for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import ops

from ._checks import check_number, check_tensor


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corners ``(x1, y1, x2, y2)`` to COCO's ``(x, y, w, h)`` (top-left corner and size).

    >>> xyxy_to_xywh(torch.tensor([[1.0, 2, 4, 6]])).tolist()
    [[1.0, 2.0, 3.0, 4.0]]
    """
    return ops.box_convert(boxes, "xyxy", "xywh")


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre and size ``(cx, cy, w, h)`` to corners ``(x1, y1, x2, y2)``.

    >>> cxcywh_to_xyxy(torch.tensor([[2.0, 2, 2, 4]])).tolist()
    [[1.0, 0.0, 3.0, 4.0]]
    """
    return ops.box_convert(boxes, "cxcywh", "xyxy")


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``[..., N, 4]`` and ``[..., M, 4]`` xyxy boxes, giving ``[..., N, M]``.

    ``torchvision.ops.box_iou``; two zero-area boxes give NaN (0 / 0), so mask padded boxes.

    >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]]))
    tensor([[0.1429]])
    """
    _check_boxes("box_iou", boxes1=boxes1, boxes2=boxes2, pairs=True)
    return _box_iou(boxes1, boxes2)


def _check_boxes(fn: str, *, pairs: bool = False, **boxes: Any) -> None:
    shape, expected = ((..., None, 4), "[..., N, 4]") if pairs else ((..., 4), "[..., 4]")
    for name, value in boxes.items():
        check_tensor(name, value, shape=shape, expected=f"{expected} (xyxy boxes)", fn=fn)


# Unchecked, for the assigner and the losses, which call them every step on their own tensors.
_box_iou = ops.box_iou


def complete_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise Complete IoU (Zheng et al. 2020) of matching xyxy boxes ``[..., 4]``.

    ``1 - torchvision.ops.complete_box_iou_loss``: IoU - rho^2 / c^2 - alpha * v, with rho the
    centre distance, c the diagonal of the smallest enclosing box and v the aspect-ratio term.
    Heights are floored at ``1e-6 * (1 + |y1|)`` first (relative, since ``y1 + 1e-7 == y1`` in
    float32 beyond 1) so a collapsed predicted box gives a finite loss instead of
    ``atan(0 / 0) = NaN``; a no-op for any real box.

    >>> complete_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 2]]))
    tensor([1.])
    """
    _check_boxes("complete_iou", boxes1=boxes1, boxes2=boxes2)
    check_number("eps", eps, low=0, fn="complete_iou")
    return _complete_iou(boxes1, boxes2, eps)


def _complete_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    boxes1, boxes2 = _floor_height(boxes1), _floor_height(boxes2)
    return 1.0 - ops.complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=eps)


def _floor_height(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2, torch.maximum(y2, y1 + 1e-6 * (1 + y1.abs()))), dim=-1)


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Clip xyxy boxes to an image of ``image_size`` (height, width).

    >>> clip_boxes(torch.tensor([[-2.0, 3, 50, 9]]), (8, 40)).tolist()
    [[0.0, 3.0, 40.0, 8.0]]
    """
    return ops.clip_boxes_to_image(boxes, image_size)


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
