"""The anchor-based (YOLOv5 / YOLOR / YOLOv7) loss against its rules written out target by
target: anchor matching by the width/height ratio, the own cell plus the two nearest
neighbours, CIoU box loss (torchvision's), CIoU objectness targets, balanced levels."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import complete_box_iou_loss

from yolo_heads.heads import AnchorBasedHead

ANCHORS = [
    [[6, 8], [10, 14], [14, 10]],
    [[16, 16], [20, 28], [28, 20]],
    [[32, 32], [40, 52], [52, 40]],
]
STRIDES = (8, 16, 32)


def bce_with_logits(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits, the numerically stable form written out."""
    return (x.clamp(min=0) - x * z + torch.log1p(torch.exp(-x.abs()))).mean()


def xyxy(cx: float, cy: float, w, h) -> torch.Tensor:
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def reference_loss(outputs, targets, num_classes, gains, anchor_t=4.0, balance=(4.0, 1.0, 0.4)):
    box = obj = cls = torch.zeros((), dtype=torch.float64)
    for level, pred in enumerate(outputs):
        pred = pred.double()
        _, na, h, w, _ = pred.shape
        stride = STRIDES[level]
        obj_target = torch.zeros(pred.shape[:4], dtype=torch.float64)
        ious, cls_terms = [], []
        for b, target in enumerate(targets):
            for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                gx, gy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
                gw, gh = (x2 - x1) / stride, (y2 - y1) / stride
                for a in range(na):
                    aw, ah = ANCHORS[level][a][0] / stride, ANCHORS[level][a][1] / stride
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= anchor_t:
                        continue  # this anchor's shape is too far from the box's
                    ci, cj = math.floor(gx), math.floor(gy)
                    cells = [(ci, cj)]
                    if gx % 1 < 0.5 and gx > 1:
                        cells.append((ci - 1, cj))  # left neighbour is nearer than the right
                    if gy % 1 < 0.5 and gy > 1:
                        cells.append((ci, cj - 1))
                    if gx % 1 > 0.5 and w - gx > 1:
                        cells.append((ci + 1, cj))
                    if gy % 1 > 0.5 and h - gy > 1:
                        cells.append((ci, cj + 1))
                    for i, j in cells:
                        p = pred[b, a, j, i]
                        px, py = (p[:2].sigmoid() * 2 - 0.5).unbind()
                        pw, ph = ((p[2:4].sigmoid() * 2) ** 2 * torch.tensor([aw, ah])).unbind()
                        truth = xyxy(gx - i, gy - j, torch.tensor(gw), torch.tensor(gh)).double()
                        ciou = 1 - complete_box_iou_loss(xyxy(px, py, pw, ph), truth)
                        ious.append(ciou)
                        obj_target[b, a, j, i] = ciou.detach().clamp(min=0)
                        onehot = torch.zeros(num_classes, dtype=torch.float64)
                        onehot[label] = 1
                        cls_terms.append((p[5:], onehot))
        if ious:
            box = box + (1 - torch.stack(ious)).mean()
            logits = torch.stack([c[0] for c in cls_terms])
            cls = cls + bce_with_logits(logits, torch.stack([c[1] for c in cls_terms]))
        obj = obj + balance[level] * bce_with_logits(pred[..., 4], obj_target)
    return {"box": box * gains[0], "obj": obj * gains[1], "cls": cls * gains[2]}


@pytest.mark.parametrize("seed", [0, 1])
def test_anchor_based_loss_matches_its_rules_written_out(seed):
    torch.manual_seed(seed)
    num_classes = 4
    head = AnchorBasedHead([8, 8, 8], num_classes=num_classes, anchors=ANCHORS)
    size = 128
    outputs = [torch.randn(2, 3, size // s, size // s, 5 + num_classes) * 0.7 for s in STRIDES]
    # one box per image: no two matches write the same objectness cell; centres off the .0
    # and .5 grid lines so the neighbour choice is unambiguous at every stride
    targets = [
        {"boxes": torch.tensor([[13.3, 21.1, 41.7, 60.3]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[70.2, 35.9, 90.6, 52.3]]), "labels": torch.tensor([0])},
    ]
    total, parts = head.loss_fn()(outputs, targets)
    expected = reference_loss(outputs, targets, num_classes, gains=(0.05, 1.0, 0.5))
    assert set(parts) == set(expected)
    for key in expected:
        assert float(expected[key]) > 0
        torch.testing.assert_close(parts[key].double(), expected[key], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(total.double(), sum(expected.values()), rtol=1e-5, atol=1e-7)


def test_anchor_based_loss_of_background_only_is_objectness_alone():
    torch.manual_seed(0)
    head = AnchorBasedHead([8, 8, 8], num_classes=3, anchors=ANCHORS)
    outputs = [torch.randn(1, 3, 64 // s, 64 // s, 8) for s in STRIDES]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    _, parts = head.loss_fn()(outputs, empty)
    expected = sum(
        b * bce_with_logits(o[..., 4].double(), torch.zeros(o.shape[:4], dtype=torch.float64))
        for b, o in zip((4.0, 1.0, 0.4), outputs)
    )
    assert float(parts["box"]) == 0 and float(parts["cls"]) == 0
    torch.testing.assert_close(parts["obj"].double(), expected, rtol=1e-5, atol=1e-7)
