"""Task-aligned label assignment (TOOD; as used by YOLOv8 and YOLOv9)."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_int, check_number
from .boxes import _box_iou, _complete_iou


class TaskAlignedAssigner(nn.Module):
    """Assign ground truth to anchor points by the alignment ``score^alpha * IoU^beta``.

    For every ground-truth box, the ``topk`` anchor points whose centres lie inside it and whose
    predictions align best become positives; an anchor claimed by several boxes keeps the one it
    overlaps most. Soft targets are the alignment, normalised per box so that the best anchor of
    a box gets that box's best IoU (TOOD, eq. 10). Defaults follow YOLOv8 / YOLOv9 (Ultralytics'
    ``TaskAlignedAssigner``): ``topk=10, alpha=0.5, beta=6``, the overlap is CIoU clamped at 0
    (``iou="ciou"``; ``"iou"`` for plain IoU), and a box side under ``min_side`` pixels is
    widened to ``min_side`` about the box centre when choosing candidate points, so a digit
    smaller than a stride-8 cell still has candidates (``min_side=0`` turns that off; the
    detector's loss sets it to the middle stride, 16 for strides 8/16/32, as Ultralytics does).

    >>> assigner = TaskAlignedAssigner(topk=2)
    >>> points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
    >>> out = assigner(torch.full((1, 4, 2), 0.5), torch.tensor([[[0.0, 0, 16, 8]] * 4]),
    ...                points, torch.tensor([[1]]), torch.tensor([[[0.0, 0, 16, 8]]]),
    ...                torch.tensor([[True]]))
    >>> out.fg_mask.tolist()
    [[True, True, False, False]]
    """

    def __init__(
        self,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        eps: float = 1e-9,
        iou: str = "ciou",
        min_side: float = 16.0,
    ) -> None:
        super().__init__()
        fn = "TaskAlignedAssigner"
        check_choice("iou", iou, ("iou", "ciou"), fn=fn)
        self.topk = check_int("topk", topk, fn=fn)
        self.alpha = check_number("alpha", alpha, low=0, fn=fn)
        self.beta = check_number("beta", beta, low=0, fn=fn)
        self.eps = check_number("eps", eps, low=0, fn=fn)
        self.iou, self.min_side = iou, check_number("min_side", min_side, low=0, fn=fn)

    class Result:
        """Targets per anchor point: labels [B, A], boxes [B, A, 4], scores [B, A, C], fg [B, A]."""

        def __init__(self, labels, boxes, scores, fg_mask, gt_index) -> None:
            self.labels, self.boxes, self.scores = labels, boxes, scores
            self.fg_mask, self.gt_index = fg_mask, gt_index

    @torch.no_grad()
    def forward(
        self,
        pred_scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> TaskAlignedAssigner.Result:
        """Args: predicted probabilities [B, A, C], predicted xyxy boxes [B, A, 4], anchor points
        [A, 2] (all in pixels), padded ground truth labels [B, M], boxes [B, M, 4] and mask [B, M].
        """
        b, a, _ = pred_scores.shape
        m = gt_boxes.shape[1]
        if m == 0:
            return self.Result(
                torch.zeros(b, a, dtype=torch.long, device=pred_scores.device),
                torch.zeros(b, a, 4, device=pred_scores.device),
                torch.zeros_like(pred_scores),
                torch.zeros(b, a, dtype=torch.bool, device=pred_scores.device),
                torch.zeros(b, a, dtype=torch.long, device=pred_scores.device),
            )
        # Anchor centres strictly inside each box (sides floored at min_side): [B, M, A].
        centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        half = ((gt_boxes[..., 2:] - gt_boxes[..., :2]) / 2).clamp(min=self.min_side / 2)
        lt = points[None, None] - (centre - half)[:, :, None]
        rb = (centre + half)[:, :, None] - points[None, None]
        inside = torch.cat((lt, rb), dim=-1).amin(-1) > self.eps
        candidate = inside & gt_mask[:, :, None]

        if self.iou == "ciou":
            # Only candidate pairs: CIoU is element-wise, and B x M x A pairs can be large.
            overlaps = torch.zeros(candidate.shape, dtype=pred_boxes.dtype, device=points.device)
            bi, mi, ai = candidate.nonzero(as_tuple=True)
            overlaps[bi, mi, ai] = _complete_iou(gt_boxes[bi, mi], pred_boxes[bi, ai]).clamp(min=0)
        else:
            overlaps = _box_iou(gt_boxes, pred_boxes)  # [B, M, A]
        labels = gt_labels.clamp(min=0).long()
        cls_score = pred_scores.gather(2, labels[:, None, :].expand(b, a, m)).transpose(1, 2)
        # where, not a product: a zero-area padded box against a collapsed prediction is 0 / 0.
        overlaps = torch.where(candidate, overlaps, 0.0)
        align = cls_score.pow(self.alpha) * overlaps.pow(self.beta) * candidate

        k = min(self.topk, a)
        top_idx = align.topk(k, dim=-1).indices
        topk_mask = torch.zeros_like(candidate).scatter_(-1, top_idx, True)
        positive = topk_mask & candidate & (align > 0)

        # An anchor claimed by several boxes keeps the one with the highest IoU.
        multi = positive.sum(1, keepdim=True) > 1
        if multi.any():
            best = overlaps.argmax(1, keepdim=True)
            only_best = torch.zeros_like(positive).scatter_(1, best, True)
            positive = torch.where(multi, only_best & candidate, positive)
        fg_mask = positive.any(1)
        gt_index = positive.float().argmax(1)  # [B, A]

        batch_idx = torch.arange(b, device=gt_boxes.device)[:, None]
        target_labels = labels[batch_idx, gt_index]
        target_boxes = gt_boxes[batch_idx, gt_index]
        target_scores = torch.zeros_like(pred_scores)
        target_scores.scatter_(2, target_labels[..., None], 1.0)
        target_scores *= fg_mask[..., None]

        align = align * positive
        best_align = align.amax(-1, keepdim=True)
        best_iou = (overlaps * positive).amax(-1, keepdim=True)
        norm = (align * best_iou / (best_align + self.eps)).amax(1)  # [B, A]
        target_scores = target_scores * norm[..., None]
        return self.Result(target_labels, target_boxes, target_scores, fg_mask, gt_index)
