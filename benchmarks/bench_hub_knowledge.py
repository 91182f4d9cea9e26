"""hub-knowledge: cost of publishing and loading against timm's own Hub helpers.

``save_for_hub`` writes what ``timm.models.save_for_hf(safe_serialization=True)`` writes plus a
model card, atomically; ``hub_knowledge.load`` rebuilds through timm's factory like
``timm.create_model("local-dir:...", pretrained=True)`` and adds a key-and-shape check of the
weights (and the truncation check of the file). Ratios compare the two in the same run, rounds
interleaved, medians reported.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import timm
from timm.models import save_for_hf

import hub_knowledge


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(first, second, rounds: int) -> tuple[float, float]:
    """Median seconds of ``first`` and ``second``, alternating every round after a warm-up."""
    first(), second()
    a, b = [], []
    for _ in range(rounds):
        a.append(_median_time(first, 1))
        b.append(_median_time(second, 1))
    return statistics.median(a), statistics.median(b)


def _compare(model, folder: Path, rounds: int) -> tuple[float, float, float, float]:
    ours, theirs = folder / "ours", folder / "timm"
    so, st = _interleaved(
        lambda: hub_knowledge.save_for_hub(model, ours),
        lambda: save_for_hf(model, theirs, safe_serialization=True),
        rounds,
    )
    lo, lt = _interleaved(
        lambda: hub_knowledge.load(ours),
        lambda: timm.create_model(f"local-dir:{theirs}", pretrained=True),
        rounds,
    )
    return so, st, lo, lt


def main(quick: bool = False) -> str:
    names = ["resnet18"] if quick else ["resnet18", "resnet50", "convnext_tiny"]
    rounds = 3 if quick else 5
    rows = [
        "| model | params (M) | save: hub-knowledge / timm | load: hub-knowledge / timm | "
        "save_for_hub (s) | load (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        model = timm.create_model(name).eval()
        with tempfile.TemporaryDirectory() as tmp:
            so, st, lo, lt = _compare(model, Path(tmp), rounds)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            f"| `{name}` | {params:.2f} | {so / st:.2f} | {lo / lt:.2f} | {so:.3f} | {lo:.3f} |"
        )
    return "\n".join(rows) + "\n"
