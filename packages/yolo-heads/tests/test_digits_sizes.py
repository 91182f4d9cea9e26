"""The digits generator's size-spread layout (issue 13) and the demo layout left as it was."""

from __future__ import annotations

import json

import pytest

from yolo_heads.data import SIZE_SPREAD, make_digits_detection
from yolo_heads.evaluate import evaluate_coco

# Recorded from the generator before size_sampling existed (commit 4a67199), same arguments:
# the demo's data, and so its numbers, must not move.
DEMO_BOXES = [
    [7, 7, 13, 19], [18, 53, 9, 11], [25, 10, 12, 16], [37, 11, 14, 17], [29, 38, 20, 23],
    [48, 1, 11, 17], [13, 25, 10, 12], [27, 31, 19, 24], [46, 40, 11, 15], [22, 19, 18, 22],
    [24, 34, 9, 11], [5, 0, 19, 25], [15, 30, 10, 12], [47, 37, 7, 11],
]  # fmt: skip


def test_default_layout_is_unchanged(tmp_path):
    ann = make_digits_detection(
        tmp_path, num_images=6, seed=3, image_size=64, digit_size=(10, 25), progress=False
    )
    assert [a["bbox"] for a in json.loads(ann.read_text())["annotations"]] == DEMO_BOXES


def test_size_spread_defines_every_coco_size_range(tmp_path):
    ann = make_digits_detection(tmp_path, num_images=40, seed=0, progress=False, **SIZE_SPREAD)
    coco = json.loads(ann.read_text())
    areas = [a["area"] for a in coco["annotations"]]
    small = sum(a < 32**2 for a in areas)
    large = sum(a > 96**2 for a in areas)
    assert small and large and len(areas) - small - large
    # Ground truth as detections: pycocotools scores 1.0 in every size range, none is -1.
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in coco["annotations"]
    ]
    metrics = evaluate_coco(ann, detections)
    for key in ("APs", "APm", "APl"):
        assert metrics[key] == pytest.approx(1.0), key
    demo = make_digits_detection(tmp_path / "demo", 10, image_size=64, digit_size=(10, 25),
                                 progress=False)  # fmt: skip
    demo_coco = json.loads(demo.read_text())
    demo_detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in demo_coco["annotations"]
    ]
    demo_metrics = evaluate_coco(demo, demo_detections)
    assert demo_metrics["APm"] == demo_metrics["APl"] == -1.0


def test_bad_size_sampling_is_named(tmp_path):
    with pytest.raises(ValueError, match="size_sampling='gauss'"):
        make_digits_detection(tmp_path, num_images=1, size_sampling="gauss", progress=False)
