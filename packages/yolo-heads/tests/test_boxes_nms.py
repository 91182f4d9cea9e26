from __future__ import annotations

import pytest
import torch
import torchvision

from yolo_heads import batched_nms, box_iou, complete_iou, nms, postprocess
from yolo_heads.boxes import (
    box_to_distance,
    clip_boxes,
    cxcywh_to_xyxy,
    distance_to_box,
    make_anchor_points,
    xyxy_to_xywh,
)


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
    torch.testing.assert_close(complete_iou(a, b), expected, atol=1e-6, rtol=0)
    # The pairwise form gives the same numbers on the diagonal.
    pairwise = torchvision.ops.complete_box_iou(a, b).diagonal()
    torch.testing.assert_close(complete_iou(a, b), pairwise, atol=1e-6, rtol=0)


def test_complete_iou_is_finite_and_differentiable_for_collapsed_boxes():
    pred = torch.tensor([[5.0, 5, 5, 5], [0, 0, 4, 0], [500, 500, 500, 500]], requires_grad=True)
    target = torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4], [490, 490, 510, 510]])
    ciou = complete_iou(pred, target)
    ciou.sum().backward()
    assert torch.isfinite(ciou).all() and torch.isfinite(pred.grad).all()


def test_box_conversions_and_clipping():
    xyxy = random_boxes(10, 4)
    x1, y1, x2, y2 = xyxy.unbind(1)
    expected_xywh = torch.stack((x1, y1, x2 - x1, y2 - y1), 1)
    torch.testing.assert_close(xyxy_to_xywh(xyxy), expected_xywh)
    cxcywh = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), 1)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)
    clipped = clip_boxes(xyxy, (40, 60))
    assert clipped[:, 0::2].max() <= 60 and clipped[:, 1::2].max() <= 40 and clipped.min() >= 0


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
    assert (
        batched_nms(
            torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5
        ).numel()
        == 0
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b, s, c: nms(b[:, :3], s, 0.5), r"boxes has shape \(10, 3\)"),
        (lambda b, s, c: nms(b, s[:9], 0.5), r"scores has shape \(9,\); expected \[10\]"),
        (lambda b, s, c: nms(b, s, 1.5), r"iou_threshold=1.5 .*\[0, 1\]"),
        (lambda b, s, c: nms(b, s, -0.1), r"iou_threshold=-0.1"),
        (
            lambda b, s, c: nms(b.index_fill(0, torch.tensor([3]), float("nan")), s, 0.5),
            r"boxes holds NaN \(rows \[3\]",
        ),
        (
            lambda b, s, c: nms(b, s.index_fill(0, torch.tensor([2]), float("nan")), 0.5),
            r"scores holds NaN \(entries \[2\]",
        ),
        (
            lambda b, s, c: batched_nms(b, s, c[:4], 0.5),
            r"classes has shape \(4,\); expected \[10\]",
        ),
        (lambda b, s, c: batched_nms(b, s, c.float(), 0.5), r"classes has dtype torch.float32"),
    ],
)
def test_nms_rejects_bad_inputs(call, match):
    boxes, scores = random_boxes(10, 5), torch.rand(10)
    with pytest.raises(ValueError, match=match):
        call(boxes, scores, torch.zeros(10, dtype=torch.long))


@pytest.mark.parametrize("multi_label", [True, False])
def test_postprocess_matches_torchvision_pipeline(multi_label):
    g = torch.Generator().manual_seed(7)
    boxes = torch.stack([random_boxes(500, s, size=60.0) for s in (8, 9)])
    scores = torch.rand(2, 500, 4, generator=g)
    out = postprocess(
        boxes, scores, conf=0.3, iou=0.5, max_det=50, multi_label=multi_label, image_size=(64, 80)
    )
    for b in range(2):
        # Reference written out: filter, clip, torchvision's batched NMS, keep the best 50.
        if multi_label:
            idx, cls = (scores[b] > 0.3).nonzero(as_tuple=True)
            sc = scores[b][idx, cls]
        else:
            sc, cls = scores[b].max(-1)
            idx = (sc > 0.3).nonzero(as_tuple=True)[0]
            sc, cls = sc[idx], cls[idx]
        bx = torchvision.ops.clip_boxes_to_image(boxes[b][idx], (64, 80))
        keep = torchvision.ops.batched_nms(bx, sc, cls, 0.5)[:50]
        torch.testing.assert_close(out[b]["boxes"], bx[keep], atol=0, rtol=0)
        torch.testing.assert_close(out[b]["scores"], sc[keep], atol=0, rtol=0)
        assert out[b]["labels"].tolist() == cls[keep].tolist()


def test_distance_round_trip():
    points, _ = make_anchor_points([(4, 4)], [8])
    boxes = torch.cat((points - 3, points + 5), dim=1)
    dist = box_to_distance(boxes, points, max_distance=100)
    torch.testing.assert_close(distance_to_box(dist, points), boxes)


def test_anchor_points_cover_levels():
    points, strides = make_anchor_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32])
    assert points.shape == (84, 2) and strides.shape == (84, 1)
    assert points[-1].tolist() == [48.0, 48.0]


def test_postprocess_builds_no_pairwise_iou_matrix():
    from torch.profiler import ProfilerActivity, profile

    n = 5000  # an N x N float IoU matrix is 95 MiB, its boolean overlap mask 24 MiB
    xy = torch.rand(1, n, 2, generator=torch.Generator().manual_seed(0)) * 600
    boxes, scores = torch.cat((xy, xy + 30), -1), torch.full((1, n, 1), 0.9)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        postprocess(boxes, scores, conf=0.1, iou=0.5, max_candidates=n)
    largest = max(event.cpu_memory_usage for event in prof.key_averages())
    assert 0 < largest < 4 * 2**20, f"an operation allocated {largest / 2**20:.1f} MiB"
