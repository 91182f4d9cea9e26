"""Restarts of a run folder: what a kill leaves and what ``train(resume=...)`` makes of it.

A kill is simulated inside the atomic writers (``yolo_heads._files``): before the n-th rename
of a temporary into place the write raises, and the temporaries are left as a killed process
leaves them (no clean-up). Every n of an uninterrupted run is tried.
"""

from __future__ import annotations

import csv
import os
import shutil
import types
import warnings

import pytest
import torch

from yolo_heads import YOLODetector, _files
from yolo_heads.checkpoint import load_trainer_state, read_config
from yolo_heads.data import CocoDetection
from yolo_heads.train import train


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _build(tiny):
    torch.manual_seed(0)
    return YOLODetector(num_classes=10, head_kwargs={"image_size_hint": 64}, **tiny)


def _run(digits, tiny, out, val_dataset=True, **kwargs):
    data = CocoDetection(digits[0], image_size=64)
    if val_dataset is True:
        val_dataset = CocoDetection(digits[1], image_size=64)
    common = dict(batch_size=4, lr=1e-2, warmup_steps=1, threads=1, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # resume notices
        return train(
            _build(tiny),
            data,
            val_dataset=val_dataset,
            epochs=2,
            out_dir=out,
            progress=False,
            plots=False,
            **common,
            **kwargs,
        )


def _kill_at(monkeypatch, n: int) -> None:
    """Writes in ``yolo_heads._files`` die before their ``n``-th rename (0-based) and leave
    their temporaries."""
    calls = {"replace": 0}

    def replace(src, dst):
        if calls["replace"] == n:
            calls["killed"] = True
            raise Killed
        calls["replace"] += 1
        os.replace(src, dst)

    def rmtree(path, *args, **kwargs):
        if not calls.get("killed"):
            shutil.rmtree(path, *args, **kwargs)

    monkeypatch.setattr(_files, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))
    monkeypatch.setattr(
        _files, "shutil", types.SimpleNamespace(**{**vars(shutil), "rmtree": rmtree})
    )


def _count_renames(monkeypatch) -> dict[str, int]:
    calls = {"replace": 0}

    def replace(src, dst):
        calls["replace"] += 1
        os.replace(src, dst)

    monkeypatch.setattr(_files, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))
    return calls


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_resume_keeps_the_best_epoch_and_metric(digits, tiny, tmp_path):
    """The best checkpoint's epoch and AP survive a restart, in the trainer state too (a
    resumed run knew only the folder, not which epoch or score it held)."""
    first = _run(digits, tiny, tmp_path)
    assert first.best_epoch is not None
    best_row = first.history[first.best_epoch - 1]
    assert first.best_fitness == best_row["AP"] == max(r["AP"] for r in first.history)
    assert load_trainer_state(tmp_path / "weights" / "last")["best_epoch"] == first.best_epoch
    assert read_config(first.best)["knowledge"]["epoch"] == first.best_epoch
    resumed = _run(digits, tiny, tmp_path, resume=tmp_path)  # nothing left to train
    assert (resumed.best, resumed.best_epoch) == (first.best, first.best_epoch)
    assert resumed.best_fitness == first.best_fitness
    assert resumed.last == tmp_path / "weights" / "last"


@pytest.mark.parametrize("validate", [True, False])
def test_a_kill_at_any_write_resumes_to_the_runs_best(
    digits, tiny, tmp_path, monkeypatch, validate
):
    """Killed before any rename of the uninterrupted run, a resumed run ends with the best
    checkpoint, results.csv and trainer state of the uninterrupted run and no temporaries.

    With validation this young detector scores AP 0 in both epochs, so only epoch 1 improves:
    killed during that first best write, the run used to finish without any weights/best.
    Without validation every epoch is the best, so the second best write (a swap) is killed too.
    """
    val = CocoDetection(digits[1], image_size=64) if validate else None
    with monkeypatch.context() as m:
        renames = _count_renames(m)
        straight = _run(digits, tiny, tmp_path / "straight", val_dataset=val)
    assert straight.best_epoch == (1 if validate else 2)
    want = _weights(straight.best)
    want_rows = _rows(tmp_path / "straight")
    assert renames["replace"] == (6 if validate else 8)
    for n in range(renames["replace"]):
        out = tmp_path / f"killed_{n}"
        with monkeypatch.context() as m:
            _kill_at(m, n)
            with pytest.raises(Killed):
                _run(digits, tiny, out, val_dataset=val)
        resumed = _run(digits, tiny, out, val_dataset=val, resume=out)
        assert resumed.best == out / "weights" / "best", n
        assert resumed.best_epoch == straight.best_epoch, n
        got = _weights(resumed.best)
        assert all(torch.equal(want[k], got[k]) for k in want), n
        assert read_config(resumed.best)["knowledge"]["epoch"] == straight.best_epoch
        assert _rows(out) == want_rows, n
        state = load_trainer_state(out / "weights" / "last")
        assert (state["epoch"], state["best_epoch"]) == (2, straight.best_epoch)
        assert not list(out.rglob("*.tmp")), n


def _rows(run):
    """results.csv without the wall-clock column."""
    with open(run / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_a_finished_run_leaves_no_temporaries(digits, tiny, tmp_path):
    """Temporaries of killed writes that no later write repeats (a best checkpoint, the last
    epoch's plots) are removed when the run or its resume finishes; the complete old copy of
    a checkpoint whose swap was killed between its renames is put back, not deleted."""
    _run(digits, tiny, tmp_path)
    weights = tmp_path / "weights"
    debris = [
        weights / ".best.0123abcd.tmp",
        tmp_path / ".pr_curve.png.k2j3h4.tmp",
        tmp_path / ".results.png.x9y8z7.tmp",
        tmp_path / ".results.csv.q1w2e3.tmp",
    ]
    debris[0].mkdir()
    (debris[0] / "model.safetensors").write_bytes(b"half")
    for path in debris[1:]:
        path.write_bytes(b"half")
    best = weights / "best"
    aside = weights / ".best.4567cdef.old.tmp"
    os.replace(best, aside)  # killed between the two renames of a swap
    resumed = _run(digits, tiny, tmp_path, resume=tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    assert resumed.best == best and read_config(best)["knowledge"]["epoch"] == resumed.best_epoch
    with open(tmp_path / "results.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_clean_temporaries_keeps_other_files(tmp_path):
    (tmp_path / "results.csv").write_text("epoch\n")
    (tmp_path / ".hidden").write_text("mine")
    (tmp_path / ".plot.png.abc.tmp").write_text("half")
    removed = _files.clean_temporaries(tmp_path)
    assert [p.name for p in removed] == [".plot.png.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "results.csv"]


# Epoch 1's first checkpoint write waits: Ctrl-C lands there.
SLOW_SAVE = """
import sys, time
import yolo_heads.train as trainer
from yolo_heads.cli import main

save = trainer.save_checkpoint

def slow(*args, **kwargs):
    print("saving", flush=True)
    time.sleep(120)
    return save(*args, **kwargs)

trainer.save_checkpoint = slow
raise SystemExit(main(sys.argv[1:]))
"""


def test_ctrl_c_is_one_line_exit_130_and_resumes(digits, tmp_path):
    """SIGINT to a real ``yolo-heads train`` process: one line and status 130, as
    ``timm-knowledge train``; ``--resume RUN`` then trains the run to its end."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    overrides = [
        f"data.train={digits[0]}",
        f"data.val={digits[1]}",
        f"out={run}",
        "schedule.epochs=1",
        "schedule.threads=1",
        "data.num_workers=0",
        "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "model.neck_channels=16",
        "schedule.batch_size=4",
    ]
    process = subprocess.Popen(
        [sys.executable, str(script), "train", "--config", "digits", "--no-progress", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:
            if line.strip() == "saving":
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "yolo-heads train: interrupted"
    from yolo_heads.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nothing saved yet: from epoch 1
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert load_trainer_state(run / "weights" / "last")["epoch"] == 1
    assert read_config(run / "weights" / "best")["knowledge"]["epoch"] == 1
    assert not list(run.rglob("*.tmp"))
