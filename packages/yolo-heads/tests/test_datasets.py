"""COCO JSON and YOLO txt layouts through one interface; stateless, keyed augmentation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from yolo_heads import evaluate_coco
from yolo_heads.data import (
    CocoDetection,
    YoloTxtDetection,
    collate,
    create_dataset,
    write_yolo_txt,
)
from yolo_heads.evaluate import predictions_to_coco


@pytest.fixture(scope="module")
def yolo_copy(digits, tmp_path_factory):
    train, val = digits
    return write_yolo_txt({"train": train, "val": val}, tmp_path_factory.mktemp("yolo") / "digits")


def test_writer_follows_ultralytics_layout(digits, yolo_copy):
    config = yaml.safe_load(yolo_copy.read_text())
    assert config["path"] == str(yolo_copy.parent) and os.path.isabs(config["path"])
    assert config["train"] == "images/train" and config["val"] == "images/val"
    assert config["names"] == {i: str(i) for i in range(10)}
    coco = json.loads(digits[0].read_text())
    assert len(list((yolo_copy.parent / "images" / "train").glob("*.png"))) == len(coco["images"])
    # Label lines written out from the COCO boxes by the YOLO formula (class cx cy w h, normalised).
    first = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    label = yolo_copy.parent / "labels" / "train" / first["file_name"].replace(".png", ".txt")
    rows = np.loadtxt(label, ndmin=2)
    expected = [
        [a["category_id"] - 1, (x + w / 2) / 64, (y + h / 2) / 64, w / 64, h / 64]
        for a in anns
        for x, y, w, h in [a["bbox"]]
    ]
    np.testing.assert_allclose(rows, expected, atol=1e-7)
    assert not list(yolo_copy.parent.parent.glob(".*.tmp")), "no temporary folder left behind"


@pytest.mark.parametrize("augment", [False, True])
def test_yolo_copy_gives_the_coco_items(digits, yolo_copy, augment):
    coco = create_dataset(digits[0], image_size=64, augment=augment, seed=4)
    yolo = create_dataset(yolo_copy, split="train", image_size=64, augment=augment, seed=4)
    assert isinstance(coco, CocoDetection) and isinstance(yolo, YoloTxtDetection)
    assert yolo.class_names == coco.class_names and yolo.label_to_category == coco.label_to_category
    assert len(yolo) == len(coco)
    coco.set_epoch(2), yolo.set_epoch(2)
    for i in range(len(coco)):
        _, raw_coco_boxes, raw_coco_labels = coco.load(i)
        _, raw_yolo_boxes, raw_yolo_labels = yolo.load(i)
        torch.testing.assert_close(raw_yolo_boxes, raw_coco_boxes, atol=1e-3, rtol=0)
        assert raw_yolo_labels.tolist() == raw_coco_labels.tolist()
        image_c, target_c = coco[i]
        image_y, target_y = yolo[i]
        torch.testing.assert_close(image_y, image_c, atol=0, rtol=0)
        torch.testing.assert_close(target_y["boxes"], target_c["boxes"], atol=1e-3, rtol=0)
        assert target_y["labels"].tolist() == target_c["labels"].tolist()


def _detections(dataset, seed: int) -> list[dict]:
    """Ground truth jittered by a few pixels, some dropped, plus false positives (original px)."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for i in range(len(dataset)):
        _, boxes, labels = dataset.load(i)
        keep = torch.from_numpy(rng.random(len(boxes)) < 0.8)
        boxes = boxes[keep] + torch.from_numpy(rng.normal(0, 1.5, (int(keep.sum()), 4))).float()
        labels = labels[keep]
        fp = torch.from_numpy(rng.uniform(0, 40, (2, 2))).float()
        boxes = torch.cat((boxes, torch.cat((fp, fp + 12), 1)))
        labels = torch.cat((labels, torch.from_numpy(rng.integers(0, 10, 2))))
        scores = torch.from_numpy(rng.uniform(0.1, 1.0, len(boxes))).float()
        predictions.append({"boxes": boxes, "scores": scores, "labels": labels})
        targets.append({"image_id": dataset.records[i].image_id})
    return predictions_to_coco(predictions, targets, dataset.label_to_category)


def test_yolo_copy_scores_the_same_ap(digits, yolo_copy):
    coco = CocoDetection(digits[1], image_size=64)
    yolo = YoloTxtDetection(yolo_copy, split="val", image_size=64)
    assert yolo.ann_file == yolo_copy.parent / "labels" / "val.coco.json"
    ours = evaluate_coco(yolo.ann_file, _detections(yolo, seed=3))
    reference = evaluate_coco(coco.ann_file, _detections(coco, seed=3))
    assert 0.05 < reference["AP50"] < 1.0, "a test that can fail: some hits, some misses"
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_ann_file_is_cached_and_refreshed(digits, tmp_path):
    data = write_yolo_txt(digits[1], tmp_path / "set")  # split named "val" after val.json
    first = YoloTxtDetection(data, split="val")
    stamp = first.ann_file.stat().st_mtime_ns
    assert YoloTxtDetection(data, split="val").ann_file.stat().st_mtime_ns == stamp
    label = sorted((tmp_path / "set" / "labels" / "val").glob("*.txt"))[0]
    label.write_text("3 0.5 0.5 0.25 0.5\n")
    again = YoloTxtDetection(data, split="val")
    gt = json.loads(again.ann_file.read_text())
    first_anns = [a for a in gt["annotations"] if a["image_id"] == 1]
    assert [a["bbox"] for a in first_anns] == [[24.0, 16.0, 16.0, 32.0]]
    assert first_anns[0]["category_id"] == 4
    torch.testing.assert_close(again.load(0)[1], torch.tensor([[24.0, 16.0, 40.0, 48.0]]))


def _write_set(root, lines_per_image: dict[str, str | None], names=("a", "b")):
    from PIL import Image

    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for stem, text in lines_per_image.items():
        Image.new("RGB", (40, 32), (30, 30, 30)).save(root / "images" / "train" / f"{stem}.jpg")
        if text is not None:
            (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "names": list(names)}))
    return data


def test_missing_label_file_is_a_background_image(tmp_path):
    data = _write_set(tmp_path, {"a": "1 0.5 0.5 0.5 0.5\n", "b": None, "c": ""})
    ds = YoloTxtDetection(data, split="train", image_size=32)
    assert [len(r.boxes) for r in ds.records] == [1, 0, 0]
    torch.testing.assert_close(ds.load(0)[1], torch.tensor([[10.0, 8.0, 30.0, 24.0]]))
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4)
    gt = json.loads(ds.ann_file.read_text())
    assert len(gt["images"]) == 3 and len(gt["annotations"]) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", r"b\.txt' line 2 .*4 fields"),
        ("0 0.5 x 0.2 0.2\n", r"b\.txt' line 1 .*not a number"),
        (
            "\n2 0.5 0.5 0.2 0.2\n",
            r"b\.txt' line 2 .*class 2; expected an integer class id in \[0, 2\)",
        ),
        ("0.5 0.5 0.5 0.2 0.2\n", r"line 1 .*class 0\.5"),
        ("1 0.5 0.5 1.2 0.2\n", r"line 1 .*outside \[0, 1\]"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, text, match):
    data = _write_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": text})
    with pytest.raises(ValueError, match=match):
        YoloTxtDetection(data, split="train")


def test_polygon_labels_and_names_mapping(tmp_path):
    data = _write_set(tmp_path, {"a": "1 0.25 0.25 0.75 0.25 0.75 0.5\n"})
    data.write_text(
        yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "names": {0: "x", 1: "y"}})
    )
    ds = YoloTxtDetection(data, split="train")
    assert ds.class_names == ["x", "y"]
    torch.testing.assert_close(ds.load(0)[1], torch.tensor([[10.0, 8.0, 30.0, 16.0]]))
    assert ds.load(0)[2].tolist() == [1]


def test_bad_dataset_arguments(tmp_path, digits):
    data = _write_set(tmp_path, {"a": ""})
    with pytest.raises(ValueError, match=r"split='val' is not in data=.*it has \['train'\]"):
        YoloTxtDetection(data, split="val")
    with pytest.raises(ValueError, match=r"data='x\.csv' is not valid; expected .*\.json.*\.yaml"):
        create_dataset("x.csv")
    with pytest.raises(FileNotFoundError, match="data="):
        create_dataset(tmp_path / "missing.yaml")
    no_names = tmp_path / "no_names.yaml"
    no_names.write_text("train: images/train\n")
    with pytest.raises(ValueError, match="has no 'names'"):
        create_dataset(no_names)
    with pytest.raises(ValueError, match=r"scale_range=\(0\.0, 1\.0\)"):
        create_dataset(digits[0], scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="flip=2"):
        create_dataset(digits[0], flip=2)
    with pytest.raises(FileNotFoundError, match="pass image_dir="):
        CocoDetection(digits[0], image_dir=tmp_path)


def _epoch_items(dataset, epoch: int, num_workers: int = 0) -> list[torch.Tensor]:
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=3, num_workers=num_workers, collate_fn=collate)
    out = []
    for images, targets in loader:
        out.append(images)
        out.extend(t["boxes"] for t in targets)
    return out


def test_augmentation_is_keyed_by_seed_epoch_and_index(digits):
    ds = CocoDetection(digits[0], image_size=64, augment=True, flip=0.5, seed=7)
    ds.set_epoch(3)
    image, target = ds[5]
    ds[2], ds[0]  # other items in between draw nothing from item 5's stream
    again, target_again = ds[5]
    torch.testing.assert_close(again, image, atol=0, rtol=0)
    torch.testing.assert_close(target_again["boxes"], target["boxes"], atol=0, rtol=0)
    # A resumed run builds a fresh dataset and sets the epoch: the same images.
    fresh = CocoDetection(digits[0], image_size=64, augment=True, flip=0.5, seed=7)
    fresh.set_epoch(3)
    torch.testing.assert_close(fresh[5][0], image, atol=0, rtol=0)
    # Other epochs and other seeds draw differently.
    ds.set_epoch(4)
    assert not torch.equal(ds[5][0], image)
    other_seed = CocoDetection(digits[0], image_size=64, augment=True, flip=0.5, seed=8)
    other_seed.set_epoch(3)
    assert not torch.equal(other_seed[5][0], image)


def test_dataloader_workers_see_the_same_augmentation(digits):
    ds = CocoDetection(digits[0], image_size=64, augment=True, seed=1)
    serial = _epoch_items(ds, epoch=2)
    parallel = _epoch_items(ds, epoch=2, num_workers=2)
    assert len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(_epoch_items(ds, epoch=3)[0], serial[0])


def test_read_only_label_folder_puts_ann_file_in_temp(tmp_path, monkeypatch):
    import tempfile

    import yolo_heads.data.yolo as yolo_module

    data = _write_set(tmp_path / "ro", {"a": "0 0.5 0.5 0.5 0.5\n"})
    real = yolo_module.write_text_atomic

    def read_only_beside_labels(path, text):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, text)

    monkeypatch.setattr(yolo_module, "write_text_atomic", read_only_beside_labels)
    ds = YoloTxtDetection(data, split="train")
    assert ds.ann_file.parent.parent == Path(tempfile.gettempdir())
    assert json.loads(ds.ann_file.read_text())["annotations"][0]["bbox"] == [10.0, 8.0, 20.0, 16.0]
    ds.ann_file.unlink()  # the temp copy is this test's own


def test_cached_images_give_the_same_items_without_the_files(tmp_path):
    import shutil

    from yolo_heads.data import CocoDetection, make_digits_detection

    ann = make_digits_detection(tmp_path / "d", 6, image_size=64, progress=False)
    plain = CocoDetection(ann, image_size=64, augment=True, seed=1)
    cached = CocoDetection(ann, image_size=64, augment=True, seed=1).cache_images()
    expected = [plain[i] for i in range(len(plain))]
    shutil.rmtree(tmp_path / "d" / "train")  # from here on only the cache can feed the items
    with pytest.raises(FileNotFoundError):
        plain[0]
    for (want_image, want), (image, got) in zip(expected, (cached[i] for i in range(6))):
        assert torch.equal(image, want_image)
        assert torch.equal(got["boxes"], want["boxes"])
        assert torch.equal(got["labels"], want["labels"])
