"""Non-maximum suppression (torchvision's kernels behind checked wrappers) and post-processing."""

from __future__ import annotations

import torch
from torchvision import ops

from ._checks import check_fraction, check_positive, check_tensor
from .boxes import clip_boxes


def _check_nms_inputs(
    fn: str, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> None:
    check_tensor("boxes", boxes, shape=(None, 4), expected="[N, 4] (xyxy boxes)", fn=fn)
    n = boxes.shape[0]
    check_tensor("scores", scores, shape=(n,), expected=f"[{n}] (one score per box)", fn=fn)
    check_fraction("iou_threshold", iou_threshold, fn=fn)
    if torch.isnan(boxes).any():
        rows = torch.isnan(boxes).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{fn}: boxes holds NaN (rows {rows}...); NMS needs finite xyxy boxes")
    if torch.isnan(scores).any():
        rows = torch.isnan(scores).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{fn}: scores holds NaN (entries {rows}...); NMS needs finite scores")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms`` with its inputs checked: indices of kept boxes, best first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``.

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    [0, 2]
    """
    _check_nms_inputs("nms", boxes, scores, iou_threshold)
    return ops.nms(boxes, scores, float(iou_threshold))


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` (checked): boxes of different classes never suppress
    each other.

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]])
    >>> batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist()
    [0, 1]
    """
    fn = "batched_nms"
    _check_nms_inputs(fn, boxes, scores, iou_threshold)
    n = boxes.shape[0]
    check_tensor("classes", classes, shape=(n,), expected=f"[{n}] (one class per box)", fn=fn)
    if classes.is_floating_point():
        raise ValueError(f"{fn}: classes has dtype {classes.dtype}; expected integer class indices")
    return ops.batched_nms(boxes, scores, classes, float(iou_threshold))


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.65,
    max_det: int = 300,
    max_candidates: int = 30000,
    multi_label: bool = True,
    image_size: tuple[int, int] | None = None,
    extras: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Decoded boxes [B, A, 4] and class scores [B, A, C] to per-image detections.

    Keeps (box, class) pairs scoring above ``conf`` (every class of a box when ``multi_label``,
    else its best), at most ``max_candidates`` of them, runs torchvision's per-class NMS at
    ``iou`` (no IoU matrix of our own) and keeps the ``max_det`` best. Boxes are clipped to
    ``image_size`` (height, width) when given. ``extras`` [B, A, K] (per-anchor values such as
    mask coefficients) adds ``extras`` [K_det, K]: the rows of the kept detections.

    >>> boxes = torch.tensor([[[0.0, 0, 9, 9], [1, 1, 9, 9]]])
    >>> scores = torch.tensor([[[0.9], [0.8]]])
    >>> out = postprocess(boxes, scores)
    >>> out[0]["boxes"].tolist(), out[0]["labels"].tolist()
    ([[0.0, 0.0, 9.0, 9.0]], [0])
    """
    fn = "postprocess"
    check_tensor("boxes", boxes, shape=(None, None, 4), expected="[B, A, 4] (xyxy boxes)", fn=fn)
    b, a = boxes.shape[:2]
    check_tensor("scores", scores, shape=(b, a, None), expected=f"[{b}, {a}, C]", fn=fn)
    check_fraction("conf", conf, fn=fn)
    check_fraction("iou", iou, fn=fn)
    check_positive("max_det", max_det, integer=True, fn=fn)
    check_positive("max_candidates", max_candidates, integer=True, fn=fn)
    results = []
    for bx, sc in zip(boxes, scores):
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
            box = clip_boxes(box, image_size)
        # Unchecked: scores that pass ``> conf`` are never NaN, and no data-dependent checks here.
        keep = ops.batched_nms(box, score, cls, iou)[:max_det]
        results.append({"boxes": box[keep], "scores": score[keep], "labels": cls[keep]})
        if extras is not None:
            results[-1]["extras"] = extras[len(results) - 1][anchor_idx[keep]]
    return results


def predict_from_outputs(
    head, outputs, images: torch.Tensor, conf: float, iou: float, max_det: int, multi_label: bool
) -> list[dict[str, torch.Tensor]]:
    """A detection head's raw ``outputs`` for ``images`` decoded and put through
    :func:`postprocess` (what every detector's ``predict`` does after its forward); a
    segmentation head (one with ``predict``) adds each detection's mask."""
    if hasattr(head, "predict"):
        return head.predict(outputs, tuple(images.shape[-2:]), conf, iou, max_det, multi_label)
    boxes, scores = head.decode(outputs)
    return postprocess(
        boxes, scores, conf, iou, max_det, multi_label=multi_label,
        image_size=tuple(images.shape[-2:]),
    )  # fmt: skip
