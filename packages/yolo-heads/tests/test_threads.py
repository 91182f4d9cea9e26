"""The thread and worker policy: the cores a process may use, the load already there, and
the user's settings, which win."""

from __future__ import annotations

import pytest

from yolo_heads import threads


@pytest.fixture
def machine(monkeypatch):
    """A machine with ``cores`` usable CPUs carrying ``load`` before the run starts."""

    def set_machine(cores: int, load: float, omp: str | None = None) -> None:
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(threads, "_other_load", lambda: load)
        if omp is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", omp)

    return set_machine


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [
        (2, 0.1, (2, 0)),  # idle: every core computes, loading stays in the main process
        (2, 3.6, (1, 0)),  # other work takes the cores: one thread, no spinning siblings
        (2, 1.0, (1, 0)),  # one core left free
        (16, 0.0, (12, 4)),  # a quarter of the cores load data
        (16, 6.0, (6, 4)),  # 16 - 6 busy - 4 workers
    ],
)
def test_automatic_choice(machine, cores, load, expected):
    machine(cores, load)
    plan = threads.plan_cpu()
    assert (plan.threads, plan.workers) == expected
    assert plan.cores == cores and f"load {load:.1f}" in plan.describe()


def test_the_user_wins(machine):
    machine(2, 5.0, omp="2")
    assert threads.plan_cpu().threads == 2  # OMP_NUM_THREADS
    assert threads.plan_cpu().source == "OMP_NUM_THREADS"
    assert threads.plan_cpu(threads=1).threads == 1  # the argument over the environment
    assert threads.plan_cpu(workers=3).workers == 3
    machine(2, 5.0, omp="")  # empty: automatic
    assert threads.plan_cpu().threads == 1


def test_ranks_share_the_cores(machine):
    machine(8, 0.0)
    plan = threads.plan_cpu(ranks=2)
    assert plan.cores == 4 and plan.threads + plan.workers == 4


@pytest.mark.parametrize(("name", "value"), [("threads", -2), ("threads", 1.5), ("workers", True)])
def test_bad_values_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r} is not valid"):
        threads.plan_cpu(**{name: value})


def test_training_applies_the_plan(digits, machine):
    import torch

    from yolo_heads import YOLODetector
    from yolo_heads.data import CocoDetection
    from yolo_heads.train import train

    machine(2, 3.0)  # loaded: one thread
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = YOLODetector("resnet18", num_classes=10, neck_channels=16)
        train(
            model, CocoDetection(digits[0], image_size=64), epochs=1, batch_size=8, progress=False
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_other_work_is_measured_now_not_a_minute_ago():
    """Two busy processes show as two busy cores within the sampling window (the reference is
    /proc/stat read here around the same window)."""
    import subprocess
    import sys

    if threads._cpu_times() is None:
        pytest.skip("no /proc/stat on this platform")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        import time

        time.sleep(0.5)
        busy = threads._other_load(window=0.5)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert busy >= min(2, threads.os.cpu_count() or 1) - 0.5
