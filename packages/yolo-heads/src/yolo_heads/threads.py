"""Intra-op threads and DataLoader workers for a run: from the cores this process may use and
the load the machine already carries when it starts.

Why: on a shared machine, OpenMP threads that spin at barriers while a sibling is descheduled
cost far more than a thread gains (measured here with other work at load 4-5 on 2 cores: a
2-epoch digits training took 68-201 s with 2 threads against 14-17 s with one). So the default
takes the cores in ``os.sched_getaffinity`` minus the DataLoader workers, and, when other work
already runs, only the cores it leaves free (at least one).

The user decides when they say so: an explicit ``threads`` / ``workers`` argument (config keys
``schedule.threads``, ``data.num_workers``) wins, then ``OMP_NUM_THREADS`` for threads. The
thread count can change the float rounding of a run: pin it (``schedule.threads=1``) for
numbers that repeat bit for bit on any machine state.

    >>> plan = plan_cpu(threads=1, workers=0)
    >>> plan.threads, plan.workers
    (1, 0)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["CPUPlan", "plan_cpu", "usable_cores"]


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has no affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _other_load(window: float = 0.25) -> float:
    """How many cores other work keeps busy now: /proc/stat over ``window`` seconds while this
    process sleeps (the load average lags by a minute: a run that just ended still counts);
    the 1-minute load average where /proc/stat is missing."""
    import time

    first = _cpu_times()
    if first is not None:
        time.sleep(window)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, share * (os.cpu_count() or 1))
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average either: assume idle
        return 0.0


@dataclass(frozen=True)
class CPUPlan:
    """What a run uses: ``threads`` (torch intra-op) and ``workers`` (DataLoader processes)."""

    cores: int
    load: float
    threads: int
    workers: int
    source: str  # where the thread count came from

    def apply(self) -> int:
        """Set torch's intra-op threads; returns the previous count (to restore)."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return previous

    def describe(self) -> str:
        return (
            f"cpu: {self.cores} usable cores, load {self.load:.1f}: {self.threads} intra-op "
            f"thread{'s' * (self.threads != 1)} ({self.source}), {self.workers} DataLoader "
            f"worker{'s' * (self.workers != 1)}"
        )


def _check(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(
            f"{name}={value!r} is not valid; expected an integer >= 0, or -1/None: auto"
        )
    return None if value == -1 else value


def plan_cpu(threads: int | None = None, workers: int | None = None, *, ranks: int = 1) -> CPUPlan:
    """Choose threads and workers (``None`` or ``-1``: automatic; ``threads=0`` too).

    ``ranks`` processes of one job (DDP on the CPU) share the cores equally.
    """
    threads = _check("threads", threads)
    workers = _check("workers", workers)
    cores = max(1, usable_cores() // max(ranks, 1))
    load = _other_load()
    if workers is None:
        # Loading stays in the main process on small machines, where a worker would take a
        # core from the compute; large ones give a quarter of their cores to loading.
        workers = 0 if cores <= 2 else min(4, cores // 4)
    compute = max(1, cores - workers)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads:
        source = "asked for"
    elif env.isdigit() and int(env) > 0:
        threads, source = int(env), "OMP_NUM_THREADS"
    else:
        # What other work takes from this machine's cores as the run starts.
        free = usable_cores() - load - workers
        if free >= compute - 0.5:
            threads, source = compute, "all free cores"
        else:
            threads = max(1, min(compute, math.floor(free / max(ranks, 1))))
            source = "cores left free by other work"
    return CPUPlan(cores, load, threads, workers, source)
