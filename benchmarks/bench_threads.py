"""Training on a busy machine: the thread and worker policy against the previous defaults.

The same 2-epoch training is timed (wall seconds of the whole subprocess, median of 3) for both
trainers, on idle cores and with two busy background processes (pure-Python spin loops, one
per core of this 2-core machine's worth of other work), with:

- ``before``: what the trainers did until issue 26: torch's default intra-op threads (one per
  core, OpenMP threads spinning at barriers) and no DataLoader workers;
- ``after``: the policy (``yolo_heads.threads.plan_cpu``, ``timm_knowledge.train``): threads
  from the usable cores minus workers, and only the cores other work leaves free when the run
  starts.

yolo-heads: the built-in ``digits`` detector on 320 / 64 generated images at 64 px.
timm-knowledge: ``kw_resnet18`` (one block per stage, b = 1) on an image folder of the same
digits' crops at 32 px (10 classes, 320 / 64 images).

    python benchmarks/bench_threads.py [--quick]
    python benchmarks/run.py --only threads
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPEATS = 3
BUSY = 2  # background processes in the loaded condition


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_data(root: Path, quick: bool) -> dict[str, Path]:
    """The detection set (COCO JSON) and an image folder of digit crops for the classifier."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from yolo_heads.data import make_digits_detection

    train_n, val_n = (48, 16) if quick else (320, 64)
    det = {
        "train": make_digits_detection(root / "det", train_n, image_size=64, progress=False),
        "val": make_digits_detection(
            root / "det", val_n, image_size=64, progress=False, seed=1, split="val"
        ),
    }
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.images))
    for split, picks in (("train", order[:train_n]), ("validation", order[-val_n:])):
        for i in picks:
            folder = root / "cls" / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(folder / f"{i}.png")
    return {"det_train": det["train"], "det_val": det["val"], "cls": root / "cls"}


def _command(trainer: str, policy: str, data: dict[str, Path], out: Path) -> list[str]:
    cores = _cores()
    if trainer == "yolo-heads":
        pinned = [f"schedule.threads={cores}", "data.num_workers=0"] if policy == "before" else []
        return [
            sys.executable, "-m", "yolo_heads.cli", "train", "--config", "digits",
            "--no-progress", "--no-plots", f"data.train={data['det_train']}",
            f"data.val={data['det_val']}", f"out={out}", "schedule.epochs=2", *pinned,
        ]  # fmt: skip
    pinned = ["--threads", str(cores), "--workers", "0"] if policy == "before" else []
    return [
        sys.executable, "-m", "timm_knowledge.cli", "train", "--model", "kw_resnet18",
        "--model-kwargs", json.dumps({"budget": 1.0, "layers": [1, 1, 1, 1]}),
        "--data-dir", str(data["cls"]), "--output", str(out), "--epochs", "2",
        "--batch-size", "16", "--image-size", "32", "--lr", "0.05", *pinned,
    ]  # fmt: skip


def _time(command: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-2000:]}")
    return seconds


def _busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(quick: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root, quick)
        for condition in ("idle", "busy"):
            for repeat in range(1 if quick else REPEATS):
                # interleaved: each repetition runs every (trainer, policy) once
                for trainer in ("yolo-heads", "timm-knowledge"):
                    for policy in ("before", "after"):
                        background = _busy(BUSY) if condition == "busy" else []
                        try:
                            if background:
                                time.sleep(2.0)  # let the load average see them
                            out = root / f"run_{trainer}_{policy}_{condition}_{repeat}"
                            seconds = _time(_command(trainer, policy, data, out))
                        finally:
                            for process in background:
                                process.kill()
                                process.wait()
                        times.setdefault(f"{trainer}|{policy}|{condition}", []).append(seconds)
                        print(f"{trainer} {policy} {condition}: {seconds:.1f} s", flush=True)
    return times


def report(times: dict[str, list[float]]) -> str:
    lines = [
        f"Wall seconds of a 2-epoch training subprocess (start-up included), median of "
        f"{len(next(iter(times.values())))} interleaved runs; {_cores()} usable cores; busy = "
        f"{BUSY} background spin loops.",
        "",
        "| trainer | policy | idle (s) | busy (s) | busy / idle | idle vs before |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for trainer in ("yolo-heads", "timm-knowledge"):
        base_idle = statistics.median(times[f"{trainer}|before|idle"])
        for policy in ("before", "after"):
            idle = statistics.median(times[f"{trainer}|{policy}|idle"])
            busy = statistics.median(times[f"{trainer}|{policy}|busy"])
            runs = ", ".join(
                f"{t:.1f}" for c in ("idle", "busy") for t in times[f"{trainer}|{policy}|{c}"]
            )
            lines.append(
                f"| {trainer} | {policy} | {idle:.1f} | {busy:.1f} | {busy / idle:.2f}x | "
                f"{idle / base_idle:.2f}x |  <!-- runs: {runs} -->"
            )
    lines += [
        "",
        "Goal (issue 26): busy <= 2.5x idle with the policy, and idle no slower than before.",
    ]
    return "\n".join(lines)


def main(quick: bool = False) -> str:
    return report(measure(quick))


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
