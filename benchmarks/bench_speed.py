"""Speed ratios of the whole project, every ratio measured within this one run.

Each ratio compares two implementations timed in the same process, interleaved or back to back
after a warm-up, so machine load (the CPU is shared) hits both alike. The measuring code comes
from the per-package benchmarks, loaded by path (``bench_kernelwarehouse``, ``bench_rd_core``,
``bench_implicit_knowledge``, ``bench_dict_init``, ``bench_yolo_heads``), so the numbers here
and in their own reports come from the same functions; this file only chooses the settings,
gathers the ratios into one table and draws them. A row whose package or bench module is
missing is reported as not measured.

Ratios are ``time(ours) / time(baseline)``: below 1 means faster than the baseline.
"""

import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _common import load_bench, markdown_table, no_plot_note, plotting, save_figure


@dataclass
class Ratio:
    area: str
    what: str
    baseline: str
    ours_s: float
    baseline_s: float
    goal: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s

    def row(self) -> list[str]:
        return [
            self.area,
            self.what,
            self.baseline,
            _ms(self.baseline_s),
            _ms(self.ours_s),
            f"**{self.ratio:.2f}x**",
            self.goal,
            self.note,
        ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds:.1f} s"


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------- KernelWarehouse
def kernelwarehouse(quick: bool) -> tuple[list[Ratio], str]:
    bench = load_bench("kernelwarehouse")
    if bench is None:
        return [], "KernelWarehouse: not measured (bench_kernelwarehouse or its package missing).\n"
    res, reps = (96, 2) if quick else (224, 3)
    ratios = []
    for mode in ("inference", "training"):
        for batch in (1, 16):
            load = os.getloadavg()[0]
            t = bench.time_all(batch, res, mode, reps, "cpu")
            load = (load + os.getloadavg()[0]) / 2
            what = f"ResNet18 b=1, {mode}, batch {batch}, {res} px"
            ratios.append(
                Ratio(
                    "KernelWarehouse",
                    what,
                    "plain timm resnet18",
                    t["kw fast"],
                    t["plain"],
                    {"inference": "<= 1.5x", "training": "<= 1.8x"}[mode] if batch == 16 else "",
                    f"per-sample reference: {t['kw reference'] / t['plain']:.2f}x plain; "
                    f"1-min load {load:.1f}",
                )
            )
            ratios.append(
                Ratio(
                    "KernelWarehouse",
                    what,
                    "authors' per-sample reference",
                    t["kw fast"],
                    t["kw reference"],
                    "<= 1 (never slower than the reference)",
                )
            )
    note = (
        f"KernelWarehouse rows: `bench_kernelwarehouse.time_all` (plain timm ResNet18, KW ResNet18 "
        f"b = 1 with the package's fast executor, and the authors' per-sample assembly + grouped "
        f"convolution on the same weights), median of {reps} interleaved repetitions (order "
        "rotated), tau = 0. "
        "The SPEC measured the authors' method at 3.4x plain (batch 16, 224 px) on this CPU; "
        "the goal is to beat that.\n"
    )
    return ratios, note


# ------------------------------------------------------------------------------- YOLO-RD
def retriever_dictionary(quick: bool) -> tuple[list[Ratio], str]:
    bench = load_bench("rd_core")
    if bench is None:
        return [], "RD: not measured (bench_rd_core or rd-core missing).\n"
    import timm

    from rd_core import attach

    size, rounds, seconds = (224, 2, 0.3) if quick else (640, 3, 1.0)
    # YOLO-like backbone (CSPDarknet53, YOLOv4's) in the full run; a small one in the quick run
    cases = [("resnet18", "layer2")] if quick else [("cspdarknet53", "stages.2")]
    ratios = []
    x = torch.randn(1, 3, size, size)
    for name, at in cases:
        torch.manual_seed(0)
        base = timm.create_model(name).eval()
        with_rd = copy.deepcopy(base)
        rd = attach(with_rd, at=at, num_atoms=512, input_size=(3, size, size))
        t_base, t_rd = bench._interleaved([base, with_rd], x, rounds, seconds)
        macs = bench._rd_macs(rd, size // 8, size // 8) / bench._conv_macs(base, x)
        ratios.append(
            Ratio(
                "YOLO-RD",
                f"{name} + RD (N = 512) after {at}, {size} px, batch 1",
                f"{name}",
                t_rd,
                t_base,
                "paper: 1.03x (YOLOv7, GPU)",
                f"+{macs:.1%} MACs",
            )
        )
    f, n, k, s = (512, 512, 5, 40) if quick else (512, 512, 5, 80)
    from rd_core import RetrieverDictionary

    xm = torch.randn(1, f, s, s)
    split = RetrieverDictionary(f, n, k).eval()
    fused = RetrieverDictionary(f, n, k, fused_retriever=True).eval()
    t_split, t_fused = bench._interleaved([split, fused], xm, rounds, seconds)
    ratios.append(
        Ratio(
            "YOLO-RD",
            f"fused retriever (Table 4), {f} x {s} x {s}",
            "split retriever E(G(x))",
            t_fused,
            t_split,
            "> 1 expected (k^2 f N MACs)",
        )
    )
    note = (
        "RD rows: `bench_rd_core._interleaved` (torch.utils.benchmark medians, models alternating "
        f"for {rounds} rounds), eval mode, inference mode, RD on the stride-8 map.\n"
    )
    return ratios, note


# -------------------------------------------------------------------- implicit knowledge
def implicit(quick: bool) -> tuple[list[Ratio], str]:
    bench = load_bench("implicit_knowledge")
    if bench is None:
        return [], "Implicit: not measured (bench_implicit_knowledge missing).\n"
    from implicit_knowledge import fuse

    width, depth, seconds = (64, 4, 0.3) if quick else (128, 6, 0.5)
    ratios = []
    for batch in (1, 16):
        torch.manual_seed(0)
        x = torch.randn(batch, 3, 64, 64)
        unfused = bench._network(width, depth, implicit=True)
        fused = fuse(copy.deepcopy(unfused))
        plain = bench._network(width, depth, implicit=False)
        times = {"plain": [], "unfused": [], "fused": []}
        for _ in range(3):  # interleaved rounds
            for key, model in (("plain", plain), ("unfused", unfused), ("fused", fused)):
                times[key].append(bench._time(model, x, seconds))
        t = {k: statistics.median(v) for k, v in times.items()}
        what = f"{depth} conv blocks, width {width}, batch {batch}, 64 px"
        ratios.append(
            Ratio("Implicit (YOLOR)", what + ", fused", "unfused", t["fused"], t["unfused"], "< 1")
        )
        ratios.append(
            Ratio(
                "Implicit (YOLOR)",
                what + ", fused",
                "no implicit at all",
                t["fused"],
                t["plain"],
                "~1 (free after fusion)",
            )
        )
    note = (
        "Implicit rows: `bench_implicit_knowledge._network` (factorised priors on every conv, "
        "the costliest to run unfused) before and after `implicit_knowledge.fuse`, against the "
        "same network without implicit layers; 3 interleaved rounds of torch.utils.benchmark.\n"
    )
    return ratios, note


# --------------------------------------------------------------------------------- k-means
def kmeans(quick: bool) -> tuple[list[Ratio], str]:
    """Ratios from bench_dict_init's workers: every method in a fresh process, 2 threads."""
    bench = load_bench("dict_init")
    if bench is None:
        return [], "k-means: not measured (bench_dict_init or dict-init missing).\n"
    from dict_init import inertia

    n, d, k = (10_000, 64, 64) if quick else (50_000, 128, 128)
    x = bench.feature_like(n, d)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, x.numpy())
        for key in ("lloyd", "minibatch", "sklearn", "faiss"):
            runs[key] = bench._measure(key, data, k, Path(tmp))
    if runs["sklearn"] is None:
        return [], "k-means: not measured (scikit-learn missing).\n"
    ref = inertia(x, runs["sklearn"]["centers"])
    what = f"{n:,} x {d} into {k}"

    def versus(key: str) -> str:
        return f"inertia {100 * (inertia(x, runs[key]['centers']) / ref - 1):+.2f}% vs sklearn"

    sklearn = ("sklearn", "scikit-learn KMeans (n_init=1)")
    # (ours, variant, baseline, goal)
    rows = [
        ("lloyd", "defaults", sklearn, "<= 1/3"),
        ("minibatch", "mini-batch", sklearn, ""),
        ("lloyd", "defaults", ("faiss", "faiss.Kmeans (niter 25)"), ""),
    ]
    ratios = []
    for ours, variant, (base, base_name), goal in rows:
        if runs[ours] is None or runs[base] is None:
            continue
        detail = versus(ours) if base == "sklearn" else "faiss " + versus(base)
        ratios.append(
            Ratio("k-means (dict-init)", f"{what}, {variant}", base_name,
                  runs[ours]["seconds"], runs[base]["seconds"], goal, detail)
        )  # fmt: skip
    note = (
        "k-means rows: `bench_dict_init` workers (each method in a fresh process, 2 threads; "
        "dict-init's defaults the median of 3 runs) on `feature_like` data, seed 0; inertia "
        "recomputed with the same function. The full-size run (200k x 512) is in dict_init.md.\n"
    )
    return ratios, note


# ------------------------------------------------------------------------------------- NMS
def nms(quick: bool) -> tuple[list[Ratio], str]:
    bench = load_bench("yolo_heads")
    if bench is None:
        return [], "NMS: not measured (bench_yolo_heads or yolo-heads missing).\n"
    from torchvision import ops as tv_ops

    from yolo_heads import batched_nms
    from yolo_heads import nms as our_nms

    repeats = 5 if quick else 10
    ratios = []
    agree = []
    for n in (500, 2000) if quick else (500, 2000, 5000):
        boxes, scores, classes = bench._boxes(n)
        pairs = {
            "nms": (partial(our_nms, boxes, scores, 0.5), partial(tv_ops.nms, boxes, scores, 0.5)),
            "batched, 80 classes": (
                partial(batched_nms, boxes, scores, classes, 0.5),
                partial(tv_ops.batched_nms, boxes, scores, classes, 0.5),
            ),
        }
        for kind, (ours, theirs) in pairs.items():
            agree.append(ours().tolist() == theirs().tolist())
            t_theirs = _median_time(theirs, repeats)
            t_ours = _median_time(ours, repeats)
            ratios.append(
                Ratio(
                    "NMS (yolo-heads)",
                    f"{kind}, {n} boxes",
                    "torchvision.ops",
                    t_ours,
                    t_theirs,
                    "",
                    "same kept boxes" if agree[-1] else "**different kept boxes**",
                )
            )
    note = (
        f"NMS rows: `bench_yolo_heads._boxes` (random boxes, IoU 0.5), median of {repeats}; "
        f"kept indices identical to torchvision's in {sum(agree)}/{len(agree)} cases.\n"
    )
    return ratios, note


SECTIONS = (kernelwarehouse, retriever_dictionary, implicit, kmeans, nms)


def _plot(ratios: list[Ratio]) -> str:
    plt = plotting()
    if plt is None or not ratios:
        return no_plot_note()
    labels = [f"{r.what} / {r.baseline}" for r in ratios]
    values = [r.ratio for r in ratios]
    colours = {a: f"C{i}" for i, a in enumerate(dict.fromkeys(r.area for r in ratios))}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(ratios) + 1.2))
    ax.barh(range(len(ratios)), values, color=[colours[r.area] for r in ratios])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(ratios)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("time ratio ours / baseline (log; < 1 is faster)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), fontsize=7, loc="lower right")
    name = save_figure(fig, "speed_ratios.png")
    plt.close(fig)
    return f"![speed ratios]({name})\n\n"


def main(quick: bool = False) -> str:
    torch.manual_seed(0)
    ratios: list[Ratio] = []
    notes: list[str] = []
    for section in SECTIONS:
        start = time.perf_counter()
        found, note = section(quick)
        print(f"speed {section.__name__}: {time.perf_counter() - start:.0f} s", flush=True)
        for r in found:
            print(f"  {r.area} | {r.what} | vs {r.baseline}: {r.ratio:.2f}x", flush=True)
        ratios += found
        notes.append(note)
    gpu = (
        f"GPU: {torch.cuda.get_device_name(0)} present but not used by this table."
        if torch.cuda.is_available()
        else "**No GPU rows**: no GPU is lent to this project, so every number is CPU-only "
        "(2 shared cores); the per-package benchmarks switch to CUDA by themselves when one is "
        "present."
    )
    table = markdown_table(
        ["area", "what", "baseline", "baseline ms", "ours ms", "ours / baseline", "goal", "note"],
        (r.row() for r in ratios),
        "lllrrrll",
    )
    return (
        (
            "**Quick run**: small sizes, few repetitions; see the full run for the real ratios.\n\n"
            if quick
            else ""
        )
        + "Time ratios `ours / baseline`, both measured in this run (< 1: ours is faster). "
        + gpu
        + "\n\n"
        + table
        + "\n\n"
        + _plot(ratios)
        + "## How each row was measured\n\n"
        + "\n".join(f"- {n.strip()}" for n in notes)
        + "\n"
    )


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
