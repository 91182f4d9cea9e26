"""Bad input fails with a message that names the argument (or item), the value and what is
valid, instead of a silent wrong result or a raw low-level error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_heads import YOLODetector, evaluate_coco
from yolo_heads.data import CocoDetection, letterbox

GT = {
    "images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.png"}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
         "iscrowd": 0},
    ],
}  # fmt: skip


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    return path


def _det(**change):
    return {"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9, **change}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_det(score=float("nan")), r"detections\[1\] has score=nan"),
        (_det(bbox=[4, float("nan"), 20, 20]), r"detections\[1\] has bbox=.*finite"),
        (_det(category_id=7), r"detections\[1\] has category_id=7; .* \[1, 2\]"),
        (_det(bbox=[4, 4, -3, 20]), r"detections\[1\] .* negative width"),
        (_det(image_id=99), r"detections\[1\] has image_id=99"),
        ({"image_id": 1, "bbox": [1, 1, 2, 2], "score": 1.0}, r"detections\[1\] lacks"),
    ],
)
def test_evaluate_coco_checks_every_detection(gt_file, bad, message):
    # the bad detection sits in the middle: neither the first nor the last one
    with pytest.raises(ValueError, match=message):
        evaluate_coco(gt_file, [_det(), bad, _det(score=0.5)])


def test_evaluate_coco_good_detections_still_score(gt_file):
    assert evaluate_coco(gt_file, [_det(), _det(score=0.5)])["AP"] == pytest.approx(1.0)


def _write_coco(tmp_path, annotations, images=None):
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    data = dict(GT, annotations=annotations, images=images or GT["images"])
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_dataset_refuses_negative_boxes_and_says_it_skips_empty_ones(tmp_path):
    ann = {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0}
    with pytest.raises(ValueError, match=r"id=5 has bbox=\[4, 4, -2, 10\] with a negative"):
        CocoDetection(_write_coco(tmp_path, [dict(ann, bbox=[4, 4, -2, 10])]), image_size=64)
    with pytest.warns(UserWarning, match=r"1 annotations with zero width or height skipped"):
        ds = CocoDetection(_write_coco(tmp_path, [dict(ann, bbox=[4, 4, 0, 10])]), image_size=64)
    assert len(ds[0][1]["boxes"]) == 0


def test_coco_dataset_image_without_file_name(tmp_path):
    images = [{"id": 1, "width": 64, "height": 64}]
    with pytest.raises(ValueError, match=r"images\[0\] has \['height', 'id', 'width'\]"):
        CocoDetection(_write_coco(tmp_path, [], images=images), image_size=64)


@pytest.mark.parametrize("size", [0, -32, 2.5, True])
def test_letterbox_size(size):
    with pytest.raises(ValueError, match="size="):
        letterbox(np.zeros((8, 8, 3), np.uint8), size)


def test_letterbox_empty_image():
    with pytest.raises(ValueError, match=r"image has shape \(0, 8, 3\)"):
        letterbox(np.zeros((0, 8, 3), np.uint8), 32)


@pytest.mark.parametrize("name", ["neck_channels", "neck_depth"])
def test_detector_widths(name, tiny):
    kwargs = {k: v for k, v in tiny.items() if k != name}
    with pytest.raises(ValueError, match=f"{name}=0 is not valid"):
        YOLODetector(num_classes=3, **{name: 0}, **kwargs)
