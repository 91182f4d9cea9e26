"""Instance segmentation: the authors' v9-c-seg with its detection sub-heads running, the mask
loss against Ultralytics' formula, masks through both dataset layouts and the augmentation,
``segm`` scoring, a 2-epoch run with ``task: segment``, ``val`` and ONNX export with masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from yolo_heads import YOLODetector
from yolo_heads.data import CocoDetection, make_digits_detection
from yolo_heads.data.yolo import YoloTxtDetection
from yolo_heads.evaluate import evaluate_coco, predictions_to_coco
from yolo_heads.heads import SegmentHead, YOLOv9Head
from yolo_heads.losses_segment import mask_loss

FIXTURE = Path(__file__).parent / "fixtures" / "authors" / "v9-c-seg.safetensors"


@pytest.fixture(scope="module")
def seg_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_digits")
    common = {"image_size": 64, "digit_size": (16, 28), "progress": False}
    train = make_digits_detection(root, num_images=8, seed=0, **common)
    val = make_digits_detection(root, num_images=4, seed=1, split="val", **common)
    return train, val


def rebuild_state(record: str) -> dict[str, torch.Tensor]:
    """The fixture README's recipe (as tests/test_authors_fixtures.py): one generator, entries
    in order, 'keep' entries drawn from none."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, _dtype, dist, arg1, arg2 in json.loads(record):
        if dist == "normal":
            state[key] = torch.empty(shape).normal_(arg1, arg2, generator=g)
        elif dist == "uniform":
            state[key] = torch.empty(shape).uniform_(arg1, arg2, generator=g)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
        else:  # the frozen DFL projection of v9 heads
            state[key] = torch.arange(shape[1], dtype=torch.float32).view(shape)
    return state


def test_v9_c_seg_also_returns_boxes_and_classes():
    """Loaded from the fixture's record, our v9-c-seg runs the ``detect`` sub-heads the authors'
    forward skips: its detection levels are a YOLOv9Head (the head the v9-t / rd-9c fixtures
    check) holding the record's ``detect.*`` weights, run on P3 / P4 / P5."""
    from safetensors import safe_open

    from yolo_heads.official import load

    with safe_open(FIXTURE, "pt") as f:
        meta, images = f.metadata(), f.get_tensor("input")
    torch.set_num_threads(1)
    model = load(rebuild_state(meta["state"]), model="yolov9_c_seg").eval()
    assert isinstance(model.head, SegmentHead)
    tags = model.forward_tags(images)
    levels, coefficients, prototypes = model.head.split(tags["Main"])
    reference = YOLOv9Head([256, 512, 512], num_classes=80).eval()
    reference.load_state_dict(model.head.detect.state_dict())
    expected = reference([tags["P3"], tags["P4"], tags["P5"]])
    for ours, theirs in zip(levels, expected):
        torch.testing.assert_close(ours, theirs)
    assert [tuple(c.shape) for c in coefficients] == [(2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    assert tuple(prototypes.shape) == (2, 32, 16, 16)
    found = model.predict(images, conf=0.0, max_det=5)
    assert [sorted(p) for p in found] == [["boxes", "labels", "masks", "scores"]] * 2
    assert tuple(found[0]["masks"].shape) == (5, 64, 64)


def _ultralytics_single_mask_loss(gt_mask, pred, proto, xyxy, area):
    """Ultralytics' v8SegmentationLoss.single_mask_loss, written out: BCE of ``pred @ proto``
    against the mask, zeroed outside the box (pixel index in [x1, x2)), mean over the map,
    divided by the box's normalised area, summed."""
    pred_mask = torch.einsum("in,nhw->ihw", pred, proto)
    loss = F.binary_cross_entropy_with_logits(pred_mask, gt_mask, reduction="none")
    _, h, w = loss.shape
    x1, y1, x2, y2 = torch.chunk(xyxy[:, :, None], 4, 1)
    r = torch.arange(w, dtype=x1.dtype)[None, None, :]
    c = torch.arange(h, dtype=x1.dtype)[None, :, None]
    crop = loss * ((r >= x1) * (r < x2) * (c >= y1) * (c < y2))
    return (crop.mean(dim=(1, 2)) / area).sum()


def test_mask_loss_is_ultralytics_formula():
    g = torch.Generator().manual_seed(0)
    coefficients = torch.randn(3, 8, generator=g)
    prototypes = torch.randn(8, 16, 16, generator=g)
    masks = (torch.rand(3, 16, 16, generator=g) > 0.5).float()  # at the prototypes' size
    boxes = torch.tensor([[8.0, 8.0, 40.0, 32.0], [0.0, 4.0, 64.0, 60.0], [20.0, 20.0, 28.0, 44.0]])
    ours = mask_loss(coefficients, prototypes, masks, boxes, (64, 64))
    # Ultralytics: boxes in prototype pixels, areas as fractions of the image
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 64**2
    reference = _ultralytics_single_mask_loss(masks, coefficients, prototypes, boxes / 4, area)
    torch.testing.assert_close(ours, reference)


def test_segment_head_on_a_timm_backbone_trains_a_step(tiny, seg_digits):
    train, _ = seg_digits
    model = YOLODetector(num_classes=10, head="segment", head_kwargs={"num_masks": 8}, **tiny)
    dataset = CocoDetection(train, image_size=64, masks=True)
    images = torch.stack([dataset[i][0] for i in range(4)])
    targets = [dataset[i][1] for i in range(4)]
    total, parts = model.loss(model(images), targets)
    assert sorted(parts) == ["box", "cls", "dfl", "mask"]
    assert torch.isfinite(total) and parts["mask"] > 0
    total.backward()
    protos = model.head.heads[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in protos.parameters())


def test_digit_masks_are_its_own_pixels(seg_digits):
    """The digits set's RLE masks decode (pycocotools) to pixels whose bounding box is the
    annotation's box; at 64 px the letterbox is the identity, so the items' masks are those."""
    train, _ = seg_digits
    data = json.loads(Path(train).read_text())
    dataset = CocoDetection(train, image_size=64, masks=True)
    _, target = dataset[0]
    anns = [a for a in data["annotations"] if a["image_id"] == target["image_id"]]
    assert len(anns) == len(target["masks"])
    for ann, mask in zip(anns, target["masks"]):
        decoded = mask_utils.decode(ann["segmentation"])
        np.testing.assert_array_equal(decoded, mask.numpy())
        ys, xs = np.nonzero(decoded)
        assert [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == ann["bbox"]


def test_masks_follow_the_augmentation(seg_digits):
    """Letterbox jitter, flip, mosaic and the affine window move the masks with the boxes (the
    existing box pipeline): every mask lies in its box, and a box the canvas did not cut is its
    mask's bounding box within the resampling's pixels (a cut box keeps the whole object's
    other side, so only containment holds there)."""
    train, _ = seg_digits
    dataset = CocoDetection(
        train, image_size=64, masks=True, augment=True, flip=0.5, mosaic=1.0, translate=0.1,
        affine_scale=0.3, seed=3,
    )  # fmt: skip
    checked = 0
    for index in range(len(dataset)):
        _, target = dataset[index]
        assert len(target["masks"]) == len(target["boxes"])
        for mask, box in zip(target["masks"], target["boxes"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                continue
            found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            assert (found[:2] >= box[:2] - 1.5).all() and (found[2:] <= box[2:] + 1.5).all()
            if box.min() > 0 and box.max() < 64:
                assert (found - box).abs().max() <= 2.0, (index, found, box)
                checked += 1
    assert checked >= 8


def test_yolo_seg_polygons_are_masks(tmp_path):
    """A YOLO-seg label line (class x1 y1 x2 y2 ...) gives the mask pycocotools rasterises from
    the polygon in pixels; the ground truth JSON carries it for segm scoring."""
    from PIL import Image

    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    Image.new("RGB", (64, 32)).save(tmp_path / "images" / "val" / "a.png")
    polygon = [0.1, 0.2, 0.6, 0.25, 0.4, 0.9]
    (tmp_path / "labels" / "val" / "a.txt").write_text(
        "1 " + " ".join(map(str, polygon)) + "\n0 0.8 0.5 0.2 0.4\n"
    )
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\nval: images/val\nnames: [a, b]\n")
    dataset = YoloTxtDetection(data, split="val", image_size=64, masks=True)
    _, target = dataset[0]
    pixels = (np.array(polygon).reshape(-1, 2) * [64, 32]).reshape(-1).tolist()
    reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([pixels], 32, 64)))
    # the 64 x 32 image sits in the canvas's rows 16..48 at scale 1
    np.testing.assert_array_equal(target["masks"][0][16:48].numpy(), reference)
    x1, y1, x2, y2 = 0.7 * 64, 0.3 * 32, 0.9 * 64, 0.7 * 32  # the box line: its rectangle
    rectangle = [[x1, y1, x2, y1, x2, y2, x1, y2]]
    reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rectangle, 32, 64)))
    np.testing.assert_array_equal(target["masks"][1][16:48].numpy(), reference)
    gt = json.loads(Path(dataset.ann_file).read_text())
    assert [len(a["segmentation"][0]) for a in gt["annotations"]] == [6, 8]


def test_segm_scores_masks(seg_digits):
    """The ground truth masks as detections score mask AP 1 with pycocotools; the same boxes
    with their masks shifted by 3 px score less."""
    _, val = seg_digits
    dataset = CocoDetection(val, image_size=64, masks=True)
    predictions, targets = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        n = len(target["boxes"])
        predictions.append(
            {
                "boxes": target["boxes"],
                "scores": torch.ones(n),
                "labels": target["labels"],
                "masks": target["masks"].bool(),
            }
        )
        targets.append(target)
    detections = predictions_to_coco(predictions, targets, dataset.label_to_category)
    assert evaluate_coco(val, detections, iou_type="segm")["AP"] == pytest.approx(1.0)
    for p in predictions:
        p["masks"] = p["masks"].roll(3, dims=-1)
    shifted = predictions_to_coco(predictions, targets, dataset.label_to_category)
    assert evaluate_coco(val, shifted, iou_type="segm")["AP"] < 0.9
    assert evaluate_coco(val, shifted)["AP"] == pytest.approx(1.0)  # the boxes did not move


TINY = [
    "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
    "model.neck_channels=16",
    "model.head_kwargs={num_masks: 8}",
    "schedule.batch_size=4",
    "schedule.amp=false",
    "schedule.threads=1",
    "data.num_workers=0",
]


@pytest.fixture(scope="module")
def seg_run(seg_digits, tmp_path_factory):
    """``task: segment`` through the trainer: 2 epochs of a tiny segmenter on digits."""
    from yolo_heads.config import load_config
    from yolo_heads.run import run_training

    train, val = seg_digits
    out = tmp_path_factory.mktemp("seg_run") / "run"
    cfg = load_config(
        overrides=[
            "task=segment", f"data.train={train}", f"data.val={val}", f"out={out}",
            "schedule.epochs=2", *TINY,
        ]
    )  # fmt: skip
    return run_training(cfg, progress=False), out


def test_two_epoch_segmentation_run(seg_run):
    result, out = seg_run
    assert len(result.history) == 2
    row = result.history[-1]
    assert {"mask", "AP", "mask_AP", "mask_AP50"} <= set(row)
    assert all(np.isfinite(r["mask"]) for r in result.history)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "mask_AP" in header
    assert (out / "val_predictions.png").is_file()


def test_val_prints_box_and_mask_ap(seg_run, seg_digits, capsys):
    from yolo_heads.cli import main

    result, _ = seg_run
    _, val = seg_digits
    assert main(["val", "--weights", str(result.last), "--data", str(val)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("box:  AP=") and lines[-1].startswith("mask: AP=")


def test_predict_writes_and_draws_masks(seg_run, seg_digits, tmp_path, capsys):
    """``yolo-heads predict`` of a segmenter: each detection's mask as COCO RLE on the image as
    given, as many as boxes, decoding to the image's size."""
    from yolo_heads.cli import main

    result, _ = seg_run
    train, _ = seg_digits
    image = sorted((Path(train).parent / "train").glob("*.png"))[0]
    out = tmp_path / "pred"
    args = ["predict", "--weights", str(result.last), "--source", str(image), "--out", str(out)]
    assert main([*args, "--conf", "0.001", "--max-det", "5"]) == 0
    record = json.loads((out / "predictions.json").read_text())[0]
    assert len(record["masks_rle"]) == len(record["boxes_xyxy"]) > 0
    assert mask_utils.decode(record["masks_rle"][0]).shape == (64, 64)
    assert (out / f"{image.stem}.png").is_file()


def test_task_segment_refuses_a_detector_architecture():
    from yolo_heads.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="yolov9_c_seg"):
        load_config(overrides=["task=segment", "model=yolov9_t", "data.train=x.json"])
    with pytest.raises(ConfigError, match="task='classify' is not valid"):
        load_config(overrides=["task=classify", "data.train=x.json"])


def test_onnx_masks_match_predict(seg_run, tmp_path):
    """The exported graph's ``masks`` output is ``predict``'s masks, row for row (onnxruntime);
    a pixel may differ where a logit sits within float rounding of the threshold."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from yolo_heads.export import export_onnx
    from yolo_heads.fuse import fuse_for_inference

    model = seg_run[0].model.eval()
    path = export_onnx(model, tmp_path / "seg.onnx", image_size=64, conf=0.01, max_det=20)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows, masks = session.run(None, {"images": images.numpy()})
    expected = fuse_for_inference(model).predict(images, conf=0.01, max_det=20)
    want_masks = torch.cat([p["masks"] for p in expected]).numpy()
    want_boxes = torch.cat([p["boxes"] for p in expected]).numpy()
    assert rows.shape[0] == len(want_masks) > 0
    np.testing.assert_allclose(rows[:, 1:5], want_boxes, atol=1e-3)
    assert masks.shape == want_masks.shape
    assert (masks.astype(bool) != want_masks).mean() < 1e-3
