"""What a training run shows while it runs: one console line per epoch (with and without
progress bars) and ``results.csv`` with one column order."""

from __future__ import annotations

import re

from yolo_heads.cli import main
from yolo_heads.evaluate import METRICS
from yolo_heads.results import Results

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
