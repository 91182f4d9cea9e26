from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from yolo_heads import YOLODetector, box_iou, evaluate_detector
from yolo_heads.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from yolo_heads.data import CocoDetection, collate
from yolo_heads.train import train


def test_overfits_one_batch(digits, tiny):
    """Steps on one fixed batch must make the detector find those digits: the losses, the
    assigner and the decoding agree with each other."""
    ds = CocoDetection(digits[0], image_size=64)
    images, targets = collate([ds[i] for i in range(4)])
    model = YOLODetector(num_classes=10, head_kwargs={"image_size_hint": 64}, **tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def recall() -> float:
        preds = model.eval().predict(images, conf=0.1)
        model.train()
        hits = [
            bool(((p["labels"] == label) & (box_iou(box[None], p["boxes"])[0] > 0.5)).any())
            for p, t in zip(preds, targets)
            for box, label in zip(t["boxes"], t["labels"])
        ]
        return sum(hits) / len(hits)

    assert recall() == 0.0
    for _ in range(60):
        total, _ = model.loss(model(images), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert recall() >= 0.5


def test_train_writes_checkpoint_and_reloads(digits, tiny, tmp_path):
    ds = CocoDetection(digits[0], image_size=64, augment=True)
    model = YOLODetector(num_classes=10, **tiny)
    result = train(model, ds, epochs=2, batch_size=4, out_dir=tmp_path, show_progress=False)
    assert len(result.history) == 2 and result.checkpoint == tmp_path / "last.safetensors"
    assert set(result.history[0]) == {"loss", "box", "dfl", "cls"}
    assert not list(tmp_path.glob("*.tmp"))
    meta = read_metadata(result.checkpoint)
    assert meta["config"]["channels"] == [8, 16, 32, 64] and meta["metadata"]["epoch"] == 2
    restored = load_checkpoint(result.checkpoint).eval()
    trained = result.model.eval()
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(restored(images)[0], trained(images)[0])
    # Stored tensors are plain safetensors.
    assert "head.cls_out.0.weight" in load_file(str(result.checkpoint))
    metrics = evaluate_detector(
        restored, CocoDetection(digits[1], image_size=64), show_progress=False
    )
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_checkpoint_for_other_architecture_is_rejected(tiny, tmp_path):
    path = save_checkpoint(YOLODetector(num_classes=3, **tiny), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="another architecture"):
        load_checkpoint(path, YOLODetector(num_classes=5, **tiny))


def test_train_bad_arguments(digits, tiny):
    model = YOLODetector(num_classes=10, **tiny)
    ds = CocoDetection(digits[0], image_size=64)
    with pytest.raises(ValueError, match="epochs=0"):
        train(model, ds, epochs=0)
    with pytest.raises(ValueError, match="dataset is empty"):
        train(model, [], epochs=1)


def test_bad_sample_fails_before_any_update(digits, tiny):
    """A label outside the classes stops training at the first batch with a clear message."""
    ds = CocoDetection(digits[0], image_size=64)
    bad = [(img, dict(t, labels=t["labels"] + 20)) for img, t in (ds[i] for i in range(2))]
    model = YOLODetector(num_classes=10, **tiny)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        train(model, bad, epochs=1, batch_size=2, show_progress=False)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            torch.testing.assert_close(v, before[k])
