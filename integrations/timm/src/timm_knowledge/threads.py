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
import time

__all__ = ["busy_cores", "choose"]


def busy_cores(window: float = 0.25) -> float:
    """Cores other work keeps busy now: /proc/stat over ``window`` seconds while this process
    sleeps (the load average lags a minute behind: a run that just ended still counts), or the
    1-minute load average off Linux."""
    try:
        samples = []
        for pause in (window, 0.0):
            with open("/proc/stat", encoding="ascii") as f:
                cpu = [float(v) for v in f.readline().split()[1:]]
            samples.append((sum(cpu) - cpu[3] - cpu[4], sum(cpu)))
            time.sleep(pause)
        (busy0, all0), (busy1, all1) = samples
        return max(0.0, (busy1 - busy0) / (all1 - all0) * (os.cpu_count() or 1))
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def choose(threads: int = 0, workers: int = -1, ranks: int = 1) -> tuple[int, int, str]:
    """``(threads, workers, description)``; ``threads=0`` and ``workers=-1`` are automatic."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    load = busy_cores()
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
