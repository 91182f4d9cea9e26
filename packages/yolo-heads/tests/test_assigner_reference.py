"""The task-aligned assigner against the YOLOv8 / YOLOv9 assignment written out per box.

Reference (TOOD eq. 10 with Ultralytics' choices: alpha 0.5, beta 6, top 10, CIoU clamped at
0, box sides under the middle stride widened to it when choosing candidate points), computed
with plain loops and torchvision's ``complete_box_iou``, never with the code under test.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou

from yolo_heads import TaskAlignedAssigner
from yolo_heads.boxes import make_anchor_points


def reference(scores, preds, points, labels, gts, mask, topk, alpha, beta, min_side, ciou):
    b, a, c = scores.shape
    out_scores = torch.zeros(b, a, c, dtype=torch.float64)
    out_fg = torch.zeros(b, a, dtype=torch.bool)
    out_gt = torch.zeros(b, a, dtype=torch.long)
    for i in range(b):
        boxes = [j for j in range(gts.shape[1]) if mask[i, j]]
        cand, overlap, align, positive = {}, {}, {}, {}
        for j in boxes:
            x1, y1, x2, y2 = gts[i, j].tolist()
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            hw, hh = max((x2 - x1) / 2, min_side / 2), max((y2 - y1) / 2, min_side / 2)
            pair = complete_box_iou if ciou else box_iou
            for k in range(a):
                px, py = points[k].tolist()
                if min(px - (cx - hw), py - (cy - hh), cx + hw - px, cy + hh - py) > 1e-9:
                    cand[j, k] = True
                    o = float(pair(gts[i, j][None].double(), preds[i, k][None].double()))
                    overlap[j, k] = max(o, 0.0)
                    align[j, k] = float(scores[i, k, labels[i, j]]) ** alpha * overlap[j, k] ** beta
            ranked = sorted((k for k in range(a) if (j, k) in cand), key=lambda k: -align[j, k])
            for k in ranked[:topk]:
                if align[j, k] > 0:
                    positive.setdefault(k, []).append(j)
        final: dict[int, int] = {}
        for k, owners in positive.items():
            if len(owners) == 1:
                final[k] = owners[0]
            else:  # the box it overlaps most among those it is a candidate of
                final[k] = max((j for j in boxes if (j, k) in cand), key=lambda j: overlap[j, k])
        for j in boxes:
            mine = [k for k, owner in final.items() if owner == j]
            if not mine:
                continue
            best_align = max(align[j, k] for k in mine)
            best_overlap = max(overlap[j, k] for k in mine)
            for k in mine:
                out_fg[i, k] = True
                out_gt[i, k] = j
                out_scores[i, k, labels[i, j]] = align[j, k] * best_overlap / (best_align + 1e-9)
    return out_fg, out_gt, out_scores


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    points, _ = make_anchor_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32])  # a 64 px image
    b, m, c = 3, 5, 4
    centre = torch.rand(b, m, 2, generator=g) * 56 + 4
    side = torch.exp(torch.rand(b, m, 2, generator=g) * 2.3) * 4  # 4-40 px, many under a cell
    gts = torch.cat((centre - side / 2, centre + side / 2), -1).clamp(0, 64)
    labels = torch.randint(0, c, (b, m), generator=g)
    mask = torch.rand(b, m, generator=g) > 0.25
    mask[:, 0] = True
    gts = gts * mask[..., None]  # padded rows are zero boxes, as pad_targets writes them
    near = gts[:, torch.randint(0, m, (points.shape[0],), generator=g)]
    preds = near + torch.randn(b, points.shape[0], 4, generator=g) * 4
    preds = torch.cat((preds[..., :2], torch.maximum(preds[..., 2:], preds[..., :2] + 1)), -1)
    scores = torch.rand(b, points.shape[0], c, generator=g)
    return scores, preds, points, labels, gts, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("iou", "min_side", "topk"), [("ciou", 16.0, 10), ("iou", 0.0, 10), ("ciou", 16.0, 3)]
)
def test_assigner_matches_written_out_reference(seed, iou, min_side, topk):
    scores, preds, points, labels, gts, mask = _inputs(seed)
    out = TaskAlignedAssigner(topk=topk, iou=iou, min_side=min_side)(
        scores, preds, points, labels, gts, mask
    )
    fg, gt_index, target = reference(
        scores, preds, points, labels, gts, mask, topk, 0.5, 6.0, min_side, iou == "ciou"
    )
    assert fg.any()
    assert torch.equal(out.fg_mask, fg)
    assert torch.equal(out.gt_index[fg], gt_index[fg])
    torch.testing.assert_close(out.scores.double(), target, atol=1e-6, rtol=1e-5)
    assert torch.equal(out.boxes[fg], gts[torch.arange(3)[:, None].expand_as(fg)[fg], gt_index[fg]])


def test_small_box_between_cell_centres_gets_candidates_only_with_the_floor():
    points, _ = make_anchor_points([(8, 8)], [8])  # centres at 4, 12, ...
    gt = torch.tensor([[[5.0, 5.0, 11.0, 11.0]]])  # 6 px, between the centres 4 and 12
    args = (torch.full((1, 64, 1), 0.5), gt.expand(1, 64, 4), points, torch.tensor([[0]]), gt)
    mask = torch.tensor([[True]])
    assert not TaskAlignedAssigner(min_side=0)(*args, mask).fg_mask.any()
    floored = TaskAlignedAssigner(min_side=16)(*args, mask).fg_mask[0]
    # widened to [0, 16] about its centre 8: the four centres 4 and 12 in x and y
    expected = [(k % 8) in (0, 1) and (k // 8) in (0, 1) for k in range(64)]
    assert floored.tolist() == expected


def test_bad_assigner_options_are_named():
    with pytest.raises(ValueError, match="iou='giou'"):
        TaskAlignedAssigner(iou="giou")
    with pytest.raises(ValueError, match="min_side=-1"):
        TaskAlignedAssigner(min_side=-1)
