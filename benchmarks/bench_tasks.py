"""YOLO-RD's Table 2 on the digits: baseline vs + vision-initialised RD on three tasks, 3 seeds.

YOLO-RD (Table 2) reports the Retriever-Dictionary on classification (CIFAR-100 top-1
74.86 -> 75.70), detection (COCO box AP 50.04 -> 51.75) and segmentation (mask AP 40.53 ->
41.56). This benchmark asks the same question on the generated handwritten digits, on the CPU:
per task one recipe, trained from scratch twice per seed, once plain ("baseline") and once with
an RD whose dictionary is vision-initialised (dict-init: k-means of the *baseline's* trained
backbone features at the RD's place, same seed), as ``bench_detection.py`` and
``examples/demo.py`` do for detection. Tasks:

- ``detect``: bench_detection's rows "yolo-heads 3.05M, + new assigner" and "... + RD
  (vision-initialised)" (resnet18 at (32, 64, 128, 224) + PAN 64, 30 epochs, 64 px, 64 atoms
  after layer2); their cached runs (``results/detection_runs/``) are reused, the same recipe.
- ``classify``: the authors' YOLOv9 classifier ``yolov9_c_cls`` vs ``yolo_rd_9c_cls`` (rd-9c's
  RD block after the stride-8 GELAN block B3) with 64 atoms from the baseline's B3 features,
  trained by ``timm-knowledge train`` (the one classification path) on 32 px crops of the
  demo's digits (``yolo_heads.data.make_digits_classification``); top-1 / top-5 on the val crops.
- ``segment``: yolo-heads ``task=segment``: the digits config's detector (1.05 M with its
  segmentation head) on the demo's digits with their exact masks, RD after layer2 with 64 atoms
  from the baseline's layer2 features; mask AP (pycocotools ``segm``), box AP beside it.

Each (task, arm, seed) is one subprocess whose result is cached as JSON in
``results/tasks_runs/`` (``tasks_runs_quick/`` with ``--quick``), so an interrupted run keeps
what it finished. Run it niced with one thread per run:

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_tasks.py --worker [--quick]
    python benchmarks/bench_tasks.py --report [--quick]      # results/tasks.md from the cache
    python benchmarks/run.py --only tasks [--quick]          # both
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

SEEDS = (0, 1, 2)
ARMS = ("baseline", "rd")  # without / with the vision-initialised Retriever-Dictionary
ATOMS = 64  # dictionary atoms in every task (bench_detection's RD rows use 64)


@dataclass(frozen=True)
class Task:
    """One row of the table: how to train and score one (arm, seed) and what it reports."""

    name: str
    metric: str  # the headline metric, key of the run's "metrics"
    label: str  # e.g. "top-1 (%)"
    paper: str  # YOLO-RD Table 2: without -> with RD
    recipe: str
    run: Callable[[str, int, bool], dict[str, Any]]


TASKS: dict[str, Task] = {}


def task(name: str, metric: str, label: str, paper: str, recipe: str):
    """Register ``run(arm, seed, quick) -> {"metrics": {metric: value, ...}, "params": ...}``
    as the task ``name`` (arms: ``"baseline"``, ``"rd"``)."""

    def wrap(run: Callable[[str, int, bool], dict[str, Any]]):
        TASKS[name] = Task(name, metric, label, paper, recipe, run)
        return run

    return wrap


def _work(quick: bool) -> Path:
    return ROOT / "outputs" / ("bench_tasks_quick" if quick else "bench_tasks")


def _cache(quick: bool) -> Path:
    return RESULTS / ("tasks_runs_quick" if quick else "tasks_runs")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _cached(task_name: str, arm: str, seed: int, quick: bool) -> dict[str, Any] | None:
    path = _cache(quick) / f"{task_name}_{arm}_s{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ------------------------------------------------------------------------------ detection
DETECTION_ROWS = {"baseline": "yh_matched_assigner", "rd": "yh_matched_rd_vision"}


@task(
    "detect",
    metric="AP",
    label="box AP",
    paper="COCO box AP 50.04 -> 51.75 (YOLOv9-C)",
    recipe=(
        "bench_detection's yolo-heads 3.05M (resnet18 at (32, 64, 128, 224) + PAN 64, new "
        "assigner), 30 epochs, batch 16, 64 px, 640 / 160 demo images; RD: 64 atoms after "
        "layer2 from the baseline's layer2 features (160 images); the cached runs are reused"
    ),
)
def detect(arm: str, seed: int, quick: bool) -> dict[str, Any]:
    """bench_detection's cached run of the same recipe (trained there first if missing)."""
    import bench_detection as detection

    key = DETECTION_ROWS[arm]
    path = detection._cache(quick) / f"{key}_s{seed}.json"
    if not path.is_file():
        if (
            arm == "rd"
            and not (
                detection._cache(quick) / f"{DETECTION_ROWS['baseline']}_s{seed}.json"
            ).is_file()
        ):
            detection.run_job(DETECTION_ROWS["baseline"], seed, quick)
        detection.run_job(key, seed, quick)
    run = json.loads(path.read_text())
    return {
        "metrics": run["metrics"],
        "params": run["params"],
        "seconds": run["seconds"],
        "cpu_seconds": run.get("cpu_seconds"),
        "source": str(path.relative_to(ROOT)),
        "source_finished": run.get("finished"),  # when bench_detection trained it
    }


# ------------------------------------------------------------------------- classification
CLS = {
    "epochs": 10, "batch": 32, "image_size": 32, "train_images": 320, "val_images": 160,
    "opt": "adamw", "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 1,
}  # fmt: skip
CLS_QUICK = {"epochs": 1, "train_images": 24, "val_images": 8}
CLS_MODELS = {"baseline": "yolov9_c_cls", "rd": "yolo_rd_9c_cls"}
CLS_RD_AT = "layers.4"  # B3, where rd-9c's RD block sits


def _cls_settings(quick: bool) -> dict[str, Any]:
    return {**CLS, **(CLS_QUICK if quick else {})}


def classification_data(quick: bool) -> Path:
    """The image folder (made once): 32 px crops of the demo's digits canvases, train/val."""
    from yolo_heads.data import make_digits_classification

    s = _cls_settings(quick)
    root = _work(quick) / "digits_classification"
    done = root / "done.json"
    if not done.is_file():
        canvases = {"image_size": 64, "digit_size": (10, 25), "progress": False}
        make_digits_classification(
            root, s["train_images"], seed=0, split="train", crop_size=s["image_size"],
            **canvases,
        )  # fmt: skip
        make_digits_classification(
            root, s["val_images"], seed=1, split="val", crop_size=s["image_size"], **canvases
        )
        _write_json(done, {"train": s["train_images"], "val": s["val_images"]})
    return root


def _cls_dictionary(seed: int, quick: bool) -> Path:
    """64 atoms by dict-init from the trained baseline's B3 features (same seed)."""
    import numpy as np
    import timm
    import torch
    from PIL import Image

    from dict_init import VisionEncoder, build_dictionary

    baseline = _cached("classify", "baseline", seed, quick)
    if baseline is None:
        raise LookupError(f"classify baseline seed {seed} is not trained yet")
    path = _work(quick) / f"classify_dictionary_s{seed}.safetensors"
    if not path.is_file():
        model = timm.create_model(f"local-dir:{baseline['weights']}", pretrained=True)
        files = sorted((classification_data(quick) / "train").glob("*/*.png"))
        images = torch.stack(
            [
                torch.from_numpy(
                    np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
                ).permute(2, 0, 1)
                for f in files
            ]
        )
        size = _cls_settings(quick)["image_size"]
        encoder = VisionEncoder(model, CLS_RD_AT, image_size=size)
        atoms = 16 if quick else ATOMS
        dictionary = build_dictionary(
            encoder, images, num_atoms=atoms, seed=0, positions_per_image=16, progress=False
        )
        dictionary.save(path)
    return path


@task(
    "classify",
    metric="top1",
    label="top-1 (%)",
    paper="CIFAR-100 top-1 74.86 -> 75.70 (YOLOv9 GELAN classifier)",
    recipe=(
        "timm-knowledge train: yolov9_c_cls (the authors' v9-c-cls, 8.94 M) vs yolo_rd_9c_cls "
        "(rd-9c's RD block at B3, authors' variant) with 64 atoms from the baseline's B3 "
        "features; 32 px crops of the demo's digits (320 / 160 canvases: 742 / 376 crops), "
        "10 epochs, batch 32, AdamW lr 2e-3, wd 0.05, 1 warm-up epoch, cosine, no "
        "augmentation, one thread; top-1 of the final model on the val crops"
    ),
)
def classify(arm: str, seed: int, quick: bool) -> dict[str, Any]:
    """Train the classifier of ``arm`` with timm-knowledge's trainer; its final top-1 / top-5."""
    import timm

    from timm_knowledge.train import TrainConfig, train

    s = _cls_settings(quick)
    data = classification_data(quick)
    out = _work(quick) / "runs" / f"classify_{arm}_s{seed}"
    kwargs = {"dictionary": str(_cls_dictionary(seed, quick))} if arm == "rd" else {}
    cfg = TrainConfig(
        model=CLS_MODELS[arm], model_kwargs=kwargs, data_dir=str(data), output=str(out),
        val_split="val", epochs=s["epochs"], batch_size=s["batch"], image_size=s["image_size"],
        opt=s["opt"], lr=s["lr"], weight_decay=s["weight_decay"],
        warmup_epochs=s["warmup_epochs"], no_aug=True, seed=seed, threads=1, workers=0,
    )  # fmt: skip
    start, start_cpu = time.perf_counter(), time.process_time()
    final = train(cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    model = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True)
    return {
        "metrics": {"top1": final["val_top1"], "top5": final["val_top5"]},
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "weights": str(out / "model"),
    }


# --------------------------------------------------------------------------- segmentation
SEG = {"epochs": 10, "batch": 16, "image_size": 64, "train_images": 640, "val_images": 160}
SEG_QUICK = {"epochs": 1, "train_images": 24, "val_images": 8}
SEG_MODEL = [  # the digits config's resnet18 at 1/4 width + PAN 32, with a segmentation head
    "task=segment", "model.head_kwargs={num_masks: 16}",
    "schedule.threads=1", "data.num_workers=0", "augment.scale=[0.7, 1.0]",
]  # fmt: skip
SEG_RD = ["model.rd.enabled=true", f"model.rd.num_atoms={ATOMS}"]  # after layer2 (stride 8)


def _seg_settings(quick: bool) -> dict[str, Any]:
    return {**SEG, **(SEG_QUICK if quick else {})}


def segmentation_data(quick: bool) -> dict[str, str]:
    """The demo's digits canvases (made once) with their exact masks (each digit's own ink)."""
    from yolo_heads.data import make_digits_detection

    s = _seg_settings(quick)
    root = _work(quick) / "digits_segmentation"
    done = root / "paths.json"
    if not done.is_file():
        kwargs = {"image_size": 64, "digit_size": (10, 25), "progress": False}
        train = make_digits_detection(root, s["train_images"], seed=0, **kwargs)
        val = make_digits_detection(root, s["val_images"], seed=1, split="val", **kwargs)
        _write_json(done, {"train": str(train), "val": str(val)})
    return json.loads(done.read_text())


def _seg_dictionary(seed: int, quick: bool) -> Path:
    """64 atoms by dict-init from the trained baseline segmenter's layer2 features (same seed,
    160 training images), as bench_detection's vision-initialised RD."""
    import torch

    from dict_init import VisionEncoder, build_dictionary
    from yolo_heads import load_checkpoint
    from yolo_heads.data import create_dataset

    baseline = _cached("segment", "baseline", seed, quick)
    if baseline is None:
        raise LookupError(f"segment baseline seed {seed} is not trained yet")
    path = _work(quick) / f"segment_dictionary_s{seed}.safetensors"
    if not path.is_file():
        trained = load_checkpoint(baseline["weights"])
        size = _seg_settings(quick)["image_size"]
        plain = create_dataset(segmentation_data(quick)["train"], image_size=size)
        images = torch.stack([plain[i][0] for i in range(min(160, len(plain)))])
        encoder = VisionEncoder(trained.backbone.body, "layer2", image_size=size)
        dictionary = build_dictionary(
            encoder, images, num_atoms=16 if quick else ATOMS, seed=0, positions_per_image=64,
            progress=False,
        )  # fmt: skip
        dictionary.save(path)
    return path


@task(
    "segment",
    metric="mask_AP",
    label="mask AP",
    paper="COCO mask AP 40.53 -> 41.56 (YOLOv9-C)",
    recipe=(
        "yolo-heads task=segment: the digits config's detector (resnet18 at (16, 32, 64, 128) + "
        "PAN 32, anchor-free) with a segmentation head (16 prototypes at stride 4, coefficients "
        "per anchor, BCE mask loss cropped to the box), 10 epochs, batch 16, 64 px, lr 4e-3, "
        "scale jitter 0.7-1.0, one thread, on the demo's digits with exact masks (640 / 160 "
        "canvases); RD: 64 atoms after layer2 from the baseline's layer2 features; mask AP "
        "(pycocotools segm) of the final EMA model on val, box AP beside it in the run's JSON"
    ),
)
def segment(arm: str, seed: int, quick: bool) -> dict[str, Any]:
    """Train the segmenter of ``arm`` with yolo-heads' trainer; its final mask and box AP."""
    from yolo_heads.config import load_config
    from yolo_heads.data import create_dataset
    from yolo_heads.evaluate import evaluate_detector
    from yolo_heads.run import run_training

    s = _seg_settings(quick)
    data = segmentation_data(quick)
    out = _work(quick) / "runs" / f"segment_{arm}_s{seed}"
    overrides = [
        f"data.train={data['train']}", "data.val=null", f"out={out}",
        f"schedule.epochs={s['epochs']}", f"schedule.seed={seed}",
        f"schedule.batch_size={s['batch']}", f"data.image_size={s['image_size']}", *SEG_MODEL,
    ]  # fmt: skip
    if arm == "rd":
        overrides += [*SEG_RD, f"model.rd.dictionary={_seg_dictionary(seed, quick)}"]
    cfg = load_config("digits", overrides)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run_training(cfg, progress=False, plots=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    val_set = create_dataset(data["val"], image_size=s["image_size"], masks=True)
    metrics = evaluate_detector(
        result.model, val_set, conf=0.001, iou=0.7, max_det=300, progress=False
    )
    return {
        "metrics": metrics,
        "params": sum(p.numel() for p in result.model.parameters()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "weights": str(result.last),
    }


SEGMENT_PLACEHOLDER = ("segment", "mask AP", "COCO mask AP 40.53 -> 41.56 (YOLOv9-C)")


# ------------------------------------------------------------------------------- running
def run_job(task_name: str, arm: str, seed: int, quick: bool) -> None:
    """Train and score one (task, arm, seed) in this process; cache the result."""
    import torch

    torch.set_num_threads(1)
    result = TASKS[task_name].run(arm, seed, quick)
    result.update(task=task_name, arm=arm, seed=seed, quick=quick, finished=time.time())
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    _write_json(cache / f"{task_name}_{arm}_s{seed}.json", result)


def _jobs(quick: bool, only: list[str] | None) -> list[tuple[str, str, int]]:
    seeds = SEEDS[:1] if quick else SEEDS
    names = [n for n in TASKS if not only or n in only]
    # per seed the baseline first: the RD arm's dictionary comes from its weights
    return [(n, arm, seed) for seed in seeds for n in names for arm in ARMS]


def worker(quick: bool, only: list[str] | None = None) -> None:
    """Run every pending job, one subprocess at a time; a failed job is logged and skipped."""
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    for name, arm, seed in _jobs(quick, only):
        if _cached(name, arm, seed, quick) is not None:
            continue
        if arm == "rd" and _cached(name, "baseline", seed, quick) is None:
            print(f"{name} rd s{seed}: skipped (its baseline did not finish)", flush=True)
            continue
        log = _work(quick) / "logs" / f"{name}_{arm}_s{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--job", name, arm, str(seed)]
        command += ["--quick"] if quick else []
        start = time.perf_counter()
        print(f"{name} {arm} s{seed}: training ({log})", flush=True)
        with log.open("w") as handle:
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
        print(f"{name} {arm} s{seed}: exit {code} after {time.perf_counter() - start:.0f} s")


# ------------------------------------------------------------------------------- report
def _values(name: str, arm: str, metric: str, quick: bool) -> list[float]:
    seeds = SEEDS[:1] if quick else SEEDS
    runs = [_cached(name, arm, s, quick) for s in seeds]
    return [float(r["metrics"][metric]) for r in runs if r is not None]


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "not measured"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _verdict(base: list[float], rd: list[float], digits: int) -> str:
    if not base or not rd:
        return "not measured"
    diff = statistics.fmean(rd) - statistics.fmean(base)
    if len(base) < 2 or len(rd) < 2:
        return f"{diff:+.{digits}f} (no spread with one seed)"
    spread = max(statistics.stdev(base), statistics.stdev(rd))
    where = "beyond the spread" if abs(diff) > spread else "within spread"
    return f"{diff:+.{digits}f}, {where} (largest sd {spread:.{digits}f})"


def _final_train_loss(name: str, arm: str, quick: bool) -> list[float]:
    """The last epoch's training loss of each seed's run (its ``metrics.jsonl``)."""
    seeds = SEEDS[:1] if quick else SEEDS
    values = []
    for seed in seeds:
        run = _cached(name, arm, seed, quick)
        log = Path(run["weights"]).parent / "metrics.jsonl" if run else None
        if log is not None and log.is_file():
            values.append(json.loads(log.read_text().splitlines()[-1])["train_loss"])
    return values


def _cls_updates(quick: bool) -> int:
    """Optimiser updates per epoch of the classification runs (timm's training loader drops
    the last incomplete batch)."""
    train = classification_data(quick) / "train"
    return len(list(train.glob("*/*.png"))) // _cls_settings(quick)["batch"]


def report(quick: bool) -> str:
    from _common import markdown_table

    rows, notes = [], []
    names = [*TASKS, *([] if "segment" in TASKS else [SEGMENT_PLACEHOLDER[0]])]
    for name in names:
        if name not in TASKS:
            _, label, paper = SEGMENT_PLACEHOLDER
            rows.append([name, label, "not measured", "not measured", "placeholder", paper, "-"])
            continue
        t = TASKS[name]
        digits = 2 if t.metric.startswith("top") else 3
        base = _values(name, "baseline", t.metric, quick)
        rd = _values(name, "rd", t.metric, quick)
        params = [(_cached(name, arm, SEEDS[0], quick) or {}).get("params") for arm in ARMS]
        sizes = " / ".join(f"{p / 1e6:.2f}" if p else "-" for p in params)
        rows.append(
            [name, t.label, _fmt(base, digits), _fmt(rd, digits), _verdict(base, rd, digits),
             t.paper, sizes]
        )  # fmt: skip
        notes.append(f"- **{name}**: {t.recipe}.")
        if name == "classify":
            top5 = [_values(name, arm, "top5", quick) for arm in ARMS]
            notes.append(
                f"  top-5: baseline {_fmt(top5[0], 2)}, + RD {_fmt(top5[1], 2)} "
                f"({_verdict(top5[0], top5[1], 2)})."
            )
            losses = [_final_train_loss(name, arm, quick) for arm in ARMS]
            notes.append(
                f"  final training loss: baseline {_fmt(losses[0], 3)}, + RD {_fmt(losses[1], 3)}"
                f"; the schedule is short ({_cls_settings(quick)['epochs']} epochs of "
                f"{_cls_updates(quick)} updates), so top-1 measures how far each arm gets in it "
                "(how fast it learns), not converged accuracy."
            )
        seconds = [
            r.get("cpu_seconds") or r.get("seconds")
            for arm in ARMS
            for s in SEEDS
            if (r := _cached(name, arm, s, quick)) is not None
        ]
        if seconds:
            notes.append(f"  train CPU s per run: {statistics.fmean(seconds):.0f} (mean).")
        reused = [
            r
            for arm in ARMS
            for s in SEEDS
            if (r := _cached(name, arm, s, quick)) and "source" in r
        ]
        if reused:
            when = max(r.get("source_finished") or 0 for r in reused)
            notes.append(
                f"  {len(reused)} runs reused from `{Path(reused[0]['source']).parent}/` (latest "
                f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))})."
            )
    seeds = "seed 0 only (--quick)" if quick else "seeds 0, 1, 2"
    table = markdown_table(
        ["task", "metric", "baseline", "+ RD (vision-initialised)", "RD - baseline",
         "YOLO-RD Table 2 (w/o -> w/ RD)", "params M (base / RD)"],
        rows,
    )  # fmt: skip
    return "\n".join(
        [
            f"YOLO-RD Table 2's question on the generated digits, on the CPU: each task's recipe "
            f"trained from scratch without and with a vision-initialised Retriever-Dictionary "
            f"({seeds}; mean ± sd over the seeds). 'within spread': the difference of the means "
            "is no larger than the larger of the two standard deviations, so these seeds do not "
            "separate the two arms; 'beyond the spread' only says the seeds separate them, not "
            "that the paper's COCO / CIFAR-100 gains carry over.",
            "",
            table,
            "",
            "Recipes (the same for both arms of a task; the RD arm's dictionary is k-means of "
            "the same seed's trained baseline features at the RD's place, by dict-init):",
            "",
            *notes,
            "",
        ]
    )


def main(quick: bool = False) -> str:
    worker(quick)
    return report(quick)


def _cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help="run the pending jobs")
    parser.add_argument("--only", nargs="*", default=None, help="task names")
    parser.add_argument("--report", action="store_true", help="write results/tasks.md")
    parser.add_argument("--job", nargs=3, metavar=("TASK", "ARM", "SEED"))
    args = parser.parse_args()
    if args.job:
        name, arm, seed = args.job
        run_job(name, arm, int(seed), args.quick)
        return 0
    if args.worker:
        worker(args.quick, args.only)
    if args.report or not args.worker:
        import run as runner

        body = report(args.quick)
        out = RESULTS / ("tasks_quick.md" if args.quick else "tasks.md")
        header = runner.header("tasks", sys.argv[1:])
        out.write_text(header.replace("benchmarks/run.py", "benchmarks/bench_tasks.py") + body)
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
