from __future__ import annotations

import pytest
import torch
import torchvision

from yolo_heads import batched_nms, box_iou, complete_iou, nms
from yolo_heads.boxes import box_to_distance, distance_to_box, make_anchor_points


def random_boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat((xy, xy + wh), dim=1)


def test_box_iou_matches_torchvision():
    a, b = random_boxes(20, 0), random_boxes(30, 1)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b), atol=1e-6, rtol=0)


def test_complete_iou_matches_torchvision_ciou_loss():
    a, b = random_boxes(50, 2), random_boxes(50, 3)
    expected = 1 - torchvision.ops.complete_box_iou_loss(a, b, reduction="none")
    torch.testing.assert_close(complete_iou(a, b), expected, atol=1e-4, rtol=0)


def test_complete_iou_penalises_centre_distance_beyond_iou():
    base = torch.tensor([[0.0, 0, 10, 10]])
    far = torch.tensor([[30.0, 0, 40, 10]])
    near = torch.tensor([[12.0, 0, 22, 10]])
    # Both have IoU 0; CIoU ranks the nearer box higher.
    assert complete_iou(base, near) > complete_iou(base, far)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(seed, threshold):
    boxes = random_boxes(300, seed)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(seed + 10))
    ours = nms(boxes, scores, threshold)
    theirs = torchvision.ops.nms(boxes, scores, threshold)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_nms_matches_torchvision(seed):
    boxes = random_boxes(400, seed)
    g = torch.Generator().manual_seed(seed + 20)
    scores = torch.rand(400, generator=g)
    classes = torch.randint(0, 5, (400,), generator=g)
    ours = batched_nms(boxes, scores, classes, 0.5)
    theirs = torchvision.ops.batched_nms(boxes, scores, classes, 0.5)
    assert ours.tolist() == theirs.tolist()


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_distance_round_trip():
    points, _ = make_anchor_points([(4, 4)], [8])
    boxes = torch.cat((points - 3, points + 5), dim=1)
    dist = box_to_distance(boxes, points, max_distance=100)
    torch.testing.assert_close(distance_to_box(dist, points), boxes)


def test_anchor_points_cover_levels():
    points, strides = make_anchor_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32])
    assert points.shape == (84, 2) and strides.shape == (84, 1)
    assert points[-1].tolist() == [48.0, 48.0]
