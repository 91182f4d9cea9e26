from __future__ import annotations

import torch

from yolo_heads import TaskAlignedAssigner, distribution_focal_loss
from yolo_heads.boxes import make_anchor_points


def test_assigner_picks_anchors_inside_box_and_labels_them():
    points, _ = make_anchor_points([(4, 4)], [8])  # centres 4, 12, 20, 28
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    pred_boxes = gt.expand(1, 16, 4).clone()
    scores = torch.full((1, 16, 3), 0.5)
    out = TaskAlignedAssigner(topk=10)(
        scores, pred_boxes, points, torch.tensor([[2]]), gt, torch.tensor([[True]])
    )
    inside = (points[:, 0] < 16) & (points[:, 1] < 16)
    assert out.fg_mask[0].tolist() == inside.tolist()
    assert (out.labels[0][inside] == 2).all()
    # Soft targets: the best aligned anchor gets the box's best IoU (here 1.0), on class 2 only.
    assert torch.isclose(out.scores[0, inside, 2].max(), torch.tensor(1.0))
    assert out.scores[0, :, :2].abs().sum() == 0


def test_assigner_topk_limits_positives():
    points, _ = make_anchor_points([(4, 4)], [8])
    gt = torch.tensor([[[0.0, 0.0, 32.0, 32.0]]])
    out = TaskAlignedAssigner(topk=3)(
        torch.rand(1, 16, 2),
        gt.expand(1, 16, 4),
        points,
        torch.tensor([[0]]),
        gt,
        torch.tensor([[True]]),
    )
    assert int(out.fg_mask.sum()) == 3


def test_assigner_without_ground_truth():
    points, _ = make_anchor_points([(2, 2)], [8])
    out = TaskAlignedAssigner()(
        torch.rand(2, 4, 3),
        torch.rand(2, 4, 4),
        points,
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.bool),
    )
    assert not out.fg_mask.any() and out.scores.sum() == 0


def test_assigner_resolves_shared_anchor_by_iou():
    points = torch.tensor([[8.0, 8.0]])
    gts = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 40.0, 40.0]]])
    pred = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    out = TaskAlignedAssigner()(
        torch.full((1, 1, 2), 0.5),
        pred,
        points,
        torch.tensor([[0, 1]]),
        gts,
        torch.tensor([[True, True]]),
    )
    assert out.fg_mask.item() and out.gt_index.item() == 0 and out.labels.item() == 0


def test_dfl_is_lowest_at_target_and_interpolates():
    target = torch.tensor([[2.25, 5.0, 0.5, 9.75]])
    left, right = target.floor().long(), target.floor().long() + 1
    logits = torch.full((1, 4, 16), -30.0)
    for side in range(4):
        # The ideal distribution puts (right - t) on the left bin and (t - left) on the right.
        w = target[0, side] - left[0, side]
        logits[0, side, left[0, side]] = torch.log(1 - w).clamp(min=-30)
        logits[0, side, right[0, side]] = torch.log(w).clamp(min=-30)
    best = distribution_focal_loss(logits, target)
    worse = distribution_focal_loss(logits.roll(1, dims=-1), target)
    assert (best < worse).all()
    # Expectation of the ideal distribution recovers the target.
    expect = logits.softmax(-1) @ torch.arange(16.0)
    torch.testing.assert_close(expect, target, atol=1e-4, rtol=0)


def test_assigner_ignores_padded_boxes_against_collapsed_predictions():
    # Image 0 has one box, image 1 none: its row is padding (zero area, mask False). A collapsed
    # prediction (zero area) against the padding is IoU 0 / 0; the targets must stay finite.
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])
    pred_boxes = torch.tensor([[[0.0, 0, 16, 8]] * 4, [[0.0, 0, 0, 0]] * 4])
    out = TaskAlignedAssigner(topk=2)(
        torch.full((2, 4, 2), 0.5),
        pred_boxes,
        points,
        torch.tensor([[1], [0]]),
        torch.tensor([[[0.0, 0, 16, 8]], [[0.0, 0, 0, 0]]]),
        torch.tensor([[True], [False]]),
    )
    assert torch.isfinite(out.scores).all() and torch.isfinite(out.boxes).all()
    assert out.fg_mask.tolist() == [[True, True, False, False], [False] * 4]
