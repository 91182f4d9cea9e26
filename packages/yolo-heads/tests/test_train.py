from __future__ import annotations

import csv
import math

import pytest
import timm
import torch
from torch import nn

from yolo_heads import YOLODetector, box_iou, evaluate_detector
from yolo_heads.checkpoint import load_checkpoint, load_trainer_state, read_config
from yolo_heads.data import CocoDetection, collate
from yolo_heads.train import YoloEMA, train


def _build(tiny, seed=0):
    torch.manual_seed(seed)
    return YOLODetector(num_classes=10, head_kwargs={"image_size_hint": 64}, **tiny)


def test_overfits_one_batch(digits, tiny):
    """Steps on one fixed batch must make the detector find those digits: the losses, the
    assigner and the decoding agree with each other."""
    ds = CocoDetection(digits[0], image_size=64)
    images, targets = collate([ds[i] for i in range(4)])
    model = _build(tiny)
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


def test_evaluate_detector_is_pycocotools_on_the_original_images(digits, tiny):
    """evaluate_detector == COCOeval run here by hand: images read from the files with PIL,
    predictions at the evaluator's settings, boxes mapped back through the letterbox written
    out (the dataset is built at 96 px from 64 px originals, so the mapping matters)."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    val = CocoDetection(digits[1], image_size=96)
    images, targets = collate([val[i] for i in range(len(val))])
    model = YOLODetector(num_classes=10, head_kwargs={"image_size_hint": 96}, **tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(40):  # fit the val images so the AP compared below is far from 0
        total, _ = model.loss(model(images), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()

    coco = json.loads(Path(digits[1]).read_text())
    results = []
    for info in coco["images"]:
        pixels = np.asarray(Image.open(val.image_dir / info["file_name"]).convert("RGB"))
        h, w = pixels.shape[:2]
        scale = min(96 / h, 96 / w)  # letterbox: scale the long side to 96, pad evenly
        nh, nw = round(h * scale), round(w * scale)
        top, left = (96 - nh) // 2, (96 - nw) // 2
        resized = Image.fromarray(pixels).resize((nw, nh), Image.BILINEAR)
        canvas = torch.full((3, 96, 96), 114 / 255)
        canvas[:, top : top + nh, left : left + nw] = (
            torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255
        )
        with torch.no_grad():
            (pred,) = model.predict(canvas[None], conf=0.001, iou=0.65, max_det=100)
        for box, score, label in zip(pred["boxes"], pred["scores"], pred["labels"]):
            x1, y1, x2, y2 = ((box - torch.tensor([left, top, left, top])) / scale).tolist()
            results.append(
                {
                    "image_id": info["id"],
                    "category_id": coco["categories"][int(label)]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    gt = COCO(digits[1])
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ours = evaluate_detector(model, val, progress=False)
    assert evaluator.stats[0] > 0.1
    assert ours["AP"] == pytest.approx(evaluator.stats[0], abs=2e-3)
    assert ours["AP50"] == pytest.approx(evaluator.stats[1], abs=2e-3)


def test_run_folder_records_validates_and_reloads(digits, tiny, tmp_path):
    train_set = CocoDetection(digits[0], image_size=64, augment=True)
    val_set = CocoDetection(digits[1], image_size=64)
    result = train(
        _build(tiny),
        train_set,
        val_dataset=val_set,
        epochs=2,
        batch_size=4,
        lr=4e-3,
        out_dir=tmp_path,
        progress=False,
    )
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == [
        "epoch",
        "loss",
        "box",
        "dfl",
        "cls",
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "lr",
        "seconds",
    ]
    # The per-epoch validation is pycocotools' score of the EMA weights, as evaluate_detector
    # (its own prediction loop and evaluate_coco) computes it.
    reference = evaluate_detector(result.model, val_set, progress=False)
    for key in ("AP", "AP50", "APs"):
        assert float(rows[-1][key]) == pytest.approx(reference[key], abs=1e-6)
    # best and last are Hub folders; only last carries the trainer state.
    for name in ("best", "last"):
        config = read_config(tmp_path / "weights" / name)
        assert config["architecture"] == "yolo_detector"
        assert config["label_names"] == train_set.class_names
        assert config["model_args"]["channels"] == [8, 16, 32, 64]
    state = load_trainer_state(tmp_path / "weights" / "last")
    assert state["epoch"] == 2 and state["updates"] == 2 * (len(train_set) // 4)
    with pytest.raises(FileNotFoundError, match="only a run's 'last' folder"):
        load_trainer_state(tmp_path / "weights" / "best")
    images = torch.rand(2, 3, 64, 64)
    expected = result.model.eval()(images)[0]
    restored = load_checkpoint(tmp_path / "weights" / "last").eval()
    torch.testing.assert_close(restored(images)[0], expected, rtol=0, atol=0)
    assert restored.label_names == train_set.class_names
    via_timm = timm.create_model(f"local-dir:{tmp_path / 'weights' / 'last'}", pretrained=True)
    torch.testing.assert_close(via_timm.eval()(images)[0], expected, rtol=0, atol=0)
    for plot in ("results.png", "pr_curve.png", "val_predictions.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_gives_the_weights_of_an_uninterrupted_run(digits, tiny, tmp_path):
    """2 epochs, stop, resume to 4 == 4 epochs straight, bit for bit (CPU, augmentation on)."""

    def run(out, **kwargs):
        data = CocoDetection(digits[0], image_size=64, augment=True, seed=3)
        return train(
            _build(tiny),
            data,
            epochs=4,
            batch_size=4,
            out_dir=out,
            progress=False,
            plots=False,
            warmup_steps=3,
            **kwargs,
        )

    class Interrupt(Exception):
        pass

    def interrupt_after_2(row):
        if row["epoch"] == 2:
            raise Interrupt

    straight = run(tmp_path / "a")
    with pytest.raises(Interrupt):
        run(tmp_path / "b", callbacks=[interrupt_after_2])
    assert load_trainer_state(tmp_path / "b" / "weights" / "last")["epoch"] == 2
    resumed = run(tmp_path / "b", resume=tmp_path / "b")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["loss"] == b["loss"]
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    raw_a = load_trainer_state(tmp_path / "a" / "weights" / "last")["model"]
    raw_b = load_trainer_state(tmp_path / "b" / "weights" / "last")["model"]
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)


def test_learning_rate_follows_warmup_then_cosine(digits, tiny):
    data = CocoDetection(digits[0], image_size=64)
    lr, ratio, warmup, epochs, steps = 4e-3, 0.05, 2, 3, len(data) // 2
    result = train(
        _build(tiny),
        data,
        epochs=epochs,
        batch_size=2,
        lr=lr,
        min_lr_ratio=ratio,
        warmup_steps=warmup,
        ema=False,
        progress=False,
    )
    total = epochs * steps

    def expected(t):  # timm's CosineLRScheduler with a warm-up prefix, written out
        if t < warmup:
            start = lr / warmup
            return start + t * (lr - start) / warmup
        progress = (t - warmup) / (total - warmup)
        return lr * ratio + 0.5 * (lr - lr * ratio) * (1 + math.cos(math.pi * progress))

    # an epoch's lr is the rate its last update used (update steps * (e + 1) - 1 counted from 0)
    got = [row["lr"] for row in result.history]
    assert got == pytest.approx([expected(steps * (e + 1) - 1) for e in range(epochs)], rel=1e-9)


def test_ema_follows_the_yolo_decay_ramp():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = YoloEMA(model, decay=0.9, tau=2.0)
    average = model.weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        ema.update(model, step=step)
        d = 0.9 * (1 - math.exp(-step / 2.0))
        average = d * average + (1 - d) * model.weight.detach()
        torch.testing.assert_close(ema.module.weight, average)


def test_amp_runs_the_backbone_in_bfloat16_on_cpu(digits, tiny):
    model = _build(tiny)
    seen = []
    model.backbone.body.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    data = CocoDetection(digits[0], image_size=64)
    result = train(model, data, epochs=1, batch_size=4, amp=True, progress=False)
    assert set(seen) == {torch.bfloat16}
    assert math.isfinite(result.history[0]["loss"])
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_checkpoint_for_other_architecture_is_rejected(tiny, tmp_path):
    from yolo_heads import save_checkpoint

    folder = save_checkpoint(YOLODetector(num_classes=3, **tiny), tmp_path / "a")
    with pytest.raises(ValueError, match="another architecture"):
        load_checkpoint(folder, YOLODetector(num_classes=5, **tiny))
    (folder / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint(folder / "config.json")


def test_checkpoint_folder_is_replaced_whole(tiny, tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous folder complete and loadable."""
    from yolo_heads import checkpoint, save_checkpoint

    old = YOLODetector(num_classes=3, **tiny)
    folder = save_checkpoint(old, tmp_path / "last")
    written = (folder / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(YOLODetector(num_classes=3, **tiny), folder, trainer_state={"epoch": 1})
    assert (folder / "model.safetensors").read_bytes() == written
    assert not list(tmp_path.glob(".*tmp"))
    load_checkpoint(folder)
    assert (folder / "config.json").stat().st_mode & 0o044  # readable by others (umask 022)


def test_train_bad_arguments(digits, tiny):
    model = YOLODetector(num_classes=10, **tiny)
    ds = CocoDetection(digits[0], image_size=64)
    with pytest.raises(ValueError, match="epochs=0"):
        train(model, ds, epochs=0)
    with pytest.raises(ValueError, match="lr=nan"):
        train(model, ds, lr=float("nan"))
    with pytest.raises(ValueError, match="dataset is empty"):
        train(model, [], epochs=1)


def test_bad_sample_fails_before_any_update(digits, tiny):
    """A label outside the classes stops training at the first batch with a clear message."""
    ds = CocoDetection(digits[0], image_size=64)
    bad = [(img, dict(t, labels=t["labels"] + 20)) for img, t in (ds[i] for i in range(2))]
    model = YOLODetector(num_classes=10, **tiny)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        train(model, bad, epochs=1, batch_size=2, progress=False)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            torch.testing.assert_close(v, before[k])


def test_resume_keeps_the_runs_best_checkpoint(digits, tiny, tmp_path):
    """A resumed run reports the best checkpoint written before the restart (it said None
    when no later epoch improved on it)."""
    data = CocoDetection(digits[0], image_size=64)
    val = CocoDetection(digits[1], image_size=64)
    common = dict(batch_size=4, out_dir=tmp_path, progress=False, plots=False, warmup_steps=1)
    first = train(_build(tiny), data, val_dataset=val, epochs=1, **common)
    assert first.best == tmp_path / "weights" / "best"
    with pytest.warns(UserWarning):  # nothing left to train: the run is already complete
        resumed = train(_build(tiny), data, val_dataset=val, epochs=1, resume=tmp_path, **common)
    assert resumed.best == first.best
