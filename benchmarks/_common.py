"""Helpers shared by the project-wide benchmarks (params, speed, accuracy).

Not a ``bench_*.py`` file, so ``run.py`` does not run it. Everything here is small: Markdown
tables, loading a per-package bench module by path (as ``run.py`` does), parameter counting,
mean / spread over seeds, and writing PNG plots atomically when matplotlib is installed.

Example:
    >>> markdown_table(["a", "b"], [[1, 2.5]])
    '| a | b |\\n| --- | --- |\\n| 1 | 2.5 |'
    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` is one character per column (``l`` or ``r``), default ``---``."""
    rule = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared tensors counted once, as ``module.parameters()`` yields)."""
    return sum(p.numel() for p in module.parameters())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    if not values:
        raise ValueError("values=[]: need at least one value for a mean")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def load_bench(name: str) -> ModuleType | None:
    """Import ``benchmarks/bench_<name>.py`` by path (as ``run.py`` does), or None if absent.

    Returns None too when the module cannot be imported (its package missing); the caller then
    reports that row as not measured instead of failing the whole benchmark.
    """
    path = HERE / f"bench_{name}.py"
    if not path.exists():
        return None
    module_name = f"bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # registered so a child process or pickling can find it again by name
    sys.modules[module_name] = module
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        del sys.modules[module_name]
        print(f"bench_{name}: not loaded ({error})", flush=True)
        return None
    return module


def plotting():
    """``matplotlib.pyplot`` with the non-interactive backend, or None if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, name: str) -> str:
    """Write ``fig`` to ``benchmarks/results/<name>`` (temporary name, then rename)."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / name
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(out)
    return name


def no_plot_note() -> str:
    return "_(plot not drawn: matplotlib is not installed; `pip install matplotlib`)_\n"
