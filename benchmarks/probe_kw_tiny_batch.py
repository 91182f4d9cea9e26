"""Is the 3-sample last batch what costs KW its accuracy?  An ablation of the annealing grid.

The grid (``bench_accuracy.py --part anneal``) shows KW b = 1 losing far more than plain or
"tau fixed at 1" when each epoch's incomplete last batch (1347 = 21 x 64 + 3 digits) is trained
on. This probe trains KW b = 1 cells of the grid (``_kw_annealing.run_cell``: same data order,
augmentation and schedule) in five arms on one machine: the last batch kept; dropped; and kept
with one change on it (a batch smaller than the cell's batch size), see
:func:`on_small_batches`: the attention BatchNorm1d layers use their running statistics; every
BatchNorm layer does; or the batch passes no gradient. The arm that comes back to the dropped
level names the path through which the 3 samples do the damage.

Records go to ``results/accuracy_tiny_batch.jsonl`` (one line per run; finished runs are
skipped; each says the CPU it ran on, since float rounding differs between machines).
Not a ``bench_*.py`` file: ``run.py`` does not run it.

    python benchmarks/probe_kw_tiny_batch.py --anneal-iters 880 220 --seeds 0 1 2 --shard 1/2
    python benchmarks/probe_kw_tiny_batch.py --report
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import _kw_annealing as annealing
import bench_accuracy
import torch
from _common import RESULTS, markdown_table, mean_std
from torch import nn

from kernelwarehouse.attention import KWAttention

RUNS = RESULTS / "accuracy_tiny_batch.jsonl"


def on_small_batches(model: nn.Module, batch: int, treatment: str) -> nn.Module:
    """Change what a training forward of fewer than ``batch`` samples does (forward hooks,
    which run after ``model.train()``).

    ``"attention BN"``: the attention BatchNorm1d layers normalise with their running
    statistics and leave them unchanged (eval mode for that forward); ``"all BN"``: every
    BatchNorm layer does; ``"no gradient"``: the output keeps its value but passes no gradient,
    so the step's gradients are zero (AdamW still applies its momentum and weight decay; the
    BatchNorm running statistics are updated as usual).
    """
    if treatment not in TREATMENTS:
        raise ValueError(f"treatment={treatment!r} is invalid: expected one of {TREATMENTS}")
    if treatment == "all BN":
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    else:
        norms = [m.norm1 for m in model.modules() if isinstance(m, KWAttention)]

    def pre_hook(module: nn.Module, args: tuple) -> None:
        small = module.training and args[0].shape[0] < batch
        for norm in norms:
            norm.train(module.training and not small)

    def no_gradient(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if module.training and args[0].shape[0] < batch:
            return output.detach() + 0 * output
        return None

    if treatment == "no gradient":
        model.register_forward_hook(no_gradient)
    else:
        model.register_forward_pre_hook(pre_hook)
    return model


TREATMENTS = ("attention BN", "all BN", "no gradient")
#: arm label -> (drop the last batch, what changes on the 3-sample batch)
ARMS: dict[str, tuple[bool, str | None]] = {
    "KW b = 1, last batch kept": (False, None),
    "KW b = 1, last batch dropped": (True, None),
    "KW b = 1, attention BN frozen on the 3-sample batch": (False, "attention BN"),
    "KW b = 1, all BN frozen on the 3-sample batch": (False, "all BN"),
    "KW b = 1, no gradient from the 3-sample batch": (False, "no gradient"),
}


def _key(record: dict) -> str:
    return json.dumps([record["cell"], record["label"]], sort_keys=True)


def _runs() -> list[dict]:
    return [json.loads(line) for line in RUNS.open()] if RUNS.exists() else []


def report() -> str:
    """Markdown table: test accuracy per arm and annealing length, mean ± std over seeds."""
    runs = _runs()
    rows = []
    for anneal in sorted({r["cell"]["anneal"] for r in runs}):
        for label in ARMS:
            group = sorted(
                (r for r in runs if r["cell"]["anneal"] == anneal and r["label"] == label),
                key=lambda r: r["cell"]["seed"],
            )
            if not group:
                continue
            total = anneal + group[0]["cell"]["post"]
            row = [f"{anneal} / {total}", label]
            for key in ("accuracy", "accuracy_attention_bn_recalibrated"):
                mean, std = mean_std([r[key] for r in group])
                row.append(f"{mean:.2f} ± {std:.2f}")
            row.append(" / ".join(f"{r['accuracy']:.1f}" for r in group))
            row.append(", ".join(sorted({r.get("cpu", "?") for r in group})))
            rows.append(row)
    header = ["anneal / total iters", "arm", "test accuracy %", "attention BN re-estimated"]
    return markdown_table([*header, "per seed", "CPU"], rows, "rlrrll")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anneal-iters", type=int, nargs="+", default=[880, 220])
    parser.add_argument("--post-iters", type=int, default=110)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shard", default="1/1", help="k/n: every n-th run from the k-th")
    parser.add_argument("--report", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if args.report:
        print(report())
        return
    k, n = (int(v) for v in args.shard.split("/"))
    done = {_key(r) for r in _runs()}
    data = bench_accuracy.digits_split()
    runs = [
        (label, anneal, seed)
        for label in ARMS
        for anneal in args.anneal_iters
        for seed in args.seeds
    ]
    for i, (label, anneal, seed) in enumerate(runs):
        drop, treatment = ARMS[label]
        cell = annealing.Cell("kw_b1", anneal, args.post_iters, 64, seed, drop_last=drop)
        if i % n != k - 1 or _key({"cell": asdict(cell), "label": label}) in done:
            continue

        def build(budget, batch=cell.batch, treatment=treatment):
            model = bench_accuracy.build_classifier(budget)
            return on_small_batches(model, batch, treatment) if treatment else model

        record = annealing.run_cell(cell, data, build, bench_accuracy._shift)
        record["label"] = label
        annealing.append(record, RUNS)
        print(
            f"{label}, anneal {anneal} seed {seed}: {record['accuracy']:.2f}% "
            f"(attention BN re-estimated {record['accuracy_attention_bn_recalibrated']:.2f}%)",
            flush=True,
        )


if __name__ == "__main__":
    main()
