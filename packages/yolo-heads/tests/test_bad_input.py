"""Bad input fails with a message that names the argument (or item), the value and what is
valid, instead of a silent wrong result or a raw low-level error."""

from __future__ import annotations

import json
from pathlib import Path

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


# --- issue 25: bad input that got a raw error or nothing -------------------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def corrupt_digits(tmp_path):
    """A 4-image digits set (COCO JSON and a YOLO copy) whose second image is truncated."""
    from yolo_heads.data import make_digits_detection, write_yolo_txt

    ann = make_digits_detection(tmp_path / "coco", num_images=4, image_size=64, progress=False)
    data_yaml = write_yolo_txt(ann, tmp_path / "yolo")
    name = json.loads(ann.read_text())["images"][1]["file_name"]
    bad = [p for p in (tmp_path / "coco").rglob(Path(name).name)]
    bad += list((tmp_path / "yolo").rglob(Path(name).stem + ".*"))
    bad = [p for p in bad if p.suffix == ".png"]
    assert len(bad) == 2
    for path in bad:
        _truncate(path)
    return ann, data_yaml, Path(name).name


@pytest.mark.parametrize("layout", ["coco", "yolo"])
def test_truncated_image_is_named_and_can_be_skipped(corrupt_digits, layout):
    from yolo_heads.data import create_dataset

    ann, data_yaml, name = corrupt_digits
    source = ann if layout == "coco" else data_yaml
    ds = create_dataset(source, image_size=64)
    with pytest.raises(ValueError, match=rf"{name}.* cannot be read.*skip_bad_images"):
        ds[1]
    with pytest.warns(UserWarning, match=rf"1 unreadable image\(s\) of 4 skipped.*{name}"):
        ds = create_dataset(source, image_size=64, skip_bad_images=True)
    assert len(ds) == 3 and name not in {r.path.name for r in ds.records}
    assert all(ds[i][0].shape == (3, 64, 64) for i in range(3))


def test_train_cli_names_a_truncated_image(corrupt_digits, tmp_path, capsys):
    from yolo_heads.cli import main

    ann, _, name = corrupt_digits
    tiny = ["model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
            "model.neck_channels=16", "schedule.batch_size=4", "schedule.amp=false",
            "schedule.epochs=1", f"data.train={ann}", f"out={tmp_path / 'run'}"]  # fmt: skip
    assert main(["train", "--no-progress", "--no-plots", *tiny]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "data.skip_bad_images=true" in err
    with pytest.warns(UserWarning, match="1 unreadable image"):
        assert (
            main(["train", "--no-progress", "--no-plots", *tiny, "data.skip_bad_images=true"]) == 0
        )


def test_coco_dataset_annotation_file_that_is_not_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"ann_file=.*ann\.json.* is not valid JSON"):
        CocoDetection(path, image_size=64)


def test_coco_dataset_refuses_nan_boxes_as_the_yolo_reader_does(tmp_path):
    ann = {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0}
    with pytest.raises(ValueError, match=r"id=5 has bbox=\[4, nan, 10, 10\].*finite"):
        CocoDetection(
            _write_coco(tmp_path, [dict(ann, bbox=[4, float("nan"), 10, 10])]), image_size=64
        )


@pytest.mark.parametrize(
    ("bbox", "message"), [([4, 4, -20, 20], "negative width"), ([4, 4, float("nan"), 20], "finite")]
)
def test_evaluate_coco_checks_the_ground_truth(tmp_path, bbox, message):
    gt = dict(GT, annotations=[GT["annotations"][0], dict(GT["annotations"][0], id=2, bbox=bbox)])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=rf"ann_file=.*annotation id=2 has bbox=.*{message}"):
        evaluate_coco(path, [_det()])


def test_evaluate_coco_ground_truth_that_is_not_json(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match=r"ann_file=.*gt\.json.* is not valid JSON"):
        evaluate_coco(path, [_det()])


def test_detector_on_a_module_that_is_no_backbone():
    import torch

    with pytest.raises(ValueError, match=r"backbone=Linear .*list of feature maps"):
        YOLODetector(num_classes=3, backbone=torch.nn.Linear(4, 4))


def test_save_checkpoint_metadata_that_is_not_json(tmp_path, tiny):
    import torch

    from yolo_heads import save_checkpoint

    model = YOLODetector(num_classes=3, **tiny)
    with pytest.raises(ValueError, match=r"metadata\['t'\]=tensor.*JSON"):
        save_checkpoint(model, tmp_path / "ckpt", metadata={"epoch": 1, "t": torch.ones(2)})
    assert not (tmp_path / "ckpt").exists()
