"""The authors' detectors built from layer tables: size, CPU speed and digits training.

yolo-heads builds the YOLO-RD authors' YOLOv9 t/s/m/c, rd-9c and YOLOv7 from layer tables
(``yolo_heads.architectures.GraphDetector``). This benchmark measures, in one run:

1. Parameters of the training build (PGI's auxiliary branch) and of the deploy build
   (``auxiliary=False``; then fused by ``yolo_heads.fuse_for_inference``: auxiliary branch
   dropped, RepConv folded, BatchNorm folded) and GFLOPs at 640 x 640 of the fused model,
   counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-accumulate of
   every convolution / matmul; nothing for bias, activation, pooling, upsampling or concat),
   against the authors' published numbers. The authors count with thop and multiply its MACs
   by 2 (``model_info`` in WongKinYiu/yolov9 ``utils/torch_utils.py``), the same convention.
   Ultralytics' ``yolov9t.yaml`` / ``yolov9c.yaml`` are counted the same way beside them.
2. CPU inference at 640 px, batch 1, one torch thread: yolov9_t and yolov9_c (deploy, fused)
   against Ultralytics' YOLOv9t / YOLOv9c built from its own yaml (no weights, fused),
   interleaved A/B rounds in one process (the order flips every round), median ms, ratio.
   Both time the network and its box decoding, not NMS.
3. Digits training at equal epochs over 3 seeds, bench_detection's data, batch, image size,
   scoring (pycocotools on the val JSON, conf 0.001, IoU 0.7, 300 per image) and offline
   Ultralytics setup (see bench_detection's docstring): yolo-heads ``model=yolov9_t`` with and
   without a Retriever-Dictionary at B3 (vision-initialised from the same seed's trained
   yolov9_t, as bench_detection's RD row), Ultralytics YOLOv9t with bench_detection's
   "optimiser matched" recipe and with its "optimiser + bias warm-up matched, light jitter"
   recipe, and today's 3.05M yolo-heads detector (bench_detection's ``MATCHED`` overrides).

Each training run is one subprocess (``OMP_NUM_THREADS=1``, one torch thread), run one at a
time, cached as JSON in ``benchmarks/results/authors_runs/`` (``--quick``: under
``outputs/bench_authors_quick/``); sizes and speed go to ``static.json`` there.

    python benchmarks/bench_authors.py --quick     # 2 epochs, tiny data, seed 0 (minutes)
    python benchmarks/run.py --only authors        # all of it, writes results/authors.md
    python benchmarks/bench_authors.py --report    # authors.md again from the cache
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

import bench_detection as detection  # noqa: E402  (data, training and scoring helpers)

SEEDS = detection.SEEDS
BATCH, IMAGE_SIZE = detection.BATCH, detection.IMAGE_SIZE
# bench_detection trains 30 epochs; yolov9_t (with its auxiliary branch) takes ~18.5 CPU s an
# epoch at 64 px on one thread here, so 5 rows x 3 seeds x 30 epochs would need ~2.5 hours here.
# Every row trains this many epochs instead (the report says so).
EPOCHS = 12
QUICK = detection.QUICK
ARCHITECTURES = ("yolov9_t", "yolov9_s", "yolov9_m", "yolov9_c", "yolo_rd_9c", "yolov7")

# (params M, GFLOPs at 640, source): the authors' published model-zoo numbers.
YOLOV9_README = (
    "WongKinYiu/yolov9 README.md, Performance table (MS COCO, 640; read at commit 0060c45, "
    "where the tiny model is listed as 'YOLOv9-N (dev)'; later README versions name it "
    "YOLOv9-T with the same numbers)"
)
PUBLISHED: dict[str, tuple[float, float, str]] = {
    "yolov9_t": (2.0, 7.7, YOLOV9_README),
    "yolov9_s": (7.1, 26.4, YOLOV9_README + "; also WongKinYiu/YOLO docs/MODELS.md"),
    "yolov9_m": (20.0, 76.3, YOLOV9_README + "; also WongKinYiu/YOLO docs/MODELS.md"),
    "yolov9_c": (25.3, 102.1, YOLOV9_README + "; also WongKinYiu/YOLO docs/MODELS.md"),
    "yolov7": (
        36.9,
        104.7,
        "YOLOv7 paper (arXiv 2207.02696), comparison with state-of-the-art table, as reproduced "
        "at docs.ultralytics.com/models/yolov7 (the WongKinYiu/yolov7 README lists AP and fps "
        "only; WongKinYiu/YOLO docs/MODELS.md leaves YOLOv7's params / FLOPs empty)",
    ),
}

# key -> (label, kind, settings); the order is each seed's run order.
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "v9t": ("yolo-heads yolov9_t (PGI auxiliary branch in training)", "yolo", {
        "o": ["model=yolov9_t"],
    }),
    "v9t_rd": ("yolo-heads yolov9_t + RD at B3 (vision-initialised)", "yolo", {
        "o": ["model=yolov9_t", *detection.RD], "dictionary": "v9t",
    }),
    "ultra_v9t_matched": ("Ultralytics YOLOv9t, optimiser matched", "ultralytics", {
        "matched": True, "model": "yolov9t.yaml",
    }),
    "yh_matched": ("yolo-heads 3.05M (bench_detection's MATCHED), new assigner", "yolo", {
        "o": list(detection.MATCHED),
    }),
    "ultra_v9t_recipe": (
        "Ultralytics YOLOv9t, optimiser + bias warm-up matched, light jitter as yolo-heads'",
        "ultralytics",
        {"matched": True, "augment": "light", "bias_warmup": False, "model": "yolov9t.yaml"},
    ),
}  # fmt: skip

COMPARE = [  # (row, against)
    ("v9t", "ultra_v9t_matched"),
    ("v9t", "ultra_v9t_recipe"),
    ("v9t", "yh_matched"),
    ("v9t_rd", "v9t"),
    ("ultra_v9t_recipe", "ultra_v9t_matched"),
]


def _work(quick: bool) -> Path:
    return ROOT / "outputs" / ("bench_authors_quick" if quick else "bench_authors")


def _cache(quick: bool) -> Path:
    return _work(quick) / "runs_cache" if quick else RESULTS / "authors_runs"


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _gflops(model: Any, size: int = 640) -> float:
    """FlopCounterMode's total for one [1, 3, size, size] forward, in units of 1e9."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def _ultralytics_model(yaml: str, quick: bool) -> Any:
    """Ultralytics' model from its own yaml (no weights), fused, in eval mode, offline."""
    detection._ultralytics_env(quick)
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    built = YOLO(yaml).model
    return built, built.float().fuse(verbose=False).eval()


def sizes(quick: bool) -> list[dict[str, Any]]:
    """Parameters and 640 px GFLOPs of every architecture, plus the comparison builds."""
    import torch

    from yolo_heads import fuse_for_inference
    from yolo_heads.architectures import GraphDetector

    probe = torch.rand(1, 3, 64, 64)
    rows = []
    for name in ARCHITECTURES:
        train = GraphDetector(name, auxiliary=True)
        deploy = GraphDetector(name, auxiliary=False)
        fused = fuse_for_inference(train, probe)
        rows.append({
            "name": name, "train": _count(train), "deploy": _count(deploy),
            "fused": _count(fused), "gflops": _gflops(fused),
        })  # fmt: skip
    with contextlib.suppress(TypeError, ValueError):  # needs YOLOv9Head(class_channels=...)
        narrow = GraphDetector("yolov9_t", auxiliary=False, Main={"class_channels": 80})
        fused = fuse_for_inference(narrow, probe)
        rows.append({
            "name": "yolov9_t, class branch 80 wide", "train": None, "deploy": _count(narrow),
            "fused": _count(fused), "gflops": _gflops(fused),
        })  # fmt: skip
    with contextlib.suppress(ImportError):
        for yaml in ("yolov9t.yaml", "yolov9c.yaml"):
            built, fused = _ultralytics_model(yaml, quick)
            rows.append({
                "name": f"Ultralytics {yaml}", "train": None, "deploy": _count(built),
                "fused": _count(fused), "gflops": _gflops(fused),
            })  # fmt: skip
    return rows


def speed(quick: bool) -> list[dict[str, Any]]:
    """Median ms per 640 px image at batch 1 on one thread, ours against Ultralytics'."""
    import torch

    from yolo_heads import fuse_for_inference
    from yolo_heads.architectures import GraphDetector

    torch.set_num_threads(1)
    pairs = [("yolov9_t", "yolov9t.yaml", 3 if quick else 30)]
    pairs.append(("yolov9_c", "yolov9c.yaml", 2 if quick else 12))
    out = []
    for name, yaml, rounds in pairs:
        ours = fuse_for_inference(GraphDetector(name).eval(), torch.rand(1, 3, 64, 64))
        _, theirs = _ultralytics_model(yaml, quick)
        calls = {
            "ours": lambda x, net=ours: net.head.decode(net(x)),
            "ultralytics": lambda x, net=theirs: net(x),
        }
        image = torch.rand(1, 3, 640, 640)
        times: dict[str, list[float]] = {k: [] for k in calls}
        with torch.inference_mode():
            for call in calls.values():  # warm-up: allocator, Ultralytics' anchor cache
                call(image)
            for i in range(rounds):
                order = list(calls) if i % 2 == 0 else list(reversed(calls))
                for key in order:
                    start = time.perf_counter()
                    calls[key](image)
                    times[key].append((time.perf_counter() - start) * 1000)
        out.append({
            "name": name, "yaml": yaml, "rounds": rounds,
            "ours_ms": statistics.median(times["ours"]),
            "ultralytics_ms": statistics.median(times["ultralytics"]),
            "ours_min_ms": min(times["ours"]), "ultralytics_min_ms": min(times["ultralytics"]),
            "round_ratios": [a / b for a, b in zip(times["ours"], times["ultralytics"])],
            "ours_all_ms": times["ours"], "ultralytics_all_ms": times["ultralytics"],
        })  # fmt: skip
    return out


def _dictionary(source: str, seed: int, quick: bool) -> str:
    """A dict-init dictionary (64 atoms; 16 with --quick) of the B3 features of the trained
    ``source`` run (same seed) on 160 training images, as bench_detection builds its own from
    the resnet's layer2. The authors' models take [0, 1] images, so no normalisation."""
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
        at = trained.feature_info[0]["module"]  # B3, stride 8
        names = dict(trained.named_modules())
        at = at if at in names else f"graph.{at}"
        data = detection.make_data("demo", quick)
        plain = create_dataset(data["train"], image_size=IMAGE_SIZE)
        images = torch.stack([plain[i][0] for i in range(min(160, len(plain)))])
        encoder = VisionEncoder(
            trained, at, image_size=IMAGE_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
        dictionary = build_dictionary(
            encoder, images, num_atoms=16 if quick else 64, seed=0, positions_per_image=64,
            progress=False,
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        dictionary.save(path)
    return str(path)


def _deploy_params(kind: str, weights: str, quick: bool) -> int:
    """Parameters of the trained model as deployed (fused; no auxiliary branch)."""
    import torch

    if kind == "ultralytics":
        detection._ultralytics_env(quick)
        from ultralytics import YOLO

        return _count(YOLO(weights).model.float().fuse(verbose=False))
    from yolo_heads import fuse_for_inference, load_checkpoint

    model = load_checkpoint(weights).eval()
    return _count(fuse_for_inference(model, torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE)))


def run_job(key: str, seed: int, quick: bool) -> None:
    """Train and score one (row, seed) in this process; cache the result."""
    import torch

    torch.set_num_threads(1)
    epochs = QUICK["epochs"] if quick else EPOCHS
    _label, kind, spec = ROWS[key]
    spec = dict(spec)
    if "dictionary" in spec:
        path = _dictionary(spec.pop("dictionary"), seed, quick)
        spec["o"] = [*spec["o"], f"model.rd.dictionary={path}"]
    train = detection.train_ultralytics if kind == "ultralytics" else detection.train_yolo_heads
    result = train(key, seed, quick, epochs, spec=spec, work=_work(quick))
    result["deploy_params"] = _deploy_params(kind, result["weights"], quick)
    result.update(row=key, seed=seed, epochs=epochs, quick=quick, finished=time.time())
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    detection._write_json(cache / f"{key}_s{seed}.json", result)


def _jobs(quick: bool) -> list[tuple[str, int]]:
    seeds = SEEDS[:1] if quick else SEEDS
    return [(key, seed) for seed in seeds for key in ROWS]


def worker(quick: bool) -> None:
    """Run every pending job, one subprocess at a time (one thread each), in seed order so an
    interrupted run leaves whole seeds; a failed job is logged and skipped."""
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key, seed in _jobs(quick):
        name = f"{key}_s{seed}"
        source = ROWS[key][2].get("dictionary")
        if (cache / f"{name}.json").is_file():
            continue
        if source and not (cache / f"{source}_s{seed}.json").is_file():
            print(f"{name}: skipped, {source}_s{seed} has no result", flush=True)
            continue
        log = _work(quick) / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--job", key, "--seed", str(seed)]
        command += ["--quick"] if quick else []
        start = time.perf_counter()
        print(f"{name}: training ({log})", flush=True)
        with log.open("w") as handle:
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        print(f"{name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)


def measure_static(quick: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    static = {"sizes": sizes(quick), "speed": speed(quick), "finished": time.time()}
    static["command"] = " ".join(["python", *sys.argv])
    cache = _cache(quick)
    cache.mkdir(parents=True, exist_ok=True)
    detection._write_json(cache / "static.json", static)
    return static


def _results(quick: bool) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ROWS}
    cache = _cache(quick)
    for path in sorted(cache.glob("*_s*.json")) if cache.is_dir() else []:
        result = json.loads(path.read_text())
        if result.get("row") in rows:
            rows[result["row"]].append(result)
    return rows


def _m(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}"


def _sizes_table(rows: list[dict[str, Any]]) -> str:
    from _common import markdown_table

    header = [
        "model", "params train (M)", "params deploy (M)", "params fused (M)", "GFLOPs 640",
        "published params (M)", "published GFLOPs", "fused / published params",
        "GFLOPs / published",
    ]  # fmt: skip
    table = []
    for row in rows:
        known = PUBLISHED.get(row["name"])
        pub = [f"{known[0]:.1f}", f"{known[1]:.1f}"] if known else ["-", "-"]
        ratios = (
            [f"{row['fused'] / 1e6 / known[0]:.3f}", f"{row['gflops'] / known[1]:.3f}"]
            if known
            else ["-", "-"]
        )
        table.append([
            row["name"], _m(row["train"]), _m(row["deploy"]), _m(row["fused"]),
            f"{row['gflops']:.1f}", *pub, *ratios,
        ])  # fmt: skip
    return markdown_table(header, table, "lrrrrrrrr")


def _speed_table(rows: list[dict[str, Any]]) -> str:
    from _common import markdown_table

    header = [
        "model", "yolo-heads median ms", "Ultralytics median ms", "ratio of medians",
        "yolo-heads min ms", "Ultralytics min ms", "ratio of minima",
        "median per-round ratio (min-max)", "rounds",
    ]  # fmt: skip
    table = []
    for row in rows:
        ratios = row["round_ratios"]
        mins = [row.get("ours_min_ms"), row.get("ultralytics_min_ms")]
        table.append([
            f"{row['name']} vs Ultralytics {row['yaml']}", f"{row['ours_ms']:.1f}",
            f"{row['ultralytics_ms']:.1f}", f"{row['ours_ms'] / row['ultralytics_ms']:.2f}",
            *(["-", "-", "-"] if None in mins else [
                f"{mins[0]:.1f}", f"{mins[1]:.1f}", f"{mins[0] / mins[1]:.2f}"
            ]),
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
            row["rounds"],
        ])  # fmt: skip
    return markdown_table(header, table, "lrrrrrrrr")


def _comparisons(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mean differences and whether they are beyond the seed spread (|difference| larger
    than the larger of the two sample sds)."""
    lines = ["Differences of the means (AP, then AP50):", ""]
    for row, other in COMPARE:
        name = f"{ROWS[row][0]} vs {ROWS[other][0]}"
        parts = []
        for metric in ("AP", "AP50"):
            a = [r["metrics"][metric] for r in results[row]]
            b = [r["metrics"][metric] for r in results[other]]
            if not a or not b:
                parts.append(f"{metric} not measured yet")
                continue
            diff = statistics.fmean(a) - statistics.fmean(b)
            if len(a) > 1 and len(b) > 1:
                spread = max(statistics.stdev(a), statistics.stdev(b))
                verdict = "beyond the spread" if abs(diff) > spread else "within spread"
                parts.append(f"{diff:+.3f} {metric}, {verdict} (largest sd {spread:.3f})")
            else:
                parts.append(f"{diff:+.3f} {metric} ({len(a)} and {len(b)} seed(s): no spread)")
        lines.append(f"- {name}: " + "; ".join(parts))
    return lines


def report(quick: bool) -> str:
    from _common import markdown_table

    static_path = _cache(quick) / "static.json"
    static = json.loads(static_path.read_text()) if static_path.is_file() else None
    results = _results(quick)
    epochs = QUICK["epochs"] if quick else EPOCHS
    lines = []
    if quick:
        lines += [
            f"**Quick run**: {QUICK['train']} train / {QUICK['val']} val images, {epochs} "
            "epochs, seed 0, fewer timing rounds: the numbers only show that every part runs.",
            "",
        ]
    lines += [f"Peers: {detection._peer_versions()}.", ""]
    if static is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(static["finished"]))
        lines += [
            f"Sections 1 and 2 were measured by `{static.get('command', 'main()')}` (finished "
            f"{when}); section 3 from the cached training runs.",
            "",
        ]
    lines += ["## 1. Size: parameters and GFLOPs at 640 px", ""]
    if static is None:
        lines += ["not measured", ""]
    else:
        lines += [
            _sizes_table(static["sizes"]),
            "",
            "80 classes. params train: `GraphDetector(name, auxiliary=True)` (PGI's auxiliary "
            "branch, trained, never run at inference); deploy: `auxiliary=False`; fused: "
            "`yolo_heads.fuse_for_inference` of the training build (auxiliary branch dropped, "
            "RepConv folded into one 3x3, BatchNorm folded into the convolutions) - what the "
            "authors' deploy / 'converted' checkpoints hold. GFLOPs: "
            "`torch.utils.flop_counter.FlopCounterMode` total for one 1 x 3 x 640 x 640 forward "
            "of the fused model / 1e9. Its convention is 2 FLOPs per multiply-accumulate "
            "(GFLOPs = 2 x GMACs) over convolutions and matrix products; biases, activations, "
            "pooling, upsampling and concatenation count 0. The authors' numbers use the same "
            "convention: WongKinYiu/yolov9 `utils/torch_utils.py::model_info` takes thop's MACs "
            "x 2 (thop also counts a little for BatchNorm / activations of the unfused model, "
            "which is why YOLOv7 reads 104.7 there).",
            "",
            "Published numbers and where they were read:",
            "",
        ]
        lines += [f"- {n}: {p} M / {g} GFLOPs - {src}" for n, (p, g, src) in PUBLISHED.items()]
        found = {row["name"]: row for row in static["sizes"]}
        tiny, narrow = found["yolov9_t"], found.get("yolov9_t, class branch 80 wide")
        check = (
            f" (measured: {narrow['fused'] / 1e6:.2f} M / {narrow['gflops']:.1f} GFLOPs)"
            if narrow
            else " (not built: this YOLOv9Head has no class_channels argument)"
        )
        lines += [
            "- yolo_rd_9c: YOLO-RD's rd-9c has no entry in these model-zoo tables; measured only.",
            "",
            f"yolov9_t is off its published size (fused {tiny['fused'] / 1e6:.2f} M / "
            f"{tiny['gflops']:.1f} GFLOPs against 2.0 M / 7.7): the layer table follows the "
            "MultimediaTechLab/YOLO "
            "implementation (its weights load bitwise), whose `Detection` head makes the class "
            "branch `max(first_neck, min(2 x classes, 128))` = 128 channels wide for v9-t at "
            "80 classes, where WongKinYiu/yolov9's `DDetect` (from which the README's numbers "
            "come) uses `max(ch[0], min(classes, 100))` = 80. The row 'yolov9_t, class branch "
            "80 wide' builds our v9-t with `Main={'class_channels': 80}` to check that this is "
            f"the whole difference{check}; for s/m/c the first neck is >= 128 so both "
            "formulas agree. "
            "Ultralytics' yolov9t.yaml uses its plain `Detect` head (box branch not grouped), "
            "hence its own counts.",
            "",
        ]
    lines += ["## 2. CPU inference at 640 px, batch 1, one thread", ""]
    if static is None:
        lines += ["not measured", ""]
    else:
        lines += [
            _speed_table(static["speed"]),
            "",
            "Both models in the same process with `torch.set_num_threads(1)`, random weights "
            "(no weights are downloaded; speed does not depend on them), deploy form (ours: "
            "`fuse_for_inference`; Ultralytics: `YOLO(yaml).model.fuse()`), "
            "`torch.inference_mode`, one 1 x 3 x 640 x 640 image, one warm-up call each, then "
            "interleaved rounds (A then B, B then A, ...); median and minimum ms per model and "
            "the median of the per-round ratios. Timed: the network and its box decoding "
            "(ours: `model.head.decode(model(x))`; Ultralytics' eval forward decodes), no NMS. "
            "The other core of this 2-core machine was busy with other work, so single calls "
            "vary (see the per-round range); the minimum is the least disturbed call of each.",
            "",
        ]
    lines += [f"## 3. Digits training, {epochs} epochs, 3 seeds", ""]
    if not quick:
        v9t = [r["cpu_seconds"] / r["epochs"] for r in results["v9t"]]
        per_epoch = f"{statistics.fmean(v9t):.1f}" if v9t else "~18.5 (timed before the run)"
        lines += [
            f"bench_detection trains 30 epochs; here every row trains {EPOCHS} epochs (reduced "
            f"equally for all rows): one yolov9_t epoch with its auxiliary branch takes "
            f"{per_epoch} CPU s on one thread (this run's mean), so 5 rows x 3 seeds x 30 "
            "epochs would not fit the ~60 minutes given to this benchmark. Same data (the "
            "demo's set: 640 train / 160 val images of 10-25 px digits at 64 px), batch "
            f"{BATCH}, one torch thread per run, one run at a time.",
            "",
        ]
    header = [
        "row", "params train (M)", "params deploy (M)", "seeds", "AP", "AP50", "train CPU s",
        "train s",
    ]  # fmt: skip
    table = []
    for key, (label, _kind, _spec) in ROWS.items():
        runs = sorted(results[key], key=lambda r: r["seed"])
        get = lambda name, runs=runs: [r["metrics"][name] for r in runs]  # noqa: E731
        table.append([
            label, _m(runs[0]["params"]) if runs else "", _m(runs[0].get("deploy_params"))
            if runs else "", ",".join(str(r["seed"]) for r in runs) or "-",
            detection._fmt(get("AP")), detection._fmt(get("AP50")),
            detection._fmt([r["cpu_seconds"] for r in runs], 0),
            detection._fmt([r["seconds"] for r in runs], 0),
        ])  # fmt: skip
    lines += [markdown_table(header, table, "lrrrrrrr"), ""]
    lines += [
        "AP / AP50: pycocotools on the val JSON (the same `evaluate_coco` call for every row), "
        "mean ± sample sd over the seeds. params: 10 classes; 'train' is the model as trained "
        "(yolov9_t with its auxiliary branch), 'deploy' as fused for inference. Recipes: "
        "yolo-heads rows use the `digits` config (AdamW lr 4e-3, 50 warm-up updates, cosine to "
        "0.05 x, weight decay 5e-4, scale jitter 0.7-1.0 + contrast/brightness, no mosaic) "
        "with `model=yolov9_t` (the authors' loss options from the layer table: their "
        "assigner and gains; PGI's auxiliary loss at 0.25) or bench_detection's MATCHED "
        "resnet18 / PAN 64 (3.05 M); RD: `model.rd.enabled=true` with a 64-atom dict-init "
        "dictionary from the same seed's trained yolov9_t B3 features (160 training images). "
        "Ultralytics rows: bench_detection's `train_ultralytics` with `YOLO('yolov9t.yaml')` "
        "from scratch; 'optimiser matched' sets AdamW lr0 4e-3, cosine to 0.05, nbs = batch, "
        "1.25 warm-up epochs and keeps Ultralytics' augmentation (mosaic, HSV, translate, "
        "scale, flips; Ultralytics closes mosaic for the last 10 epochs, so with "
        f"{epochs} epochs it mosaics the first {max(epochs - 10, 0)}); the 'light jitter' row "
        "also "
        "sets warmup_bias_lr 0 and replaces that augmentation by jitter close to yolo-heads'. "
        "Ultralytics' YOLOv9t has no PGI auxiliary branch. train s: wall seconds of the "
        "training call (varies with the other work on the machine); train CPU s: its CPU time.",
        "",
    ]
    lines += _comparisons(results)
    lines += [
        "",
        "'within spread': the difference of the means is no larger than the larger of the two "
        "sample sds (3 seeds), so these seeds do not separate the rows; 'beyond the spread' is "
        "the opposite, not a significance test. At this epoch count every row is far from "
        "converged (bench_detection's 30-epoch 3.05M row is in detection.md), so the table "
        "compares early training, where the recipes' warm-up and bias initialisation weigh "
        "more than they would at convergence.",
    ]
    return "\n".join(lines) + "\n"


def main(quick: bool = False) -> str:
    """run.py's entry: sizes and speed, every pending training run, then the report."""
    measure_static(quick)
    worker(quick)
    return report(quick)


def _write(quick: bool, body: str) -> Path:
    import run  # the header every result states

    out = RESULTS / "authors.md" if not quick else _work(quick) / "authors_quick.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["--only", "authors"] + (["--quick"] if quick else [])
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(run.header("authors", argv) + body)
    tmp.replace(out)
    return out


def _cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--job", help="run one row (internal: the worker's subprocess)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="report from the cache only")
    parser.add_argument(
        "--static", action="store_true", help="measure sizes and speed again, then report"
    )
    args = parser.parse_args()
    if args.job:
        run_job(args.job, args.seed, args.quick)
        return 0
    import torch

    torch.set_num_threads(1)  # the header states the thread count the measurements used
    if args.static:
        measure_static(args.quick)
    body = report(args.quick) if args.report or args.static else main(args.quick)
    print(body)
    print(f"written: {_write(args.quick, body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
