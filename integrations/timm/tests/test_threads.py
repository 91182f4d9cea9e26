"""timm-knowledge's thread and worker policy: the rule written out per machine state."""

from __future__ import annotations

import pytest

from timm_knowledge import threads


@pytest.mark.parametrize(
    ("cores", "load", "omp", "args", "expected"),
    [
        (2, 0.0, None, {}, (2, 0)),  # idle: every core computes
        (2, 4.0, None, {}, (1, 0)),  # loaded: one thread, no siblings spinning
        (16, 0.0, None, {}, (12, 4)),  # a quarter of the cores load data
        (2, 4.0, "2", {}, (2, 0)),  # OMP_NUM_THREADS wins over the load
        (2, 4.0, "2", {"threads": 1, "workers": 1}, (1, 1)),  # the flags win over everything
        (8, 0.0, None, {"ranks": 2}, (3, 1)),  # two DDP ranks share 8 cores
    ],
)
def test_choice(monkeypatch, cores, load, omp, args, expected):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(threads, "busy_cores", lambda: load)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    chosen, workers, text = threads.choose(**args)
    assert (chosen, workers) == expected
    assert f"{chosen} intra-op threads" in text and f"load {load:.1f}" in text
