"""Intra-op threads and DataLoader workers for ``timm-knowledge train``.

The same rule as yolo-heads' trainer (``yolo_heads.threads``; not imported: yolo-heads is an
optional dependency here): the cores this process may use (``os.sched_getaffinity``) minus the
DataLoader workers, and only the cores other work leaves free when the run starts, because
OpenMP threads spinning beside descheduled siblings cost more than they gain on a shared
machine. ``--threads`` / ``--workers`` win, then ``OMP_NUM_THREADS`` for threads.

    >>> choose(threads=1, workers=0)[:2]
    (1, 0)
"""

from __future__ import annotations

import math
import os

__all__ = ["choose"]


def choose(threads: int = 0, workers: int = -1, ranks: int = 1) -> tuple[int, int, str]:
    """``(threads, workers, description)``; ``threads=0`` and ``workers=-1`` are automatic."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    cores = max(1, usable // max(ranks, 1))
    if workers < 0:  # small machines load in the main process; large ones give a quarter
        workers = 0 if cores <= 2 else min(4, cores // 4)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads > 0:
        source = "--threads"
    elif env.isdigit() and int(env) > 0:
        threads, source = int(env), "OMP_NUM_THREADS"
    else:
        compute = max(1, cores - workers)
        free = (usable - load - workers) / max(ranks, 1)
        threads = compute if free >= compute - 0.5 else max(1, min(compute, math.floor(free)))
        source = "all free cores" if threads == compute else "cores left free by other work"
    text = (
        f"cpu: {cores} usable cores, load {load:.1f}: {threads} intra-op threads ({source}), "
        f"{workers} DataLoader workers"
    )
    return threads, workers, text
