"""ONNX export with NMS inside (run in onnxruntime) and torch.export, against ``predict``."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
import torchvision

from yolo_heads import YOLODetector
from yolo_heads.architectures import GraphClassifier
from yolo_heads.data import CocoDetection, collate
from yolo_heads.export import DetectionGraph, export_onnx, export_program
from yolo_heads.fuse import fuse_for_inference

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CONF, IOU, MAX_DET = 0.05, 0.65, 1000


def _train(model: YOLODetector, images, targets, steps: int) -> YOLODetector:
    """A few real steps, so boxes, scores and BatchNorm statistics are a trained detector's."""
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        total, _ = model.loss(model(images), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
    return model.eval()


def _away_from(values: torch.Tensor, target: float, margin: float) -> float:
    """The threshold nearest ``target`` with no value within ``margin`` of it."""
    for k in range(1000):
        for t in (target + k * margin, target - k * margin):
            if not values.numel() or (values - t).abs().min().item() >= margin:
                return t
    raise AssertionError(f"no threshold near {target} clear of the values")


def _thresholds(model, images, conf: float, iou: float) -> tuple[float, float]:
    """``conf`` and ``iou`` moved (a little) off every score and every same-class IoU, so that
    float rounding (ONNX Runtime vs PyTorch, fused vs unfused: ~1e-6) cannot flip a box and the
    comparison tests the graph, not the luck of a tie (see yolo_heads.export's docstring)."""
    with torch.no_grad():
        boxes, scores = model.head.decode(model(images))
    conf = _away_from(scores.flatten(), conf, 1e-5)
    h, w = images.shape[-2:]
    boxes = torch.stack([boxes[..., i].clamp(0, (w, h)[i % 2]) for i in range(4)], -1)
    ious = []
    for b in range(len(images)):
        for c in range(scores.shape[-1]):
            candidates = boxes[b][scores[b, :, c] > conf]
            pairwise = torchvision.ops.box_iou(candidates, candidates)
            ious.append(pairwise[torch.triu_indices(*pairwise.shape, 1).unbind()])
    return conf, _away_from(torch.cat(ious), iou, 1e-4)


@pytest.fixture(scope="module")
def trained(digits, tiny):
    torch.manual_seed(0)
    train = CocoDetection(digits[0], image_size=64)
    images, targets = collate([train[i] for i in range(len(train))])
    model = YOLODetector(num_classes=10, implicit=True, head_kwargs={"image_size_hint": 64}, **tiny)
    _train(model, images, targets, steps=40)
    val = CocoDetection(digits[1], image_size=64)
    val_images, _ = collate([val[i] for i in range(4)])
    return model, val_images, _thresholds(model, val_images, CONF, IOU)


@pytest.fixture(scope="module")
def onnx_path(trained, tmp_path_factory):
    model, _, (conf, iou) = trained
    path = tmp_path_factory.mktemp("onnx") / "detector.onnx"
    stale = path.parent / ".detector.onnx.12345-dead.tmp"  # what a killed export leaves
    stale.write_bytes(b"half a model")
    old = os.umask(0o022)
    try:
        return export_onnx(model, path, image_size=64, conf=conf, iou=iou, max_det=MAX_DET)
    finally:
        os.umask(old)


def _rows(predictions, batch_index: int) -> np.ndarray:
    p = predictions[batch_index]
    n = len(p["scores"])
    return np.concatenate(
        [
            np.full((n, 1), batch_index),
            p["boxes"].numpy(),
            p["scores"].numpy()[:, None],
            p["labels"].numpy()[:, None],
        ],
        axis=1,
    )


def _assert_same_detections(got: np.ndarray, predictions, batch: int) -> tuple[float, float]:
    """Match per image and label (sorted by score): same count, boxes within 1e-3 px, scores
    within 1e-4. Returns the largest box and score differences."""
    assert got.ndim == 2 and got.shape[1] == 7
    assert set(np.unique(got[:, 0]).astype(int)) <= set(range(batch))
    worst_box = worst_score = 0.0
    for b in range(batch):
        expected = _rows(predictions, b)
        mine = got[got[:, 0] == b]
        # Within an image the rows come best first, as predict returns them.
        assert np.all(np.diff(mine[:, 5]) <= 0)
        for label in np.union1d(expected[:, 6], mine[:, 6]):
            e = expected[expected[:, 6] == label]
            m = mine[mine[:, 6] == label]
            assert len(m) == len(e), f"image {b} label {label}: {len(m)} vs {len(e)} boxes"
            e = e[np.lexsort((e[:, 1], -e[:, 5]))]
            m = m[np.lexsort((m[:, 1], -m[:, 5]))]
            worst_box = max(worst_box, float(np.abs(m[:, 1:5] - e[:, 1:5]).max()))
            worst_score = max(worst_score, float(np.abs(m[:, 5] - e[:, 5]).max()))
    assert worst_box <= 1e-3 and worst_score <= 1e-4, (worst_box, worst_score)
    return worst_box, worst_score


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_matches_predict(trained, onnx_path, batch):
    model, images, (conf, iou) = trained
    images = images[:batch]
    predictions = model.predict(images, conf=conf, iou=iou, max_det=MAX_DET)
    counts = [len(p["scores"]) for p in predictions]
    assert all(0 < c < MAX_DET for c in counts), counts  # boxes to compare; max_det not binding
    if batch > 1:  # several labels, so the per-label matching is exercised
        assert len(torch.cat([p["labels"] for p in predictions]).unique()) > 1
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"  # a dynamic axis, not a fixed size
    (got,) = session.run(["detections"], {"images": images.numpy()})
    assert len(got) == sum(counts)
    _assert_same_detections(got, predictions, batch)


def test_onnx_graph_has_nms_and_no_batchnorm(onnx_path):
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    ops = {node.op_type for node in graph.node}
    # Functions (if the exporter kept any) hold nodes too.
    for function in onnx.load(str(onnx_path)).functions:
        ops |= {node.op_type for node in function.node}
    assert "NonMaxSuppression" in ops
    assert "BatchNormalization" not in ops
    assert not list(onnx_path.parent.glob(".*"))  # no temporary file left, the stale one gone
    assert stat.S_IMODE(onnx_path.stat().st_mode) == 0o644  # the umask's, not mkstemp's 0600


@pytest.mark.parametrize("head", ["anchor_free", "anchor_based"])
@pytest.mark.parametrize("max_det", [3, MAX_DET])
def test_detection_graph_matches_predict_in_eager(trained, tiny, head, max_det):
    """The graph's own logic (per-class NMS, clipping, the per-image max_det cut) in PyTorch,
    including a max_det that binds, for both heads."""
    model, images, (conf, iou) = trained
    if head == "anchor_based":
        model = YOLODetector(num_classes=10, head=head, **tiny).eval()
        conf, iou = _thresholds(model, images, 0.0005, IOU)
    predictions = model.predict(images, conf=conf, iou=iou, max_det=max_det)
    if max_det == 3:
        assert any(len(p["scores"]) == 3 for p in predictions)
    graph = DetectionGraph(fuse_for_inference(model), conf=conf, iou=iou, max_det=max_det)
    with torch.no_grad():
        got = graph(images).numpy()
    assert len(got) >= len(images)
    _assert_same_detections(got, predictions, len(images))


def test_export_program_matches_eager(trained):
    model, images, _ = trained
    program = export_program(model, image_size=64)
    exported = program.module()
    for batch in (1, 3):
        x = torch.cat([images] * 2)[:batch]
        with torch.no_grad():
            expected = model(x)
        got = exported(x)
        assert len(got) == len(expected)
        for a, b in zip(expected, got):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= 1e-4


def test_export_bad_input(trained, tiny, tmp_path, monkeypatch):
    model, _, _ = trained
    with pytest.raises(ValueError, match="image_size=60"):
        export_onnx(model, tmp_path / "a.onnx", image_size=60)
    with pytest.raises(ValueError, match="path="):
        export_onnx(model, tmp_path / "a.txt", image_size=64)
    with pytest.raises(ValueError, match=r"conf=1\.5"):
        export_onnx(model, tmp_path / "a.onnx", image_size=64, conf=1.5)
    with pytest.raises(ValueError, match="opset=11"):
        export_onnx(model, tmp_path / "a.onnx", image_size=64, opset=11)
    classifier = GraphClassifier("yolov9_c_cls", num_classes=3)
    with pytest.raises(ValueError, match="no detection head"):
        export_onnx(classifier, tmp_path / "a.onnx", image_size=64)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(model, tmp_path / "a.onnx", image_size=64)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.fixture(scope="module")
def trained_yolov9_t(digits):
    """The authors' YOLOv9-T (with its auxiliary branch while training) after a few steps."""
    from yolo_heads.architectures import GraphDetector

    torch.manual_seed(0)
    train = CocoDetection(digits[0], image_size=64)
    images, targets = collate([train[i] for i in range(len(train))])
    model = GraphDetector("yolov9_t", num_classes=10)
    # The authors' class prior (-10, sigmoid 4.5e-5) needs hundreds of steps to lift scores to
    # where thresholds can be tested; a prior of -4 gets there in a few.
    for conv in model.head.class_outputs():
        torch.nn.init.constant_(conv.bias, -4.0)
    _train(model, images, targets, steps=15)
    val = CocoDetection(digits[1], image_size=64)
    val_images, _ = collate([val[i] for i in range(4)])
    return model, val_images, _thresholds(model, val_images, 0.01, IOU)


def test_authors_architecture_onnx_matches_predict(trained_yolov9_t, tmp_path):
    model, images, (conf, iou) = trained_yolov9_t
    path = export_onnx(model, tmp_path / "yolov9_t.onnx", image_size=64, conf=conf, iou=iou,
                       max_det=MAX_DET)  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        predictions = model.predict(images[:batch], conf=conf, iou=iou, max_det=MAX_DET)
        assert sum(len(p["scores"]) for p in predictions) > 0
        (got,) = session.run(["detections"], {"images": images[:batch].numpy()})
        _assert_same_detections(got, predictions, batch)


def test_authors_architecture_torch_export_matches_eager(trained_yolov9_t):
    model, images, _ = trained_yolov9_t
    exported = export_program(model, image_size=64).module()
    with torch.no_grad():
        expected = model(images)
    got = exported(images)
    assert len(got) == len(expected) == 3
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
