"""yolo-heads: NMS against torchvision's, and detector latency with / without RD and implicit.

Every number is a ratio against a baseline measured in the same run (the machine is shared, so
absolute times are noisy; ratios much less so). Median of several repeats after a warm-up.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torchvision import ops as tv_ops

from implicit_knowledge import fuse
from yolo_heads import YOLODetector, batched_nms, nms


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 600
    wh = torch.rand(n, 2, generator=g) * 120 + 4
    classes = torch.randint(0, 80, (n,), generator=g)
    return torch.cat((xy, xy + wh), 1), torch.rand(n, generator=g), classes


def bench_nms(quick: bool) -> str:
    rows = [
        "| boxes | kind | ours (ms) | torchvision (ms) | ours / torchvision | same result |",
        "|---:|---|---:|---:|---:|---|",
    ]
    sizes = (500, 2000) if quick else (500, 2000, 5000)
    repeats = 5 if quick else 15
    for n in sizes:
        boxes, scores, classes = _boxes(n)
        pairs = {
            "nms": (partial(nms, boxes, scores, 0.5), partial(tv_ops.nms, boxes, scores, 0.5)),
            "batched, 80 classes": (
                partial(batched_nms, boxes, scores, classes, 0.5),
                partial(tv_ops.batched_nms, boxes, scores, classes, 0.5),
            ),
        }
        for kind, (ours, theirs) in pairs.items():
            same = ours().tolist() == theirs().tolist()
            t_ours = _median_time(ours, repeats)
            t_theirs = _median_time(theirs, repeats)
            rows.append(
                f"| {n} | {kind} | {t_ours * 1e3:.2f} | {t_theirs * 1e3:.2f} | "
                f"{t_ours / t_theirs:.2f} | {'yes' if same else 'NO'} |"
            )
    return "\n".join(rows)


def bench_detector(quick: bool) -> str:
    size, batch = (128, 4) if quick else (256, 8)
    repeats = 5 if quick else 10
    images = torch.rand(batch, 3, size, size)
    configs = {
        "baseline (resnet18, PAN, anchor-free)": {},
        "+ RD (512 atoms, after layer2)": {"rd": {"num_atoms": 512}},
        "+ implicit (iFA + iPR)": {"implicit": True},
        "+ implicit, fused": {"implicit": True, "fuse": True},
        "+ RD + implicit": {"rd": {"num_atoms": 512}, "implicit": True},
        "anchor-based + implicit, fused": {"head": "anchor_based", "implicit": True, "fuse": True},
    }
    rows = [
        f"Inference, batch {batch} at {size} px, eval mode, `torch.inference_mode`.",
        "",
        "| model | params (M) | latency (ms) | vs baseline |",
        "|---|---:|---:|---:|",
    ]
    baseline = None
    for name, cfg in configs.items():
        cfg = dict(cfg)
        do_fuse = cfg.pop("fuse", False)
        torch.manual_seed(0)
        model = YOLODetector("resnet18", num_classes=80, neck_channels=128, **cfg).eval()
        if do_fuse:
            model = fuse(model)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        with torch.inference_mode():
            t = _median_time(lambda m=model: m(images), repeats)
        baseline = baseline or t
        rows.append(f"| {name} | {params:.2f} | {t * 1e3:.1f} | {t / baseline:.2f} |")
    return "\n".join(rows)


def main(quick: bool = False) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"Load average (1 min) when the run started: {load:.1f} on {os.cpu_count()} cores; "
        "a load well above the core count makes every absolute time and even the ratios "
        "unreliable.\n\n"
        "## NMS: greedy per-class NMS (ours, pure torch + numpy) vs `torchvision.ops`\n\n"
        + bench_nms(quick)
        + "\n\n## Detector latency with and without RD / implicit knowledge\n\n"
        + bench_detector(quick)
        + "\n"
    )


if __name__ == "__main__":
    print(main(quick=True))
