"""What a user of ``timm-knowledge train`` sees across a run and its restart: the log's epoch
numbers and learning rates, the saved model's config and file modes, ``--resume`` from the run
folder alone, and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.data import resolve_data_config

import timm_knowledge  # noqa: F401  (registers the names)
from timm_knowledge.cli import main
from timm_knowledge.train import TrainConfig, train

MODEL_KWARGS = {"budget": 1.0, "layers": [1, 1, 1, 1], "zero_init_last": False}
PER_EPOCH = 3  # 12 training images, batch 4


def _flags(image_folder: Path, out: Path) -> list[str]:
    return [
        "--model", "kw_resnet18", "--model-kwargs", json.dumps(MODEL_KWARGS),
        "--data-dir", str(image_folder), "--output", str(out), "--epochs", "2", "--batch-size", "4",
        "--image-size", "32", "--lr", "0.05", "--temp-epochs", "1.5", "--no-aug",
        "--workers", "0", "--threads", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight(image_folder, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run, written under umask 022."""
    out = tmp_path_factory.mktemp("straight")
    before = os.umask(0o022)
    try:
        assert main(["train", *_flags(image_folder, out)]) == 0
    finally:
        os.umask(before)
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_epochs_are_numbered_from_1(straight):
    """As in yolo-heads' results.csv: epoch 1 is the first (the logs said 0)."""
    assert [e["epoch"] for e in _lines(straight / "metrics.jsonl")] == [1, 2]
    rows = _lines(straight / "iterations.jsonl")
    assert [r["epoch"] for r in rows] == [1] * PER_EPOCH + [2] * PER_EPOCH
    assert json.loads((straight / "summary.json").read_text())["epoch"] == 2
    assert torch.load(straight / "last.pth", weights_only=True)["epoch"] == 2


def test_logged_lr_is_the_rate_each_update_used(straight):
    """timm's cosine schedule per update, written out: update i (from 0) of T uses
    lr * (1 + cos(pi * i / T)) / 2 (min_lr 0, no warm-up); the log showed update i + 1's."""
    rows = _lines(straight / "iterations.jsonl")
    total = 2 * PER_EPOCH
    expected = [0.05 * (1 + math.cos(math.pi * i / total)) / 2 for i in range(total)]
    np.testing.assert_allclose([r["lr"] for r in rows], expected, rtol=1e-9)
    epochs = _lines(straight / "metrics.jsonl")  # each epoch: the rate of its last update
    assert [e["lr"] for e in epochs] == [rows[PER_EPOCH - 1]["lr"], rows[-1]["lr"]]


def test_saved_model_says_the_trained_input_size(straight):
    """A 32 px run's config.json said timm's 224, so resolve_data_config evaluated at 224."""
    for folder in ("model",):
        config = json.loads((straight / folder / "config.json").read_text())
        assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
        model = timm.create_model(f"local-dir:{straight / folder}", pretrained=True)
        assert resolve_data_config(model=model)["input_size"] == (3, 32, 32)


def test_saved_files_follow_the_umask(straight):
    """model.safetensors was 0600 beside a 0644 config.json under umask 022."""
    for name in ("model/model.safetensors", "model/config.json", "last.pth", "metrics.jsonl"):
        assert (straight / name).stat().st_mode & 0o777 == 0o644, name


def _same_run(run: Path, straight: Path) -> None:
    assert [e["epoch"] for e in _lines(run / "metrics.jsonl")] == [1, 2]
    rows, reference = _lines(run / "iterations.jsonl"), _lines(straight / "iterations.jsonl")
    assert [r["step"] for r in rows] == list(range(2 * PER_EPOCH))
    for key in ("tau", "lr", "loss"):
        np.testing.assert_allclose([r[key] for r in rows], [r[key] for r in reference], rtol=1e-4)
    final = torch.load(run / "last.pth", weights_only=True)["model"]
    for key, value in torch.load(straight / "last.pth", weights_only=True)["model"].items():
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_resume_needs_only_the_run_folder(image_folder, straight, tmp_path, monkeypatch):
    """``--resume RUN`` reads the run's saved options (it demanded --model, --data-dir and
    --output again) and finishes like the uninterrupted run."""
    run = tmp_path / "run"

    def killed(*args, **kwargs):  # after epoch 1's last.pth and log lines
        raise KeyboardInterrupt

    cfg = TrainConfig(
        model="kw_resnet18",
        model_kwargs=MODEL_KWARGS,
        data_dir=str(image_folder),
        output=str(run),
        epochs=2,
        batch_size=4,
        image_size=32,
        lr=0.05,
        temp_epochs=1.5,
        no_aug=True,
        workers=0,
        threads=1,
    )
    with monkeypatch.context() as m:
        m.setattr("timm_knowledge.train._save_hub_dir", killed)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    assert main(["train", "--resume", str(run)]) == 0
    _same_run(run, straight)
    assert main(["train", "--resume", str(run / "last.pth"), "--epochs", "3"]) == 0
    assert [e["epoch"] for e in _lines(run / "metrics.jsonl")] == [1, 2, 3]


def test_resume_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no such run folder or last.pth" in capsys.readouterr().err
    assert main(["train", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "--model, --data-dir, --output" in err and "--resume" in err


# Epoch 1's model/ write waits: Ctrl-C lands there, after last.pth and the epoch's log lines.
SLOW_SAVE = textwrap.dedent(
    """
    import sys, time
    import timm_knowledge.train as trainer
    from timm_knowledge.cli import main

    save = trainer._save_hub_dir

    def slow(*args, **kwargs):
        print("saving", flush=True)
        time.sleep(120)
        save(*args, **kwargs)

    trainer._save_hub_dir = slow
    raise SystemExit(main(sys.argv[1:]))
    """
)


def test_ctrl_c_is_one_line_exit_130_and_resumes_exactly(image_folder, straight, tmp_path):
    """SIGINT to a real ``timm-knowledge train`` process: one line and status 130, as
    ``yolo-heads train`` (it was a KeyboardInterrupt traceback); ``--resume`` then finishes
    like the uninterrupted run."""
    run = tmp_path / "run"
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    process = subprocess.Popen(
        [sys.executable, str(script), "train", *_flags(image_folder, run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        for line in process.stdout:
            if line.strip() == "saving" or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "timm-knowledge train: interrupted"
    assert main(["train", "--resume", str(run)]) == 0
    _same_run(run, straight)


def test_log_lines_after_the_last_checkpoint_are_dropped_on_resume(
    image_folder, straight, tmp_path, monkeypatch
):
    """Killed after epoch 2's log lines but before its last.pth, the resumed run logged epoch
    2 twice; the lines of the killed attempt are dropped and the rerun's kept."""
    run = tmp_path / "run"
    save, calls = torch.save, []

    def killed_at_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:  # epoch 2's last.pth
            raise KeyboardInterrupt
        save(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", killed_at_second)
        assert main(["train", *_flags(image_folder, run)]) == 130
    assert [e["epoch"] for e in _lines(run / "metrics.jsonl")] == [1, 2]
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    assert main(["train", "--resume", str(run)]) == 0
    _same_run(run, straight)
