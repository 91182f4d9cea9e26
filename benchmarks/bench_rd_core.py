"""rd-core: cost of the Retriever-Dictionary module and the overhead it adds to timm backbones.

YOLO-RD reports about +3% latency (YOLOv7, 3.59 -> 3.70 ms per batch of 32 on an RTX 3090)
for < 1% more parameters. Here the module is timed alone at the paper's defaults (f = 512,
N = 512, k = 5, 80 x 80 map) and inside timm backbones at 640 px, where the RD sits on the
stride-8 map (80 x 80), as in YOLO. Every ratio compares two models timed in the same run,
interleaved round by round so load changes hit both alike; the multiply-accumulate (MAC) ratio
is given next to the latency ratio, to separate what the RD costs by construction from what the
implementation adds.
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import timm
import torch
from torch import nn
from torch.utils import benchmark

from rd_core import RetrieverDictionary, attach, distillation_loss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _time(fn, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        timer = benchmark.Timer("fn(x)", globals={"fn": fn, "x": x})
        return timer.blocked_autorange(min_run_time=seconds).median


def _interleaved_runs(fns: list, x: torch.Tensor, rounds: int, seconds: float) -> list[list[float]]:
    """Each function's time in every round, the functions alternating within a round."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:  # warm-up (allocator, caches, the RD's folded dictionary)
        _time(fn, x, seconds / 4)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            times[i].append(_time(fn, x, seconds))
    return times


def _interleaved(fns: list, x: torch.Tensor, rounds: int, seconds: float) -> list[float]:
    """Median over ``rounds`` of each function's time, the functions alternating every round."""
    return [statistics.median(t) for t in _interleaved_runs(fns, x, rounds, seconds)]


def _paired_ratio(base: list[float], other: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-round ratios ``other / base`` (adjacent measurements,
    so a load change between rounds cancels out)."""
    ratios = [o / b for b, o in zip(base, other)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d / Linear in one forward (hooks on the leaves)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        k = m.weight[0].numel()  # (in / groups) * kh * kw
        total += out.numel() * k

    def linear_hook(m: nn.Linear, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return total


def _rd_macs(rd: RetrieverDictionary, h: int, w: int) -> int:
    """G + E (or the fused k x k conv) + D, per image."""
    f, n, k = rd.in_channels, rd.num_atoms, rd.kernel_size
    retriever = f * n * k * k if rd.fused else f * n + n * k * k
    return (retriever + n * f) * h * w


def _module_table(quick: bool) -> str:
    f, n, k, size = 512, 512, 5, 80
    rounds, seconds = (3, 0.3) if quick else (5, 1.0)
    batch = 32 if DEVICE.type == "cuda" else 1
    x = torch.randn(batch, f, size, size, device=DEVICE)
    variants = {
        "paper, split (default)": RetrieverDictionary(f, n, k),
        "paper, fused retriever (Table 4)": RetrieverDictionary(f, n, k, fused_retriever=True),
        "authors' variant": RetrieverDictionary(f, n, k, variant="authors"),
    }
    rds = [rd.to(DEVICE).eval() for rd in variants.values()]
    paper = rds[0]

    def unfolded(x: torch.Tensor) -> torch.Tensor:  # the training-mode formula, in eval
        w_x, w_d = paper.mix_weights
        return w_x * x + w_d * paper.dictionary(paper.norm(paper.retriever(x)))

    fns = [*rds, unfolded]
    times = _interleaved(fns, x, rounds, seconds)
    with torch.inference_mode():
        diff = (paper(x) - unfolded(x)).abs().max().item()
    rows = []
    names = [*variants, "paper, split, dictionary not folded (per-forward WN + PONO affine)"]
    for name, rd, t in zip(names, [*rds, paper], times):
        rows.append(
            f"| {name} | {_params(rd):,} | {_rd_macs(rd, size, size) / 1e9:.2f} | "
            f"{t * 1e3:.2f} | {t / times[0]:.2f}x |"
        )
    return (
        f"## The module alone (f = {f}, N = {n}, k = {k}, batch {batch} x {f} x {size} x {size}, "
        f"{DEVICE.type}, eval, inference mode)\n\n"
        "| module | parameters | GMACs / image | latency ms | vs default |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"Folded vs per-forward dictionary: max abs difference {diff:.1e}.\n\n"
    )


def _backbone_table(quick: bool) -> str:
    size = 320 if quick else 640
    rounds, seconds = (3, 0.5) if quick else (9, 1.0)
    batch = 32 if DEVICE.type == "cuda" else 1
    x = torch.randn(batch, 3, size, size, device=DEVICE)
    cases = [
        ("resnet50", "layer2", {}),
        ("cspdarknet53", "stages.2", {}),
        ("convnext_tiny", "stages.1", {}),
    ]
    if quick:
        cases = cases[:2]
    rows = []
    for name, at, kwargs in cases:
        torch.manual_seed(0)
        base = timm.create_model(name, **kwargs).to(DEVICE).eval()
        with_rd = copy.deepcopy(base)
        rd = attach(with_rd, at=at, num_atoms=512, input_size=(3, size, size))
        runs_base, runs_rd = _interleaved_runs([base, with_rd], x, rounds, seconds)
        t_base, t_rd = statistics.median(runs_base), statistics.median(runs_rd)
        ratio, low, high = _paired_ratio(runs_base, runs_rd)
        macs_base = _conv_macs(base, x[:1])
        stride_map = size // 8
        macs_rd = _rd_macs(rd, stride_map, stride_map)
        p_base, p_rd = _params(base), _params(rd)
        rows.append(
            f"| {name} | {at} | {rd.in_channels} x {stride_map} x {stride_map} | "
            f"{p_base / 1e6:.2f}M | +{p_rd / 1e6:.3f}M (+{p_rd / p_base:.2%}) | "
            f"+{macs_rd / macs_base:.1%} | {t_base * 1e3:.1f} | {t_rd * 1e3:.1f} | "
            f"**{ratio:.3f}x** ({low:.3f}-{high:.3f}) |"
        )
    return (
        f"## Overhead on timm backbones ({size} px, batch {batch}, N = 512, k = 5, "
        f"{DEVICE.type})\n\n"
        "| backbone | RD after | RD input | backbone params | RD params | MACs added | "
        "backbone ms | with RD ms | latency ratio, median of rounds (min-max) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        "The paper's +3% is for a whole YOLOv7 detector (backbone, neck and head, ~52 GMACs per "
        "640 px image) on a GPU; on a bare backbone the same module is a larger share of the "
        f"work. Each ratio is the median over {rounds} rounds of adjacent measurements of the two "
        "models; the range shows how much the shared machine's load moved it.\n\n"
    )


def _distillation_table(quick: bool) -> str:
    batch = 8 if quick else 32
    s = torch.randn(batch, 512, 80, 80, device=DEVICE, requires_grad=True)
    t = torch.randn(batch, 512, 80, 80, device=DEVICE)
    rows = []
    for positions in (1024, 4096):
        start = time.perf_counter()
        loss = distillation_loss(s, t, 0.1, max_positions=positions)
        loss.backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        matrix_mib = positions * positions * 4 / 2**20
        rows.append(f"| {positions} | {matrix_mib:.0f} | {elapsed * 1e3:.0f} |")
    full_gib = (batch * 80 * 80) ** 2 * 4 / 2**30
    return (
        f"## Distillation loss on {batch} x 512 x 80 x 80 maps (equation 8, sampled positions)\n\n"
        f"All {batch * 6400:,} positions at once would need a {full_gib:,.0f} GiB similarity "
        f"matrix; sampling keeps it small.\n\n"
        "| sampled positions | similarity matrix MiB | loss + backward ms |\n"
        "| --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


def main(quick: bool = False) -> str:
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    context = (
        f"{torch.get_num_threads()} torch thread(s); 1-minute load average {load:.1f} on "
        f"{os.cpu_count()} CPUs when the run started (a shared machine: compare ratios, not "
        f"absolute times).\n\n"
    )
    return context + _module_table(quick) + _backbone_table(quick) + _distillation_table(quick)


if __name__ == "__main__":
    print(main(quick=True))
