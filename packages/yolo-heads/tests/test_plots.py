"""Run-folder plots: results curves, PR curve (against evaluate_coco), drawn detections."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from yolo_heads import evaluate_coco
from yolo_heads.data import CocoDetection
from yolo_heads.evaluate import coco_evaluator, predictions_to_coco
from yolo_heads.plots import class_colour, draw_detections, plot_pr_curve, plot_results

KEEP = os.environ.get("YOLO_HEADS_KEEP_PLOTS")  # a folder: copies of the PNGs, to look at


def _keep(path):
    if KEEP:
        os.makedirs(KEEP, exist_ok=True)
        shutil.copy(path, os.path.join(KEEP, path.name))


def _jittered_detections(dataset, seed=0):
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for i in range(len(dataset)):
        _, boxes, labels = dataset.load(i)
        boxes = boxes + torch.from_numpy(rng.normal(0, 2.0, boxes.shape)).float()
        fp = torch.from_numpy(rng.uniform(0, 40, (3, 2))).float()
        boxes = torch.cat((boxes, torch.cat((fp, fp + 14), 1)))
        labels = torch.cat((labels, torch.from_numpy(rng.integers(0, 10, 3))))
        scores = torch.from_numpy(rng.uniform(0.05, 1.0, len(boxes))).float()
        predictions.append({"boxes": boxes, "scores": scores, "labels": labels})
        targets.append({"image_id": dataset.records[i].image_id})
    return predictions_to_coco(predictions, targets, dataset.label_to_category)


def test_pr_curve_mean_is_evaluate_coco_ap50(digits, tmp_path):
    ds = CocoDetection(digits[0], image_size=64)
    detections = _jittered_detections(ds)
    reference = evaluate_coco(ds.ann_file, detections)["AP50"]
    assert 0.05 < reference < 0.99
    curve = plot_pr_curve(
        coco_evaluator(ds.ann_file, detections), ds.class_names, tmp_path / "pr.png"
    )
    assert curve.ap50 == pytest.approx(reference, abs=1e-12)
    assert float(curve.mean.mean()) == pytest.approx(reference, abs=1e-12)
    # Only classes with ground truth are drawn, each a non-increasing curve (COCO interpolation).
    present = {str(int(label)) for i in range(len(ds)) for label in ds.load(i)[2]}
    assert set(curve.class_names) == present and curve.precision.shape == (len(present), 101)
    assert (np.diff(curve.precision, axis=1) <= 1e-12).all()
    with Image.open(tmp_path / "pr.png") as im:
        assert im.size == (640, 520)
    _keep(tmp_path / "pr.png")
    with pytest.raises(ValueError, match="class_names has 2 names"):
        plot_pr_curve(coco_evaluator(ds.ann_file, detections), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="evaluator has no accumulated results"):
        plot_pr_curve(None, ds.class_names, tmp_path / "x.png")


def test_draw_detections_marks_boxes_in_class_colours(tmp_path):
    images = torch.zeros(2, 3, 32, 32)
    images[1] += 0.5
    targets = [
        {"boxes": torch.tensor([[8.0, 10, 28, 30]]), "labels": torch.tensor([5])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    predictions = [
        {
            "boxes": torch.tensor([[4.0, 4, 20, 20], [1, 1, 30, 30]]),
            "scores": torch.tensor([0.9, 0.1]),
            "labels": torch.tensor([3, 7]),
        },
        {
            "boxes": torch.tensor([[2.0, 2, 12, 12]]),
            "scores": torch.tensor([0.8]),
            "labels": torch.tensor([0]),
        },
    ]
    path = draw_detections(
        images, targets, predictions, [str(d) for d in range(10)], tmp_path / "d.png"
    )
    _keep(path)
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    scale, origin = 8, 4  # 32 px upscaled to 256; tiles start 4 px in (the gap)
    assert rgb.shape == (2 * 4 + 256, 3 * 4 + 2 * 256, 3)

    def at(x, y, tile=0):
        return tuple(int(v) for v in rgb[origin + y, origin + tile * (256 + 4) + x])

    # The prediction's left edge (x = 4 px) half-way down, in class 3's colour.
    assert at(4 * scale, 12 * scale) == class_colour(3)
    assert at(4 * scale + 1, 14 * scale) == class_colour(3)
    # Ground truth is dashed in class 5's colour: a dash at the top-left corner, a gap after it.
    assert at(8 * scale + 4, 10 * scale) == class_colour(5)
    assert at(8 * scale + int(1.5 * 3 * scale), 10 * scale) == (0, 0, 0)
    # Below conf: not drawn. Inside a box: the image itself.
    assert at(1 * scale, 16 * scale) == (0, 0, 0)
    assert at(14 * scale, 14 * scale) == (0, 0, 0)
    # The second tile: its own prediction, on a grey image.
    assert at(2 * scale, 8 * scale, tile=1) == class_colour(0)
    assert at(20 * scale, 20 * scale, tile=1) == (128, 128, 128)
    assert len({class_colour(k) for k in range(10)}) == 10
    assert not list(tmp_path.glob(".*.tmp")), "written atomically, nothing left behind"
    with pytest.raises(ValueError, match=r"images has shape \(3, 32, 32\)"):
        draw_detections(images[0], None, None, None, tmp_path / "e.png")
    with pytest.raises(ValueError, match="predictions has 1 entries for 2 images"):
        draw_detections(images, None, predictions[:1], None, tmp_path / "e.png")


def test_plot_results_reads_a_results_csv(tmp_path):
    header = "epoch,box,cls,dfl,AP,AP50,AP75,APs,APm,APl,lr,seconds"
    rows = [
        "1,2.5,3.1,1.9,,,,,,,0.01,12.0",
        "2,2.1,2.4,1.7,0.10,0.25,0.08,0.09,-1,-1,0.008,11.5",
        "3,1.8,1.9,1.5,0.21,0.44,0.18,0.20,-1,-1,0.005,11.7",
    ]
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    out = plot_results(csv_path, tmp_path / "results.png")
    _keep(out)
    with Image.open(out) as im:
        # 11 columns less APm / APl (only -1: no ground truth of that size): 5 panels across,
        # 2 rows, 3.2 x 2.6 inches each at 100 dpi.
        assert im.size == (1600, 520)
    with pytest.raises(FileNotFoundError, match="results_csv="):
        plot_results(tmp_path / "missing.csv", tmp_path / "r.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,2\n")
    with pytest.raises(ValueError, match="no 'epoch' column"):
        plot_results(bad, tmp_path / "r.png")
