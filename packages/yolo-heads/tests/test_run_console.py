"""What a training run shows while it runs: one console line per epoch (with and without
progress bars), ``results.csv`` with one column order, and a ``val_predictions.png`` that shows
a young model's best guesses instead of nothing."""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from yolo_heads.cli import main
from yolo_heads.evaluate import METRICS
from yolo_heads.plots import class_colour
from yolo_heads.results import Evaluation, Results

TINY = [
    "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
    "model.neck_channels=16",
    "schedule.batch_size=4",
    "data.cache=false",
]
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  loss [\d.]+  box [\d.]+ .*  ([\d.]+) s$")


def _train(digits, run, *flags: str, overrides: tuple[str, ...] = ()) -> None:
    argv = ["train", "--config", "digits", "--no-plots", *flags]
    argv += [f"data.train={digits[0]}", f"data.val={digits[1]}", f"out={run}", *TINY]
    assert main([*argv, *overrides]) == 0


def _epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if EPOCH_LINE.match(line)]


def test_one_line_per_epoch_and_one_column_order(digits, tmp_path, capsys):
    # Without bars (the 7-minute run that printed nothing): a line per epoch as it ends.
    epochs = ("schedule.epochs=2", "schedule.val_interval=2")
    _train(digits, tmp_path / "a", "--no-progress", overrides=epochs)
    out = capsys.readouterr().out
    lines = _epoch_lines(out)
    assert [EPOCH_LINE.match(x).group(1, 2) for x in lines] == [("1", "2"), ("2", "2")]
    assert " AP " not in lines[0] and re.search(r"  AP [\d.]+  AP50 [\d.]+  ", lines[1])
    # With bars: the same lines on stdout (the bars, on stderr, are left out when done).
    _train(digits, tmp_path / "b", overrides=("schedule.epochs=1",))
    captured = capsys.readouterr()
    (line,) = _epoch_lines(captured.out)
    assert line.startswith("epoch 1/1  loss ") and " AP50 " in line
    # results.csv: epoch 1 not validated in run a, validated in run b: the same header
    headers = [(tmp_path / r / "results.csv").read_text().splitlines()[0] for r in "ab"]
    assert headers[0] == headers[1]
    columns = headers[0].split(",")
    assert columns[0] == "epoch" and columns[-2:] == ["lr", "seconds"]
    assert columns[-2 - len(METRICS) : -2] == list(METRICS)
    first = (tmp_path / "a" / "results.csv").read_text().splitlines()[1].split(",")
    assert first[columns.index("AP")] == ""  # not validated: empty, in its place


def test_results_csv_columns_do_not_depend_on_the_first_epoch(tmp_path):
    losses = {"loss": 3.0, "box": 1.0, "cls": 1.0, "dfl": 1.0}
    metrics = dict.fromkeys(METRICS, 0.5)
    unvalidated = {"epoch": 1, **losses, "lr": 0.1, "seconds": 1.0}
    validated = {"epoch": 2, **losses, **metrics, "lr": 0.1, "seconds": 1.0}
    for name, history in (("a", [unvalidated, validated]), ("b", [validated, unvalidated])):
        Results(tmp_path / name).write(history, None, plots=False)
    header = ["epoch", "loss", "box", "cls", "dfl", *METRICS, "lr", "seconds"]
    for name in "ab":
        assert (tmp_path / name / "results.csv").read_text().splitlines()[0].split(",") == header


def test_val_predictions_show_a_young_models_best_boxes(tmp_path, monkeypatch):
    """Every score under 0.25 (a young model): the picture used to show no prediction."""
    images = [torch.zeros(3, 32, 32) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 4, 12, 12], [16, 16, 28, 28]]),
            "labels": torch.tensor([1, 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    predictions = [
        {  # three guesses for two objects: the two best are drawn, not the 0.001 one
            "boxes": torch.tensor([[2.0, 2, 30, 30], [5, 5, 13, 13], [17, 17, 27, 27]]),
            "scores": torch.tensor([0.001, 0.04, 0.03]),
            "labels": torch.tensor([2, 3, 4]),
        },
        {  # an image without objects still shows its best guess
            "boxes": torch.tensor([[8.0, 8, 24, 24], [1, 1, 31, 31]]),
            "scores": torch.tensor([0.002, 0.05]),
            "labels": torch.tensor([5, 6]),
        },
    ]
    examples = {"images": images, "targets": targets, "predictions": predictions}
    evaluation = Evaluation(dict.fromkeys(METRICS, 0.0), evaluator=object(), examples=examples)
    monkeypatch.setattr("yolo_heads.plots.plot_pr_curve", lambda *args: None)  # no evaluator
    results = Results(tmp_path)
    results.class_names = [str(i) for i in range(10)]
    results.write([{"epoch": 1, "loss": 1.0, **evaluation.metrics}], evaluation)
    with Image.open(tmp_path / "val_predictions.png") as im:
        colours = {tuple(int(v) for v in c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}
    drawn = {k for k in range(10) if class_colour(k) in colours}
    assert drawn == {1, 3, 4, 6}  # ground truth 1 (dashed), the 2 + 1 best predictions
