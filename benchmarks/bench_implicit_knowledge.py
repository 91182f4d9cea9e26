"""Implicit knowledge: inference latency unfused vs fused vs the same network without it.

YOLOR section 4.4 says fusion makes implicit knowledge free at inference. The network is a
small detector-like stack of 3x3 and 1x1 convolutions with an implicit addition before every
1x1 conv and an implicit multiplication after every conv (factorised priors, the costliest to
evaluate unfused). Ratios are against the plain network, timed in the same run.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import benchmark

from implicit_knowledge import ImplicitAdd, ImplicitMul, fuse, implicit_layers


def _network(width: int, depth: int, implicit: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth):
        block = [nn.Conv2d(width, width, 3, padding=1)]
        block += [ImplicitMul(width, prior="factorized")] if implicit else []
        block += [nn.ReLU()]
        block += [ImplicitAdd(width, prior="factorized")] if implicit else []
        block += [nn.Conv2d(width, width, 1)]
        block += [ImplicitMul(width, prior="factorized")] if implicit else []
        block += [nn.ReLU()]
        layers += block
    return nn.Sequential(*layers).eval()


def _time(model: nn.Module, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": x})
        return timer.blocked_autorange(min_run_time=seconds).median


def main(quick: bool = False) -> str:
    torch.manual_seed(0)
    width, depth, seconds = (64, 4, 0.5) if quick else (128, 6, 2.0)
    rows = []
    for batch, size in [(1, 64), (16, 64)]:
        x = torch.randn(batch, 3, size, size)
        unfused = _network(width, depth, implicit=True)
        fused = fuse(unfused)
        plain = _network(width, depth, implicit=False)
        with torch.no_grad():
            diff = (unfused(x) - fused(x)).abs().max().item()
        t_plain, t_unfused, t_fused = (_time(m, x, seconds) for m in (plain, unfused, fused))
        rows.append(
            f"| {batch} x 3 x {size} x {size} | {t_plain * 1e3:.2f} | {t_unfused * 1e3:.2f} "
            f"({t_unfused / t_plain:.3f}x) | {t_fused * 1e3:.2f} ({t_fused / t_plain:.3f}x) | "
            f"{len(implicit_layers(fused))} | {diff:.1e} |"
        )
    n_plain = sum(p.numel() for p in plain.parameters())
    n_unfused = sum(p.numel() for p in unfused.parameters())
    n_fused = sum(p.numel() for p in fused.parameters())
    return (
        f"Network: {depth} blocks of 3x3 + 1x1 convs, width {width}, "
        f"{3 * depth} factorised implicit layers.\n\n"
        "| input | plain ms | unfused ms (ratio) | fused ms (ratio) "
        "| implicit left | max abs diff |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"Parameters: plain {n_plain:,}, unfused {n_unfused:,} "
        f"(+{(n_unfused - n_plain) / n_plain:.1%}), fused {n_fused:,}.\n"
    )


if __name__ == "__main__":
    print(main(quick=True))
