"""YOLOR's released detectors built from the authors' cfg files: size against the paper, and
what implicit knowledge costs at inference before and after folding.

- Parameters and GFLOPs (``torch.utils.flop_counter``: 2 x multiply-accumulates of the
  convolutions, counted on the meta device) of ``yolor_csp``, ``yolor_csp_x``, ``yolor_p6`` and
  ``yolor_w6`` at the paper's input sizes, against the YOLOR paper (Table 7 for YOLOR-CSP with
  and without implicit knowledge, Table 9 for P6 / W6).
- The implicit knowledge itself: its parameters and its element-wise operations at 640 px.
- Latency of ``yolor_csp`` at 640 px, batch 1, one CPU thread: as built (implicit add and
  multiply run, BatchNorm separate), with implicit knowledge folded
  (``implicit_knowledge.fuse``: the head's convolutions absorb both vectors) and fully fused
  (``yolo_heads.fuse_for_inference``: BatchNorm folded too). The variants run interleaved, one
  forward each per round; medians and ratios of the medians are reported.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from _common import count_params, markdown_table
from torch.utils.flop_counter import FlopCounterMode

from implicit_knowledge import ImplicitLayer, fuse, implicit_layers
from yolo_heads.architectures import GraphDetector
from yolo_heads.fuse import fuse_for_inference

# Table 7: MFLOPs of YOLOR-CSP with implicit knowledge minus without
PAPER_MFLOPS_DELTA = 117519.4372 - 117517.2952
# (name, input size, paper params, paper GFLOPs, where in the paper)
PAPER = [
    ("yolor_csp", 640, 52_911_546, 117.519, "Table 7, 'implicit 1' (baseline 52,908,989)"),
    ("yolor_csp_x", 640, None, None, "no row in the paper"),
    ("yolor_p6", 1280, 37_265_016, 326.2, "Table 9 (Table 7 'implicit 2': same params)"),
    ("yolor_w6", 1280, 79_873_400, 454.0, "Table 9"),
]


def _gflops(model: GraphDetector, size: int) -> float:
    meta = model.to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


def _implicit_ops(model: GraphDetector, size: int) -> tuple[int, int, int]:
    """Parameters of the implicit layers, and their element-wise additions / multiplications
    per image at ``size`` px (one per channel and position)."""
    params = sum(p.numel() for m in implicit_layers(model).values() for p in m.parameters())
    adds = muls = 0
    for level, stride in enumerate(model.strides):
        cells = (size // stride) ** 2
        out = model.head.out[level]
        adds += out.add.channels * cells
        muls += out.mul.channels * cells
    return params, adds, muls


def _latency(variants: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model in variants.values():  # warm-up
            model(x)
        for _ in range(rounds):
            for name, model in variants.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    return times


def main(quick: bool = False) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _main(quick)
    finally:
        torch.set_num_threads(threads)


def _main(quick: bool) -> str:
    torch.manual_seed(0)
    rows = []
    for name, size, paper_params, paper_gflops, where in PAPER:
        model = GraphDetector(name)
        params = count_params(model)
        gflops = _gflops(model, size)
        rows.append([
            name, size, f"{params:,}",
            f"{paper_params:,}" if paper_params else "-",
            f"{params - paper_params:+,}" if paper_params else "-",
            f"{gflops:.1f}", f"{paper_gflops:.1f}" if paper_gflops else "-", where,
        ])  # fmt: skip
    size_table = markdown_table(
        ["model", "px", "params (ours)", "params (paper)", "diff", "GFLOPs (ours)",
         "GFLOPs (paper)", "paper row"],
        rows, "lrrrrrrl",
    )  # fmt: skip

    model = GraphDetector("yolor_csp").eval()
    implicit_params, adds, muls = _implicit_ops(model, 640)
    knowledge = markdown_table(
        ["yolor_csp at 640 px", "ours", "paper (Table 7, implicit - baseline)"],
        [
            ["implicit parameters", f"{implicit_params:,}", f"{52_911_546 - 52_908_989:,}"],
            ["implicit additions (M)", f"{adds / 1e6:.3f}", "-"],
            ["implicit multiplications (M)", f"{muls / 1e6:.3f}", f"{PAPER_MFLOPS_DELTA:.3f}"],
        ],
        "lrr",
    )  # fmt: skip

    size, rounds = (320, 3) if quick else (640, 7)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    folded = fuse(model)
    fused = fuse_for_inference(model, x)
    assert not implicit_layers(folded)
    assert not any(isinstance(m, ImplicitLayer) for m in fused.modules())
    variants = {
        "as built (implicit add/mul run, BN separate)": model,
        "implicit folded (implicit_knowledge.fuse)": folded,
        "fully fused (fuse_for_inference: implicit + BN)": fused,
    }
    with torch.no_grad():
        reference = model(x)
        worst = [
            max((a - b).abs().max().item() / a.abs().max().item() for a, b in zip(reference, v(x)))
            for v in (folded, fused)
        ]
    load_before = os.getloadavg()[0]
    times = _latency(variants, x, rounds)
    load_after = os.getloadavg()[0]
    base = statistics.median(times[next(iter(variants))])
    latency_rows = []
    for (name, values), diff in zip(times.items(), [0.0, *worst]):
        median = statistics.median(values)
        latency_rows.append([
            name, f"{count_params(variants[name]):,}", f"{median * 1e3:.0f}",
            f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}", f"{median / base:.3f}",
            "reference" if not diff else f"{diff:.1e}",
        ])  # fmt: skip
    latency = markdown_table(
        ["yolor_csp variant", "params", "median ms", "range ms", "x as built",
         "max diff / max out"],
        latency_rows, "lrrrrr",
    )  # fmt: skip
    return (
        "YOLOR's detectors as built from the authors' cfg files (WongKinYiu/yolor at 3ca250a) "
        "by `yolo_heads.architectures.darknet`.\n\n"
        "## Size against the paper\n\n"
        f"{size_table}\n\n"
        "GFLOPs are 2 x the convolutions' multiply-accumulates (PyTorch's flop counter), at the "
        "paper's input size; element-wise operations are not counted.\n\n"
        "## Implicit knowledge in yolor_csp\n\n"
        f"{knowledge}\n\n"
        "## Latency before and after folding\n\n"
        f"yolor_csp, {size} px, batch 1, 1 CPU thread, {rounds} interleaved rounds after one "
        "warm-up forward of each (random weights: the time does not depend on them); "
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after on "
        f"{os.cpu_count()} cores (other work shares them: compare the ratios, not the ms).\n\n"
        f"{latency}\n"
    )
