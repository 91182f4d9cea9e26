"""Detection losses: CIoU box loss, distribution focal loss, BCE classification / objectness.

:class:`AnchorFreeLoss` is the YOLOv9 recipe (task-aligned assignment, BCE on soft targets, CIoU
and DFL weighted by the soft targets); :class:`AnchorBasedLoss` the YOLOv5/YOLOR/YOLOv7 recipe
(shape-ratio matching of three anchors per level with neighbour cells, CIoU, objectness and class
BCE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_module, check_tensor
from .assigner import TaskAlignedAssigner
from .boxes import _complete_iou, box_to_distance, cxcywh_to_xyxy


def pad_targets(
    targets: Sequence[dict[str, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack per-image targets to ``labels [B, M]``, ``boxes [B, M, 4]`` and ``mask [B, M]``."""
    m = max((len(t["labels"]) for t in targets), default=0)
    b = len(targets)
    labels = torch.zeros(b, m, dtype=torch.long, device=device)
    boxes = torch.zeros(b, m, 4, device=device)
    mask = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            labels[i, :n] = torch.as_tensor(t["labels"], device=device).long()
            boxes[i, :n] = torch.as_tensor(t["boxes"], device=device).float()
            mask[i, :n] = True
    return labels, boxes, mask


def distribution_focal_loss(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL (Li et al. 2020): cross-entropy to the two bins around a continuous target.

    ``pred_logits`` [N, 4, R] over bins 0..R-1, ``target`` [N, 4] in [0, R-1); returns [N].

    >>> logits = torch.full((1, 4, 16), -20.0); logits[..., 3] = 20.0
    >>> float(distribution_focal_loss(logits, torch.full((1, 4), 3.0))) < 1e-6
    True
    """
    fn = "distribution_focal_loss"
    check_tensor(
        "pred_logits", pred_logits, shape=(..., None), expected="[..., R] (bin logits)", fn=fn
    )
    shape = (*pred_logits.shape[:-1],)
    check_tensor(
        "target", target, shape=shape, expected=f"{list(shape)} (pred_logits less its bins)", fn=fn
    )
    return _distribution_focal_loss(pred_logits, target)


def _distribution_focal_loss(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    left = target.long()
    right = left + 1
    w_left = right.float() - target
    w_right = 1 - w_left
    reg_max = pred_logits.shape[-1]
    logp = pred_logits.log_softmax(-1)
    loss = -(
        logp.gather(-1, left[..., None]).squeeze(-1) * w_left
        + logp.gather(-1, right.clamp(max=reg_max - 1)[..., None]).squeeze(-1) * w_right
    )
    return loss.mean(-1)


class AnchorFreeLoss:
    """YOLOv9-style loss for :class:`~yolo_heads.heads.AnchorFreeHead` outputs.

    Returns ``(total, {"box": ..., "dfl": ..., "cls": ...})``; the parts are already weighted by
    their gains (YOLOv9 defaults: box 7.5, DFL 1.5, cls 0.5) and normalised by the sum of the soft
    targets, so the total does not grow with the batch size. ``assigner`` is a
    :class:`~yolo_heads.TaskAlignedAssigner` or a dict of its options (e.g. ``{"iou": "iou",
    "min_side": 0}`` for the assignment before issue 13).
    """

    def __init__(
        self,
        head,
        box_gain: float = 7.5,
        dfl_gain: float = 1.5,
        cls_gain: float = 0.5,
        assigner: TaskAlignedAssigner | dict | None = None,
    ) -> None:
        self.head = check_module(
            "head",
            head,
            needs=("strides", "reg_max", "flatten", "decode_distances"),
            expected="an AnchorFreeHead (strides, reg_max, flatten, decode_distances)",
            fn="AnchorFreeLoss",
        )
        self.gains = {"box": box_gain, "dfl": dfl_gain, "cls": cls_gain}
        if not isinstance(assigner, TaskAlignedAssigner):
            # A dict (from a run config's model.loss_kwargs.assigner) sets its options; the
            # candidate floor defaults to the middle stride, as in Ultralytics.
            strides = list(head.strides)
            options = {"min_side": float(strides[len(strides) // 2]), **(assigner or {})}
            assigner = TaskAlignedAssigner(**options)
        self.assigner = assigner

    def __call__(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts, _ = self.weighted_parts(outputs, targets)
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}

    def weighted_parts(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], TaskAlignedAssigner.Result]:
        """The weighted parts (in the graph) and the assignment they were computed with (a
        segmentation loss reads its foreground anchors and their objects)."""
        head = self.head
        dist_logits, cls_logits, points, strides = head.flatten(outputs)
        b, a, _ = cls_logits.shape
        pred_dist = dist_logits.view(b, a, 4, head.reg_max)
        pred_boxes = head.decode_distances(pred_dist, points, strides)  # pixels
        gt_labels, gt_boxes, gt_mask = pad_targets(targets, cls_logits.device)
        assigned = self.assigner(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach(),
            points,
            gt_labels,
            gt_boxes,
            gt_mask,
        )
        score_sum = assigned.scores.sum().clamp(min=1.0)
        cls_loss = (
            F.binary_cross_entropy_with_logits(cls_logits, assigned.scores, reduction="sum")
            / score_sum
        )
        fg = assigned.fg_mask
        if fg.any():
            weight = assigned.scores.sum(-1)[fg]
            ciou = _complete_iou(pred_boxes[fg], assigned.boxes[fg])
            box_loss = ((1.0 - ciou) * weight).sum() / score_sum
            stride_fg = strides.expand(b, a, 1)[fg]
            target_dist = box_to_distance(
                assigned.boxes[fg] / stride_fg,
                points.expand(b, a, 2)[fg] / stride_fg,
                head.reg_max - 1 - 0.01,
            )
            dfl_loss = (_distribution_focal_loss(pred_dist[fg], target_dist) * weight).sum()
            dfl_loss = dfl_loss / score_sum
        else:
            # Keep every output in the graph (DDP expects gradients for all parameters).
            box_loss = dfl_loss = dist_logits.sum() * 0.0
        parts = {
            "box": box_loss * self.gains["box"],
            "dfl": dfl_loss * self.gains["dfl"],
            "cls": cls_loss * self.gains["cls"],
        }
        return parts, assigned


class AnchorBasedLoss:
    """YOLOv5/YOLOR/YOLOv7 loss for :class:`~yolo_heads.heads.AnchorBasedHead` outputs.

    A target matches an anchor when neither width nor height ratio exceeds ``anchor_t``; it is
    then assigned to its own cell and the two nearest neighbour cells (centre offsets in
    [-0.5, 1.5]). Objectness targets are the detached CIoU of the match; level losses are
    balanced 4 : 1 : 0.4 for strides 8 : 16 : 32.
    """

    def __init__(
        self,
        head,
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.5,
        anchor_t: float = 4.0,
        balance: Sequence[float] = (4.0, 1.0, 0.4),
    ) -> None:
        self.head = check_module(
            "head",
            head,
            needs=("strides", "anchors"),
            expected="an AnchorBasedHead (strides, anchors)",
            fn="AnchorBasedLoss",
        )
        self.gains = {"box": box_gain, "obj": obj_gain, "cls": cls_gain}
        self.anchor_t = anchor_t
        self.balance = list(balance)

    def _flat_targets(self, targets, device) -> torch.Tensor:
        rows = []
        for i, t in enumerate(targets):
            boxes = torch.as_tensor(t["boxes"], device=device).float().reshape(-1, 4)
            labels = torch.as_tensor(t["labels"], device=device).float().reshape(-1, 1)
            cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
            wh = boxes[:, 2:] - boxes[:, :2]
            img = torch.full_like(labels, float(i))
            rows.append(torch.cat((img, labels, cxcy, wh), dim=1))
        return torch.cat(rows) if rows else torch.zeros(0, 6, device=device)

    def __call__(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        head = self.head
        device = outputs[0].device
        flat = self._flat_targets(targets, device)
        box_loss = torch.zeros((), device=device)
        obj_loss = torch.zeros((), device=device)
        cls_loss = torch.zeros((), device=device)
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device) * 0.5
        for level, pred in enumerate(outputs):
            _, na, h, w, _ = pred.shape
            stride = head.strides[level]
            anchors = head.anchors[level].to(device) / stride  # [na, 2] in grid units
            obj_target = torch.zeros(pred.shape[:4], device=device)
            if len(flat):
                t = flat.clone()
                t[:, 2:] /= stride
                ratio = t[None, :, 4:6] / anchors[:, None]  # [na, nt, 2]
                match = torch.maximum(ratio, 1 / ratio).amax(-1) < self.anchor_t
                anchor_idx = torch.arange(na, device=device)[:, None].expand(na, len(t))[match]
                t = t[None].expand(na, -1, -1)[match]
                gxy = t[:, 2:4]
                gxy_inv = torch.tensor([w, h], device=device) - gxy
                near_lo = (gxy % 1 < 0.5) & (gxy > 1)
                near_hi = (gxy_inv % 1 < 0.5) & (gxy_inv > 1)
                use = torch.stack(
                    (
                        torch.ones_like(near_lo[:, 0]),
                        near_lo[:, 0],
                        near_lo[:, 1],
                        near_hi[:, 0],
                        near_hi[:, 1],
                    )
                )  # [5, n]
                t = t[None].expand(5, -1, -1)[use]
                anchor_idx = anchor_idx[None].expand(5, -1)[use]
                shift = offsets[:, None].expand(-1, use.shape[1], -1)[use]
                gxy = t[:, 2:4]
                cell = (gxy - shift).long()
                gi = cell[:, 0].clamp(0, w - 1)
                gj = cell[:, 1].clamp(0, h - 1)
                img = t[:, 0].long()
                if len(t):
                    p = pred[img, anchor_idx, gj, gi]
                    pxy = p[:, :2].sigmoid() * 2 - 0.5
                    pwh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors[anchor_idx]
                    tbox = torch.cat((gxy - torch.stack((gi, gj), 1), t[:, 4:6]), dim=1)
                    ciou = _complete_iou(
                        cxcywh_to_xyxy(torch.cat((pxy, pwh), 1)), cxcywh_to_xyxy(tbox)
                    )
                    box_loss = box_loss + (1.0 - ciou).mean()
                    obj_target[img, anchor_idx, gj, gi] = (
                        ciou.detach().clamp(min=0).to(obj_target.dtype)
                    )
                    onehot = torch.zeros_like(p[:, 5:])
                    onehot[torch.arange(len(t)), t[:, 1].long()] = 1.0
                    cls_loss = cls_loss + F.binary_cross_entropy_with_logits(p[:, 5:], onehot)
                else:
                    box_loss = box_loss + pred.sum() * 0.0
            obj_loss = obj_loss + self.balance[level] * F.binary_cross_entropy_with_logits(
                pred[..., 4], obj_target
            )
        parts = {
            "box": box_loss * self.gains["box"],
            "obj": obj_loss * self.gains["obj"],
            "cls": cls_loss * self.gains["cls"],
        }
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
