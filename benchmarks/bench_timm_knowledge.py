"""timm-knowledge: parameter counts of the registered paper configurations against the papers.

Every KernelWarehouse configuration ``timm_knowledge`` registers is built at full size with
``timm.create_model(name)`` (no forward pass) and its parameter count compared with the count
the KernelWarehouse paper reports (Tables 1-4, 11). The RD classifiers are compared with their
timm base network (the paper reports < 1% extra parameters on YOLO models; on timm's classifiers
at N = 512 the share depends on the channel count where the RD sits).
"""

from __future__ import annotations

import time

import timm

import timm_knowledge
from timm_knowledge import PAPER_MODELS


def _params(name: str, **kwargs) -> tuple[int, float]:
    start = time.perf_counter()
    model = timm.create_model(name, **kwargs)
    seconds = time.perf_counter() - start
    return sum(p.numel() for p in model.parameters()), seconds


def main(quick: bool = False) -> str:
    names = timm_knowledge.list_paper_models("kernelwarehouse")
    if quick:
        names = [n for n in names if "resnet18" in n or "mobilenetv2_050" in n]
    rows = [
        "## KernelWarehouse configurations vs the paper",
        "",
        "| name | base | built (M) | paper (M) | difference | build time (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in names:
        info = PAPER_MODELS[name]
        built, seconds = _params(name)
        paper = info.paper_params_m
        diff = (built / 1e6 - paper) / paper
        rows.append(
            f"| `{name}` | {info.base} | {built / 1e6:.2f} | {paper:.2f} | {diff:+.2%} | "
            f"{seconds:.1f} |"
        )
    rows += [
        "",
        "## Retriever-Dictionary classifiers (N = 512, paper variant)",
        "",
        "| name | RD after | base (M) | with RD (M) | extra |",
        "|---|---|---:|---:|---:|",
    ]
    rd_names = timm_knowledge.list_paper_models("yolo-rd")
    for name in rd_names[:1] if quick else rd_names:
        info = PAPER_MODELS[name]
        base, _ = _params(info.base)
        with_rd, _ = _params(name)
        rows.append(
            f"| `{name}` | `{info.build_args['rd_at']}` | {base / 1e6:.2f} | "
            f"{with_rd / 1e6:.2f} | {(with_rd - base) / base:+.2%} |"
        )
    return "\n".join(rows) + "\n"
