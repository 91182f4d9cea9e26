"""The ``yolo-heads`` console script before any work: help and argument errors answer without
importing torch and timm, files are checked before a model loads, and the messages of a first
run point at what to do (``yolo-heads digits DIR``, ``data=data.yaml``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yolo_heads.cli import main
from yolo_heads.config import ConfigError, load_config

# Runs the CLI as the console script does (argv[0] is the script, then `from yolo_heads.cli
# import main`), then prints the heavy modules that got imported.
PROBE = """
import sys
sys.argv[0] = {script!r}
from yolo_heads.cli import main
try:
    code = main({argv!r})
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)
print("RESULT", code, ",".join(heavy) or "-")
"""


def _probe(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    script = str(Path(sys.executable).parent / "yolo-heads")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(script=script, argv=argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, done.stderr
    _, code, heavy = line[-1].split()
    return int(code), heavy, done.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--help"], 0, ""),
        (["train", "--help"], 0, ""),
        (["predict", "--help"], 0, ""),
        (["train", "--bogus-flag"], 2, "--bogus-flag"),
        (["predict", "--weights", "w"], 2, "--source"),
        (["train", "schedule.epochz=3", "data.train=x.json"], 2, "epochz"),
        (["train", "--config", "digits"], 2, "yolo-heads digits data/digits"),
        (["predict", "--weights", "no/such/run", "--source", "x.png"], 2, "checkpoint folder"),
        (["val", "--weights", "no/such/run", "--data", "x.json"], 2, "checkpoint folder"),
        (["export", "--weights", "no/such/run", "--format", "torch-export"], 2, "no/such/run"),
    ],
)
def test_help_and_argument_errors_do_not_import_torch(argv, code, message, tmp_path):
    result, heavy, stderr = _probe(argv, tmp_path)
    assert result == code, stderr
    assert heavy == "-", f"{argv} imported {heavy} before answering"
    assert message in stderr


def test_console_script_answers_help_without_torch(tmp_path):
    """The installed script itself (``-X importtime`` lists every module it imported)."""
    script = Path(sys.executable).parent / "yolo-heads"
    if not script.is_file():
        pytest.skip("no yolo-heads script beside this Python")
    done = subprocess.run(
        [str(script), "train", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPROFILEIMPORTTIME": "1", "PATH": str(script.parent)},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0 and "schedule.epochs=30" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "omegaconf" in imported  # the import log is there...
    assert not imported & {"torch", "timm"}  # ...and holds neither torch nor timm


def test_import_yolo_heads_still_loads_everything_and_registers_in_timm():
    """Outside the console script ``import yolo_heads`` loads every public name at once and
    registers the detectors in timm's factory, as model cards say."""
    import timm

    import yolo_heads

    assert set(yolo_heads._EXPORTS) <= set(vars(yolo_heads))  # loaded, not on first use
    assert set(yolo_heads._EXPORTS) | {"__version__"} == set(yolo_heads.__all__)
    assert {"yolo_detector", "yolov9_t"} <= set(timm.list_models("yolo*"))


def test_predict_checks_the_source_before_loading_the_model(tmp_path, capsys, monkeypatch):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text("{}")  # not loadable: the source is checked first

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --source was checked")

    monkeypatch.setattr("yolo_heads.checkpoint.load_checkpoint", no_load)
    monkeypatch.setattr("yolo_heads.checkpoint.read_config", no_load)
    argv = ["predict", "--weights", str(weights), "--source", str(tmp_path / "none.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--source" in err and "does not exist" in err


def test_train_digits_in_a_fresh_folder_names_the_digits_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "data.train='data/digits/train.json' does not exist" in err
    assert "`yolo-heads digits data/digits`" in err
    assert not (tmp_path / "runs").exists()  # nothing written before the data is there


def _data_yaml(tmp_path: Path, **entries) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(tmp_path), "names": ["a", "b"], **entries}))
    return path


def test_data_shortcut_sets_both_splits_from_one_yaml(tmp_path):
    path = _data_yaml(tmp_path, train="images/train", val="images/val")
    cfg = load_config(overrides=[f"data={path}"])
    assert cfg.data.train == cfg.data.val == str(path)
    # later overrides still win
    cfg = load_config(overrides=[f"data={path}", "data.val=other.json"])
    assert (cfg.data.train, cfg.data.val) == (str(path), "other.json")
    # a YAML without a val split validates nothing
    (tmp_path / "other").mkdir()
    no_val = _data_yaml(tmp_path / "other", train=".")
    assert load_config(overrides=[f"data={no_val}"]).data.val is None
    with pytest.raises(ConfigError, match=r"data='train.json' is not valid.*data.train= and"):
        load_config(overrides=["data=train.json"])


def test_data_shortcut_trains_a_yolo_txt_set(digits, tmp_path, capsys):
    from yolo_heads.data import write_yolo_txt

    data = write_yolo_txt({"train": digits[0], "val": digits[1]}, tmp_path / "yolo")
    run = tmp_path / "run"
    argv = ["train", "--config", "digits", "--no-progress", "--no-plots", f"data={data}"]
    argv += [f"out={run}", "schedule.epochs=1", "model.neck_channels=16", "data.cache=false"]
    argv += ["model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}"]
    assert main(argv) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["train"] == saved["data"]["val"] == str(data)
    assert "AP" in (run / "results.csv").read_text().splitlines()[0]
    assert json.loads((run / "weights" / "best" / "config.json").read_text())
