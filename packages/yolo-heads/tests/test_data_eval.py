from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from yolo_heads import evaluate_coco
from yolo_heads.data import (
    CocoDetection,
    boxes_to_canvas,
    boxes_to_original,
    letterbox,
    make_digits_detection,
)


def test_digits_set_is_valid_coco(digits):
    train, _ = digits
    data = json.loads(train.read_text())
    assert len(data["images"]) == 8
    assert [c["name"] for c in data["categories"]] == [str(d) for d in range(10)]
    assert data["annotations"], "every canvas holds at least one digit"
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64 and w > 0 and h > 0
        assert 1 <= ann["category_id"] <= 10
    image = np.asarray(Image.open(train.parent / "train" / data["images"][0]["file_name"]))
    assert image.shape == (64, 64, 3)
    # The ink inside a box is brighter than the background: the boxes sit on real digits.
    first = next(a for a in data["annotations"] if a["image_id"] == data["images"][0]["id"])
    x, y, w, h = first["bbox"]
    assert image[y : y + h, x : x + w].max() > image.mean() + 40


def test_digits_generation_is_deterministic(tmp_path):
    a = make_digits_detection(
        tmp_path / "a",
        num_images=3,
        seed=5,
        image_size=64,
        digit_size=(16, 24),
        progress=False,
    )
    b = make_digits_detection(
        tmp_path / "b",
        num_images=3,
        seed=5,
        image_size=64,
        digit_size=(16, 24),
        progress=False,
    )
    assert json.loads(a.read_text())["annotations"] == json.loads(b.read_text())["annotations"]
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left behind"


def test_digits_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images=0"):
        make_digits_detection(tmp_path, num_images=0)
    with pytest.raises(ValueError, match="digit_size"):
        make_digits_detection(tmp_path, num_images=1, image_size=32, digit_size=(16, 64))
    with pytest.raises(ValueError, match="split='test'"):
        make_digits_detection(tmp_path, num_images=1, split="test")


def test_letterbox_round_trip():
    canvas, meta = letterbox(np.zeros((40, 80, 3), np.uint8), 64)
    assert canvas.shape == (64, 64, 3) and meta.scale == 0.8 and meta.pad_y == 16
    boxes = torch.tensor([[10.0, 5.0, 30.0, 35.0]])
    torch.testing.assert_close(boxes_to_original(boxes_to_canvas(boxes, meta), meta), boxes)


def test_dataset_items(digits):
    train, _ = digits
    ds = CocoDetection(train, image_size=64)
    raw = json.loads(train.read_text())
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
    n = sum(a["image_id"] == ds.images[0]["id"] for a in raw["annotations"])
    assert len(target["boxes"]) == len(target["labels"]) == n
    aug = CocoDetection(train, image_size=64, augment=True, seed=3)
    for i in range(len(aug)):
        _, t = aug[i]
        b = t["boxes"]
        assert ((b >= 0) & (b <= 64)).all() and (b[:, 2] > b[:, 0]).all()


def test_dataset_bad_input(tmp_path, digits):
    with pytest.raises(FileNotFoundError, match="ann_file"):
        CocoDetection(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="image_size=100"):
        CocoDetection(digits[0], image_size=100)
    data = json.loads(digits[0].read_text())
    data["annotations"][0]["category_id"] = 42
    bad = tmp_path / "bad_category.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category_id=42"):
        CocoDetection(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="empty"):
        CocoDetection(empty)


def gt_as_detections(ann_file):
    data = json.loads(ann_file.read_text())
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in data["annotations"]
    ]


def test_ground_truth_scores_ap_one(digits):
    train, _ = digits
    metrics = evaluate_coco(train, gt_as_detections(train))
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)


def test_wrong_or_shifted_detections_score_lower(digits):
    train, _ = digits
    dets = gt_as_detections(train)
    shifted = [dict(d, bbox=[d["bbox"][0] + d["bbox"][2] * 0.3, *d["bbox"][1:]]) for d in dets]
    metrics = evaluate_coco(train, shifted)
    assert metrics["AP"] < 0.7 and metrics["AP50"] > 0.5  # IoU ~0.54: counts at .50, not above
    wrong = [dict(d, category_id=d["category_id"] % 10 + 1) for d in dets]
    assert evaluate_coco(train, wrong)["AP"] == 0.0
    assert evaluate_coco(train, [])["AP"] == 0.0


def test_evaluate_coco_bad_input(digits, tmp_path):
    train, _ = digits
    with pytest.raises(ValueError, match="lacks"):
        evaluate_coco(train, [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="not in ann_file"):
        evaluate_coco(
            train, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 1.0}]
        )
    with pytest.raises(FileNotFoundError):
        evaluate_coco(tmp_path / "nope.json", [])
