"""Detection quality: yolo-heads against Ultralytics YOLOv8n on the same data, side by side.

Both train from scratch on the same generated handwritten-digits set (the demo's: 640 train /
160 val images at 64 px; and the size-spread layout, ``yolo_heads.data.SIZE_SPREAD``), at the
same image size, epochs and batch, on the CPU. Every model is scored by the same pycocotools
call (``yolo_heads.evaluate_coco``) on the same val JSON, from predictions at conf 0.001,
IoU 0.7, at most 300 per image. Ultralytics reads a YOLO-txt copy of the COCO JSON written by
``yolo_heads.data.write_yolo_txt``.

Ultralytics is a benchmark-only dependency (``nox -s bench`` installs it) kept offline by:
``YOLO_OFFLINE=1`` (its online check answers False, so nothing is fetched), a local
``YOLO_CONFIG_DIR`` (its settings file lives in the work folder, not ``~/.config``),
``settings.update(sync=False)`` (no telemetry), ``YOLO("yolov8n.yaml")`` with
``pretrained=False`` (built from the yaml, no weight download), ``plots=False`` (no
``Arial.ttf`` font download) and ``amp=False`` (its AMP check would download ``yolo11n.pt``;
on the CPU AMP is off anyway). On the CPU it forces ``workers=0``.

Each run (row, seed) is one subprocess whose result is cached as JSON in
``benchmarks/results/detection_runs/`` (``detection_runs_quick/`` with ``--quick``), so an
interrupted benchmark keeps what it finished and the report says which rows are measured.

    python benchmarks/bench_detection.py --quick            # every row, 2 epochs, tiny data
    python benchmarks/bench_detection.py --worker           # run pending jobs in priority order
    python benchmarks/bench_detection.py --report           # timing + detection.md from the cache
    python benchmarks/run.py --only detection [--quick]     # all of it (nox -s bench)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

SEEDS = (0, 1, 2)
EPOCHS, BATCH, IMAGE_SIZE = 30, 16, 64
QUICK = {"epochs": 2, "train": 48, "val": 16}
DATA = {  # name -> (generator kwargs, train images, val images)
    "demo": ({"image_size": 64, "digit_size": (10, 25)}, 640, 160),
    "spread": (None, 640, 160),  # yolo_heads.data.SIZE_SPREAD
}
MATCHED = [  # resnet18 at (32, 64, 128, 224) + PAN 64: 3.05 M parameters, YOLOv8n 3.01 M
    "model.backbone_kwargs={channels: [32, 64, 128, 224]}",
    "model.neck_channels=64",
]
OLD_ASSIGNER = ["model.loss_kwargs={assigner: {iou: iou, min_side: 0}}"]
MOSAIC = ["augment.mosaic=1.0"]
AFFINE = ["augment.translate=0.1", "augment.affine_scale=0.5"]
HSV = ["augment.hsv_h=0.015", "augment.hsv_s=0.7", "augment.hsv_v=0.4"]
ALL_AUG = MOSAIC + AFFINE + HSV
RD = ["model.rd.enabled=true", "model.rd.num_atoms=64"]

# key -> (label, kind, settings); the order is the priority order of the runs.
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ultra_matched": ("Ultralytics YOLOv8n, optimiser matched", "ultralytics", {"matched": True}),
    "ultra_noaug": (
        "Ultralytics YOLOv8n, optimiser matched, augmentation off",
        "ultralytics",
        {"matched": True, "augment": "off"},
    ),
    "ultra_recipe": (
        "Ultralytics YOLOv8n, optimiser + bias warm-up matched, light jitter as yolo-heads'",
        "ultralytics",
        {"matched": True, "augment": "light", "bias_warmup": False},
    ),
    "yh_matched": (
        "yolo-heads 3.05M, new assigner + mosaic/affine/HSV",
        "yolo",
        {"o": MATCHED + ALL_AUG},
    ),
    "yh_matched_before": (
        "yolo-heads 3.05M, before (IoU assigner, no new augmentation)",
        "yolo",
        {"o": MATCHED + OLD_ASSIGNER},
    ),
    "yh_matched_assigner": ("yolo-heads 3.05M, + new assigner", "yolo", {"o": MATCHED}),
    "yh_matched_mosaic": (
        "yolo-heads 3.05M, + new assigner + mosaic",
        "yolo",
        {"o": MATCHED + MOSAIC},
    ),
    "yh_matched_affine": (
        "yolo-heads 3.05M, + new assigner + affine",
        "yolo",
        {"o": MATCHED + AFFINE},
    ),
    "yh_matched_hsv": ("yolo-heads 3.05M, + new assigner + HSV", "yolo", {"o": MATCHED + HSV}),
    "yh_demo": (
        "yolo-heads demo size 1.01M, new assigner + mosaic/affine/HSV",
        "yolo",
        {"o": ALL_AUG},
    ),
    "yh_demo_assigner": (
        "yolo-heads demo size 1.01M, + new assigner (the defaults)",
        "yolo",
        {"o": []},
    ),
    "yh_demo_before": ("yolo-heads demo size 1.01M, before", "yolo", {"o": OLD_ASSIGNER}),
    "ultra_default": ("Ultralytics YOLOv8n, its defaults", "ultralytics", {"matched": False}),
    "yh_matched_rd_random": (
        "yolo-heads 3.05M, new assigner + RD (random dictionary)",
        "yolo",
        {"o": MATCHED + RD},
    ),
    "yh_matched_rd_vision": (
        "yolo-heads 3.05M, new assigner + RD (vision-initialised)",
        "yolo",
        {"o": MATCHED + RD, "dictionary": "yh_matched_assigner"},
    ),
    "yh_matched_implicit": (
        "yolo-heads 3.05M, new assigner + implicit (iFA + iPR)",
        "yolo",
        {"o": [*MATCHED, "model.implicit.enabled=true"]},
    ),
    "spread_ultra_matched": (
        "size spread: Ultralytics YOLOv8n, optimiser matched",
        "ultralytics",
        {"matched": True, "data": "spread"},
    ),
    "spread_ultra_recipe": (
        "size spread: Ultralytics YOLOv8n, optimiser + bias warm-up matched, light jitter",
        "ultralytics",
        {"matched": True, "augment": "light", "bias_warmup": False, "data": "spread"},
    ),
    "spread_yh_assigner": (
        "size spread: yolo-heads 3.05M, new assigner (the defaults)",
        "yolo",
        {"o": MATCHED, "data": "spread"},
    ),
    "spread_yh_matched": (
        "size spread: yolo-heads 3.05M, new assigner + augmentation",
        "yolo",
        {"o": MATCHED + ALL_AUG, "data": "spread"},
    ),
}


def _jobs() -> list[tuple[str, int]]:
    """(row, seed) in priority order: the headline pair over 3 seeds, then every row's seed 0,
    then the other seeds."""
    head = [(k, s) for s in SEEDS for k in ("ultra_recipe", "yh_matched_assigner", "ultra_noaug")]
    head += [
        (k, s) for s in SEEDS for k in ROWS if k.startswith(("yh_matched_rd", "yh_matched_imp"))
    ]
    rest = [(k, s) for s in SEEDS for k in ROWS if (k, s) not in head]
    return head + rest


def _work(quick: bool) -> Path:
    return ROOT / "outputs" / ("bench_detection_quick" if quick else "bench_detection")


def _cache(quick: bool) -> Path:
    return RESULTS / ("detection_runs_quick" if quick else "detection_runs")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def make_data(name: str, quick: bool) -> dict[str, str]:
    """The COCO JSON pair (made once) and its YOLO-txt copy: {'train', 'val', 'yolo'}."""
    from yolo_heads.data import SIZE_SPREAD, make_digits_detection, write_yolo_txt

    root = _work(quick) / f"data_{name}"
    done = root / "paths.json"
    if done.is_file():
        return json.loads(done.read_text())
    kwargs, n_train, n_val = DATA[name]
    kwargs = dict(SIZE_SPREAD) if kwargs is None else kwargs
    if quick:
        n_train, n_val = QUICK["train"], QUICK["val"]
    train = make_digits_detection(root, n_train, seed=0, progress=False, **kwargs)
    val = make_digits_detection(root, n_val, seed=1, split="val", progress=False, **kwargs)
    yolo = write_yolo_txt({"train": train, "val": val}, root / "yolo")
    paths = {"train": str(train), "val": str(val), "yolo": str(yolo)}
    _write_json(done, paths)
    return paths


def _ultralytics_env(quick: bool) -> None:
    os.environ["YOLO_OFFLINE"] = "1"
    config = _work(quick) / "ultralytics_config"
    config.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config)


def train_ultralytics(
    key: str,
    seed: int,
    quick: bool,
    epochs: int,
    spec: dict[str, Any] | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """Train and score one Ultralytics run: ``spec`` (default ``ROWS[key]``'s) may name the
    yaml as ``model`` (default ``yolov8n.yaml``); ``work`` is the folder for its runs."""
    _ultralytics_env(quick)
    from ultralytics import YOLO, settings

    from yolo_heads.data import create_dataset
    from yolo_heads.evaluate import evaluate_coco

    settings.update({"sync": False})
    spec = ROWS[key][2] if spec is None else spec
    work = _work(quick) if work is None else work
    data = make_data(spec.get("data", "demo"), quick)
    model = YOLO(spec.get("model", "yolov8n.yaml"))
    args: dict[str, Any] = {
        "data": data["yolo"], "epochs": epochs, "imgsz": IMAGE_SIZE, "batch": BATCH,
        "device": "cpu", "workers": 0, "pretrained": False, "amp": False, "plots": False,
        "val": False, "seed": seed, "deterministic": True, "cache": True, "verbose": False,
        "project": str(work / "runs"), "name": f"{key}_s{seed}", "exist_ok": True,
    }  # fmt: skip
    if spec["matched"]:
        # yolo-heads' schedule: AdamW lr 4e-3, cosine to 0.05 x, no nbs loss scaling, warm-up
        # of 50 updates (1.25 epochs of 40), weight decay 5e-4 (Ultralytics' default too).
        args.update(optimizer="AdamW", lr0=4e-3, lrf=0.05, cos_lr=True, nbs=BATCH)
        args.update(warmup_epochs=1.25)
    if not spec.get("bias_warmup", True):
        # Ultralytics warms the biases up from lr 0.1 (25x lr0 here) unless its optimiser is
        # "auto"; yolo-heads (timm's scheduler) warms every group up from 0
        args.update(warmup_bias_lr=0.0)
    if spec.get("augment") in ("off", "light"):
        # no mosaic, HSV hue/saturation or flips: yolo-heads' defaults (Ultralytics' own:
        # mosaic 1.0, translate 0.1, scale 0.5, HSV 0.015/0.7/0.4, fliplr 0.5)
        args.update(mosaic=0.0, translate=0.0, scale=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
        args.update(fliplr=0.0)
    if spec.get("augment") == "light":
        # close to yolo-heads' default jitter: scale 0.7-1.0 with a random placement in the
        # space left, contrast 0.75-1.25 and brightness +-0.1
        args.update(scale=0.15, translate=0.05, hsv_v=0.25)
    start, start_cpu = time.perf_counter(), time.process_time()
    model.train(**args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    weights = Path(args["project"]) / args["name"] / "weights" / "last.pt"
    trained = YOLO(str(weights))
    val_set = create_dataset(data["val"], image_size=IMAGE_SIZE)
    files = [str(r.path) for r in val_set.records]
    detections = []
    for record, result in zip(
        val_set.records,
        trained.predict(files, imgsz=IMAGE_SIZE, conf=0.001, iou=0.7, max_det=300,
                        device="cpu", verbose=False, stream=True),
    ):  # fmt: skip
        boxes = result.boxes
        for (x0, y0, x1, y1), score, cls in zip(
            boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()
        ):
            detections.append(
                {
                    "image_id": record.image_id,
                    "category_id": int(val_set.label_to_category[int(cls)]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    metrics = evaluate_coco(val_set.ann_file, detections)
    params = sum(p.numel() for p in trained.model.parameters())
    return {
        "metrics": metrics, "seconds": seconds, "cpu_seconds": cpu_seconds, "params": params,
        "weights": str(weights),
    }  # fmt: skip


def train_yolo_heads(
    key: str,
    seed: int,
    quick: bool,
    epochs: int,
    spec: dict[str, Any] | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """Train and score one yolo-heads run: ``spec`` (default ``ROWS[key]``'s) gives the config
    overrides as ``o``; ``work`` is the folder for its runs."""
    from yolo_heads.config import load_config
    from yolo_heads.evaluate import evaluate_detector
    from yolo_heads.run import run_training

    spec = ROWS[key][2] if spec is None else spec
    work = _work(quick) if work is None else work
    data = make_data(spec.get("data", "demo"), quick)
    out = work / "runs" / f"{key}_s{seed}"
    overrides = [
        f"data.train={data['train']}", "data.val=null", f"out={out}",
        f"schedule.epochs={epochs}", f"schedule.seed={seed}",
        f"data.image_size={IMAGE_SIZE}", f"schedule.batch_size={BATCH}",
        f"augment.close_mosaic={1 if quick else 10}", *spec["o"],
    ]  # fmt: skip
    if "dictionary" in spec:
        overrides.append(f"model.rd.dictionary={_dictionary(spec['dictionary'], seed, quick)}")
    cfg = load_config("digits", overrides)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run_training(cfg, progress=False, plots=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    from yolo_heads.data import create_dataset

    val_set = create_dataset(data["val"], image_size=IMAGE_SIZE)
    metrics = evaluate_detector(
        result.model, val_set, conf=0.001, iou=0.7, max_det=300, progress=False
    )
    params = sum(p.numel() for p in result.model.parameters())
    return {
        "metrics": metrics, "seconds": seconds, "cpu_seconds": cpu_seconds, "params": params,
        "weights": str(result.last),
    }  # fmt: skip


def _dictionary(source: str, seed: int, quick: bool) -> str:
    """A 64-atom dict-init dictionary from the layer2 features of the trained ``source`` run
    (same seed) on 160 training images, as the demo builds its own."""
    import torch

    from dict_init import VisionEncoder, build_dictionary
    from yolo_heads import load_checkpoint
    from yolo_heads.data import create_dataset

    cached = _cache(quick) / f"{source}_s{seed}.json"
    if not cached.is_file():
        raise LookupError(f"{source} seed {seed} is not trained yet")
    path = _work(quick) / f"dictionary_{source}_s{seed}.safetensors"
    if not path.is_file():
        trained = load_checkpoint(json.loads(cached.read_text())["weights"])
        data = make_data("demo", quick)
        plain = create_dataset(data["train"], image_size=IMAGE_SIZE)
        images = torch.stack([plain[i][0] for i in range(min(160, len(plain)))])
        encoder = VisionEncoder(trained.backbone.body, "layer2", image_size=IMAGE_SIZE)
        atoms = 16 if quick else 64
        dictionary = build_dictionary(
            encoder, images, num_atoms=atoms, seed=0, positions_per_image=64, progress=False
        )
        dictionary.save(path)
    return str(path)


def run_job(key: str, seed: int, quick: bool) -> None:
    """Train and score one (row, seed) in this process; cache the result."""
    import torch

    torch.set_num_threads(1)
    epochs = QUICK["epochs"] if quick else EPOCHS
    kind = ROWS[key][1]
    train = train_ultralytics if kind == "ultralytics" else train_yolo_heads
    result = train(key, seed, quick, epochs)
    result.update(row=key, seed=seed, epochs=epochs, quick=quick, finished=time.time())
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    _write_json(cache / f"{key}_s{seed}.json", result)


def _claim_next(cache: Path, quick: bool, only: list[str] | None, tried: set[str]) -> str | None:
    """The first pending job in priority order, claimed by its lock file (``None``: none left).
    The queue is read afresh each time, so a job whose result was removed runs again."""
    for key, seed in _jobs():
        name = f"{key}_s{seed}"
        if (only and key not in only) or (quick and seed != SEEDS[0]) or name in tried:
            continue
        if (cache / f"{name}.json").is_file():
            continue
        source = ROWS[key][2].get("dictionary")
        if source and not (cache / f"{source}_s{seed}.json").is_file():
            continue  # its dictionary comes from that run's weights
        try:
            os.close(os.open(cache / f"{name}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return name
    return None


def worker(quick: bool, only: list[str] | None = None, max_jobs: int | None = None) -> None:
    """Run pending jobs in priority order, each in a subprocess, until none is left; a lock
    file per job lets several workers share the queue. A job that fails is logged and not
    tried again by this worker."""
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    tried: set[str] = set()
    while max_jobs is None or len(tried) < max_jobs:
        name = _claim_next(cache, quick, only, tried)
        if name is None:
            return
        tried.add(name)
        key, seed = name.rsplit("_s", 1)
        log = _work(quick) / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--job", key, "--seed", seed]
        command += ["--quick"] if quick else []
        start = time.perf_counter()
        print(f"{name}: training ({log})", flush=True)
        with log.open("w") as handle:
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
        print(f"{name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        (cache / f"{name}.lock").unlink()


def _results(quick: bool) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ROWS}
    cache = _cache(quick)
    for path in sorted(cache.glob("*.json")) if cache.is_dir() else []:
        result = json.loads(path.read_text())
        if result["row"] in rows:
            rows[result["row"]].append(result)
    return rows


def inference_ms(results: dict[str, list[dict[str, Any]]], quick: bool, rounds: int = 5):
    """Median ms per 64 px image at batch 1 of every row's seed-0 model, interleaved: each
    round times every model once on the same 32 images (fused conv + BN; the network and its
    decoding, not NMS; Ultralytics' DetectionModel in eval mode returns decoded boxes too)."""
    import torch

    from yolo_heads import load_checkpoint
    from yolo_heads.fuse import fuse_for_inference

    torch.set_num_threads(1)
    models = {}
    for key, runs in results.items():
        first = next((r for r in runs if r["seed"] == SEEDS[0]), None)
        if first is None or not Path(first["weights"]).exists():
            continue
        if ROWS[key][1] == "ultralytics":
            _ultralytics_env(quick)
            from ultralytics import YOLO

            net = YOLO(first["weights"]).model.float().fuse(verbose=False).eval()
            models[key] = lambda x, net=net: net(x)
        else:
            example = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE)
            net = fuse_for_inference(load_checkpoint(first["weights"]).eval(), example)
            models[key] = lambda x, net=net: net.head.decode(net(x))
    images = torch.rand(32, 1, 3, IMAGE_SIZE, IMAGE_SIZE)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for f in models.values():
            f(images[0])
        for _ in range(rounds):
            for key, f in models.items():
                start = time.perf_counter()
                for x in images:
                    f(x)
                times[key].append((time.perf_counter() - start) / len(images) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def assigner_agreement(trials: int = 20) -> dict[str, float]:
    """Our TaskAlignedAssigner against Ultralytics' on the same random 64 px inputs (small and
    large boxes, predictions near them): share of anchors with the same foreground decision and
    ground-truth index, the largest soft-target difference, and how many differing anchors
    carry a zero soft target in both (they weigh nothing in any loss term)."""
    import torch
    from ultralytics.utils.tal import TaskAlignedAssigner as Reference

    from yolo_heads import TaskAlignedAssigner
    from yolo_heads.boxes import make_anchor_points

    ours = TaskAlignedAssigner(topk=10, alpha=0.5, beta=6.0, min_side=16.0)
    same_fg = same_gt = total = weightless = differ_total = 0
    worst = 0.0
    points, _ = make_anchor_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32])
    for trial in range(trials):
        g = torch.Generator().manual_seed(trial)
        b, m, c = 4, 6, 10
        reference = Reference(topk=10, num_classes=c, alpha=0.5, beta=6.0, stride=[8, 16, 32])
        centre = torch.rand(b, m, 2, generator=g) * 56 + 4
        side = torch.exp(torch.rand(b, m, 2, generator=g) * 2.3) * 4
        gts = torch.cat((centre - side / 2, centre + side / 2), -1).clamp(0, 64)
        labels = torch.randint(0, c, (b, m), generator=g)
        mask = torch.rand(b, m, generator=g) > 0.25
        mask[:, 0] = True
        gts = gts * mask[..., None]
        near = gts[:, torch.randint(0, m, (points.shape[0],), generator=g)]
        preds = near + torch.randn(b, points.shape[0], 4, generator=g) * 4
        preds = torch.cat((preds[..., :2], torch.maximum(preds[..., 2:], preds[..., :2] + 1)), -1)
        scores = torch.rand(b, points.shape[0], c, generator=g)
        mine = ours(scores, preds, points, labels, gts, mask)
        _, _, ref_scores, ref_fg, ref_gt = reference(
            scores, preds, points, labels[..., None], gts, mask[..., None].float()
        )
        fg = mine.fg_mask & ref_fg
        differ = mine.fg_mask != ref_fg
        weightless += int(
            (differ & (ref_scores.sum(-1) < 1e-6) & (mine.scores.sum(-1) < 1e-6)).sum()
        )
        differ_total += int(differ.sum())
        same_fg += int((mine.fg_mask == ref_fg).sum())
        same_gt += int((mine.gt_index[fg] == ref_gt[fg]).sum()) + int((~fg).sum())
        total += mine.fg_mask.numel()
        worst = max(worst, float((mine.scores - ref_scores).abs().max()))
    return {
        "fg": same_fg / total,
        "gt": same_gt / total,
        "score": worst,
        "differ": differ_total,
        "differ_weightless": weightless,
        "trials": trials,
    }


def _peer_versions() -> str:
    from importlib import metadata

    found = []
    for name in ("ultralytics", "pycocotools", "torchvision"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found) or "unknown"


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "not measured"
    if all(v == -1 for v in values):
        return "-1"  # pycocotools: no ground truth in that size range
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


LOSS_AND_WARMUP = """
Loss and warm-up, yolo-heads' `AnchorFreeLoss` + trainer against Ultralytics' `v8DetectionLoss`
+ trainer (8.4):

- The same: BCE class loss summed over anchors and classes and divided by the sum of the soft
  targets (at least 1); CIoU box loss and DFL per foreground anchor, weighted by its soft target
  and divided by the same sum; gains box 7.5, DFL 1.5, class 0.5; the task-aligned assigner
  (CIoU, alpha 0.5, beta 6, top 10; checked below).
- Differs: Ultralytics multiplies the total by the batch size and accumulates gradients up to
  `nbs` = 64 images, scaling the weight decay by `batch / nbs`; yolo-heads' loss is per batch
  (no batch factor), so the learning rate means the same at any batch size. Under AdamW a
  constant loss factor cancels (up to Adam's eps), which is why the matched rows set `nbs` to
  the batch and compare directly; with SGD the factor is part of Ultralytics' step size.
- Warm-up: yolo-heads warms every parameter group up linearly from lr/50 over 50 updates (at
  most a quarter of the run), then cosine to 0.05 lr (timm's `CosineLRScheduler`, per update).
  Ultralytics warms up over 3 epochs (the matched rows: 1.25 epochs = 50 updates), its biases
  from lr 0.1 down to lr0 (set to 0 only when it picks the optimiser itself, `optimizer=auto`;
  the row that says 'bias warm-up matched' sets `warmup_bias_lr=0`), and SGD momentum from 0.8.
  yolo-heads has no separate bias warm-up (timm's scheduler has none); both initialise the
  biases as YOLOv8 does (DFL bins flat, class logits at log(5 / classes / (640 / stride)^2),
  for a 640 px image whatever the training size).
"""


COMPARE = [  # (row, against): the questions the table answers
    ("yh_matched_assigner", "ultra_recipe"),
    ("yh_matched_assigner", "ultra_matched"),
    ("ultra_recipe", "ultra_matched"),
    ("ultra_noaug", "ultra_matched"),
    ("yh_matched_before", "ultra_matched"),
    ("yh_matched", "ultra_matched"),
    ("yh_matched", "yh_matched_before"),
    ("yh_matched_assigner", "yh_matched_before"),
    ("yh_matched_mosaic", "yh_matched_assigner"),
    ("yh_matched_affine", "yh_matched_assigner"),
    ("yh_matched_hsv", "yh_matched_assigner"),
    ("yh_demo_assigner", "yh_demo_before"),
    ("yh_demo", "yh_demo_assigner"),
    ("yh_matched_rd_random", "yh_matched_assigner"),
    ("yh_matched_rd_vision", "yh_matched_assigner"),
    ("yh_matched_implicit", "yh_matched_assigner"),
    ("spread_yh_assigner", "spread_ultra_recipe"),
    ("spread_yh_matched", "spread_ultra_matched"),
]


def _comparisons(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per comparison: the AP difference of the means and whether it is beyond the
    seed spread (|difference| > the larger sd), or why it cannot be said."""
    lines = ["AP differences (mean of the seeds measured):", ""]
    for row, other in COMPARE:
        a = [r["metrics"]["AP"] for r in results[row]]
        b = [r["metrics"]["AP"] for r in results[other]]
        name = f"{ROWS[row][0]} vs {ROWS[other][0]}"
        if not a or not b:
            lines.append(f"- {name}: not measured yet")
            continue
        diff = statistics.fmean(a) - statistics.fmean(b)
        if len(a) > 1 and len(b) > 1:
            spread = max(statistics.stdev(a), statistics.stdev(b))
            verdict = "beyond the seed spread" if abs(diff) > spread else "within the seed spread"
            verdict += f" (largest sd {spread:.3f})"
        else:
            verdict = f"{len(a)} and {len(b)} seed(s): no spread to compare with yet"
        lines.append(f"- {name}: {diff:+.3f} AP, {verdict}")
    return lines


def report(quick: bool, timing: bool = True) -> str:
    from _common import markdown_table, plotting, save_figure

    results = _results(quick)
    ms = {}
    if timing:
        with contextlib.suppress(Exception):
            ms = inference_ms(results, quick, rounds=2 if quick else 5)
    epochs = QUICK["epochs"] if quick else EPOCHS
    lines = [
        f"Digits detection from scratch on the CPU, {epochs} epochs, batch {BATCH}, "
        f"{IMAGE_SIZE} px, one torch thread per run. "
        + (
            f"**Quick run**: {QUICK['train']} train / {QUICK['val']} val images, seed 0 only; "
            "the numbers only show that every row runs.\n"
            if quick
            else "Data: the demo's set (640 train / 160 val images, digits 10-25 px, all COCO-"
            "small) unless the row says size spread (`SIZE_SPREAD`: 160 px canvases, 54% small, "
            "38% medium, 8% large boxes, trained at 64 px). AP is pycocotools' on the val JSON "
            "from predictions at conf 0.001, IoU 0.7, max 300 per image (the same call for every "
            "row), mean ± sd over the seeds measured.\n"
        ),
        "",
        f"Versions: {_peer_versions()}. Two runs trained at a time (one torch thread each) "
        "beside other work on the 2 cores, so wall seconds vary with the load; 'train CPU s' "
        "(the run's own CPU time) does not. 'not measured': the run has not finished yet.",
        "",
    ]
    header = [
        "row",
        "params (M)",
        "seeds",
        "AP",
        "AP50",
        "APs",
        "APm",
        "APl",
        "train s",
        "train CPU s",
    ]
    header.append("ms/img")
    table = []
    for key, (label, _kind, _spec) in ROWS.items():
        runs = sorted(results[key], key=lambda r: r["seed"])
        get = lambda name, runs=runs: [r["metrics"][name] for r in runs]  # noqa: E731
        params = f"{runs[0]['params'] / 1e6:.2f}" if runs else ""
        table.append(
            [
                label, params, ",".join(str(r["seed"]) for r in runs) or "-",
                _fmt(get("AP")), _fmt(get("AP50")), _fmt(get("APs")), _fmt(get("APm")),
                _fmt(get("APl")), _fmt([r["seconds"] for r in runs], 0),
                _fmt([r["cpu_seconds"] for r in runs if "cpu_seconds" in r], 0),
                f"{ms[key]:.2f}" if key in ms else "",
            ]
        )  # fmt: skip
    lines.append(markdown_table(header, table, "lrrrrrrrrrr"))
    lines.append("")
    lines.append(
        "train s: wall seconds of the training call; train CPU s: its process CPU time (one "
        "torch thread, so about the wall time on an idle core; unaffected by other work on the "
        "machine). Ultralytics validates its final epoch and best.pt inside it, yolo-heads "
        "is given no val set: the same pycocotools call after "
        "training scores every row. ms/img: seed-0 model, batch 1, fused, network "
        "and box decoding without NMS, median of interleaved rounds in one process. APm / APl "
        "are -1 on the demo set (no medium or large digits). 'not measured': the run did not "
        "finish before this report was written."
    )
    lines.append("")
    lines.extend(_comparisons(results))
    lines.append(LOSS_AND_WARMUP)
    with contextlib.suppress(ImportError):
        _ultralytics_env(quick)
        agree = assigner_agreement()
        lines.append(
            f"\nAssigner check (same random inputs, {agree['trials']} batches of 4 images, 84 "
            "anchor points, small and large boxes): yolo-heads' `TaskAlignedAssigner` and "
            "Ultralytics' `ultralytics.utils.tal.TaskAlignedAssigner(topk=10, alpha=0.5, "
            f"beta=6, stride=[8, 16, 32])` agree on the foreground of {agree['fg']:.1%} of "
            f"anchors and on the ground truth of {agree['gt']:.1%}; soft targets differ by at "
            f"most {agree['score']:.1e}. Of the {agree['differ']} anchors that differ, "
            f"{agree['differ_weightless']} have a zero soft target in both: Ultralytics counts "
            "zero-alignment candidates in its top 10 as foreground, and they weigh nothing in "
            "any loss term."
        )
    plt = plotting()
    if plt is not None and any(results.values()):
        fig, ax = plt.subplots(figsize=(10, 5))
        colours = plt.get_cmap("tab20").colors
        for i, (key, runs) in enumerate(r for r in results.items() if r[1]):
            if key.startswith("spread"):
                continue
            ax.scatter(
                [r.get("cpu_seconds", r["seconds"]) for r in runs],
                [r["metrics"]["AP"] for r in runs],
                label=ROWS[key][0], s=26, color=colours[i % 20], marker="os^Dv"[i % 5],
            )  # fmt: skip
        ax.set_xlabel("training CPU seconds (1 thread)")
        ax.set_ylabel("AP (COCO, val)")
        ax.set_title(f"digits, {epochs} epochs: AP vs training time (one point per seed)")
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        name = "detection_quick.png" if quick else "detection.png"
        lines.append(f"\n![AP vs training seconds]({save_figure(fig, name)})\n")
        plt.close(fig)
    return "\n".join(lines) + "\n"


def main(quick: bool = False) -> str:
    """run.py's entry: run every pending job (one worker), then the report."""
    worker(quick)
    return report(quick)


def _cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--job", help="run one row (internal: the worker's subprocess)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help="run pending jobs")
    parser.add_argument("--only", nargs="*", help="rows the worker runs")
    parser.add_argument("--max-jobs", type=int, help="the worker stops after this many")
    parser.add_argument("--report", action="store_true", help="write results/detection.md")
    parser.add_argument("--no-timing", action="store_true", help="report without ms/img")
    args = parser.parse_args()
    if args.job:
        run_job(args.job, args.seed, args.quick)
    elif args.worker:
        worker(args.quick, args.only, args.max_jobs)
    else:
        import run  # the header every result states

        body = report(args.quick, not args.no_timing) if args.report else main(args.quick)
        out = RESULTS / ("detection_quick.md" if args.quick else "detection.md")
        argv = ["--only", "detection"] + (["--quick"] if args.quick else [])
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(run.header("detection", argv) + body)
        tmp.replace(out)
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
