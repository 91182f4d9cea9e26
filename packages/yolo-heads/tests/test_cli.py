"""The ``yolo-heads`` command line: train from a config with overrides, resume, val, predict,
export; user errors are one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import yaml

from yolo_heads.checkpoint import read_config
from yolo_heads.cli import main
from yolo_heads.config import ConfigError, load_config

TINY = [
    "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
    "model.neck_channels=16",
    "schedule.batch_size=4",
    "schedule.amp=false",
]


def test_console_script_is_declared():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["yolo-heads"] == "yolo_heads.cli:main"


def test_train_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for line in (
        "schedule.epochs=30",
        "model.rd.num_atoms=512",
        "augment.flip=0.0",
        "model.implicit.enabled=false",
        "data.image_size=64",
        'out="runs/train"',
    ):
        assert line in text
    assert "built-in configs: coco, digits" in text


def test_train_resume_val_predict(digits, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "digits",
        "--no-progress",
        f"data.train={digits[0]}",
        f"data.val={digits[1]}",
        f"out={run}",
        "schedule.epochs=1",
        "model.rd.enabled=true",
        "model.rd.num_atoms=16",
        "model.implicit.enabled=true",
        *TINY,
    ]
    assert main(args) == 0
    # The resolved config is in the run folder and repeats the run exactly.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["schedule"]["epochs"] == 1 and saved["model"]["rd"]["num_atoms"] == 16
    config = read_config(run / "weights" / "best")
    assert config["model_args"]["rd"]["num_atoms"] == 16 and config["model_args"]["implicit"]
    # Resume to 2 epochs with an override on top of the saved config.
    assert main(["train", "--resume", str(run), "--no-progress", "schedule.epochs=2"]) == 0
    assert len((run / "results.csv").read_text().splitlines()) == 3  # header + 2 epochs
    capsys.readouterr()
    assert main(["val", "--weights", str(run / "weights" / "last"), "--data", str(digits[1])]) == 0
    metrics = dict(kv.split("=") for kv in capsys.readouterr().out.split())
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    history = (run / "results.csv").read_text().splitlines()
    header, last = history[0].split(","), history[-1].split(",")
    # val on the fused model scores what the trainer scored on the unfused EMA weights
    assert float(metrics["AP50"]) == pytest.approx(float(last[header.index("AP50")]), abs=2e-3)
    images = Path(digits[1]).parent / "val"
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(run / "weights" / "last"),
                "--source",
                str(images),
                "--out",
                str(out),
                "--conf",
                "0.01",
            ]
        )
        == 0
    )
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == len(list(images.glob("*.png")))
    assert all(set(r) == {"file", "boxes_xyxy", "scores", "labels"} for r in records)
    # export: the ONNX graph (NMS inside) runs in onnxruntime at any batch; torch.export loads.
    import numpy as np
    import onnxruntime
    import torch

    onnx_path = tmp_path / "det.onnx"
    weights = str(run / "weights" / "last")
    assert main(["export", "--weights", weights, "--out", str(onnx_path), "--conf", "0.01"]) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        (detections,) = session.run(None, {"images": np.random.rand(batch, 3, 64, 64).astype("f")})
        assert detections.shape[1] == 7 and set(detections[:, 0]) <= set(range(batch))
    pt2 = tmp_path / "det.pt2"
    assert (
        main(["export", "--weights", weights, "--format", "torch-export", "--out", str(pt2)]) == 0
    )
    program = torch.export.load(str(pt2))
    assert [o.shape[0] for o in program.module()(torch.rand(3, 3, 64, 64))] == [3, 3, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "data.train=x.json", "schedule.epochz=3"], "epochz"),
        (["train", "data.train=x.json", "schedule.lr=nan"], "schedule.lr=nan"),
        (["train", "data.train=x.json", "data.image_size=50"], "multiple of 32"),
        (["train", "schedule.epochs=3"], "data.train"),
        (["train", "data.train=missing.json"], "missing.json"),
        (["train", "--config", "nope.yaml"], "nope.yaml"),
        (["train", "data.train"], "key=value"),
        (["val", "--weights", "no/such/run", "--data", "x.json"], "not a checkpoint folder"),
        (["train", "--resume", "no/such/run"], "not a run folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_unknown_flag_is_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["val", "--weights", "w", "--data", "d.json", "--weigths", "x"])
    assert exit_.value.code == 2
    assert "--weigths" in capsys.readouterr().err


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("schedule: {epochs: 7, lr: 0.01}\ndata: {train: a.json}\n")
    cfg = load_config(path, ["schedule.epochs=9"])
    assert (cfg.schedule.epochs, cfg.schedule.lr, cfg.data.train) == (9, 0.01, "a.json")
    with pytest.raises(ConfigError, match=r"schedule\.epochs"):
        load_config(path, ["schedule.epochs=zero"])


def test_builtin_config_is_not_shadowed_by_a_folder_of_that_name(tmp_path, monkeypatch):
    # the demo writes its data set to ./digits: `--config digits` still means the built-in one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    cfg = load_config("digits", ["data.train=x.json"])
    builtin = yaml.safe_load(
        (Path(__file__).parents[1] / "src/yolo_heads/configs/digits.yaml").read_text()
    )
    assert cfg.schedule.epochs == builtin["schedule"]["epochs"]
    # a path that is not a file is named as such, without contradicting itself
    with pytest.raises(ConfigError, match=r"config='sub' is a folder, not a YAML file") as err:
        (tmp_path / "sub").mkdir()
        load_config("sub")
    assert "nor is it" not in str(err.value) and "['coco', 'digits']" in str(err.value)


@pytest.mark.parametrize("command", ["train", "val", "predict"])
def test_unknown_flag_names_the_command_and_its_options(command, capsys):
    args = {
        "train": ["data.train=x.json"],
        "val": ["--weights", "w", "--data", "d.json"],
        "predict": ["--weights", "w", "--source", "s"],
    }[command]
    with pytest.raises(SystemExit) as exit_:
        main([command, "--bogus-flag", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"yolo-heads {command}: error: unrecognized arguments: --bogus-flag" in err
    valid = err.split("valid options:")[1]
    expected = ["--config", "--resume", "--no-progress"] if command == "train" else ["--weights"]
    assert all(flag in valid for flag in expected)
    # a near miss is suggested
    with pytest.raises(SystemExit):
        main(["train", "--no-progess"])
    assert "did you mean --no-progress" in capsys.readouterr().err


def test_method_backbones_build_without_importing_their_package_first(tmp_path):
    # the README's `model.backbone=kw_resnet18 'model.backbone_kwargs={budget: 0.5}'` from a fresh
    # interpreter: nothing had imported kernelwarehouse, so timm did not know the name
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from yolo_heads.config import load_config\n"
        "from yolo_heads.run import build_detector\n"
        "assert 'kernelwarehouse' not in sys.modules\n"
        "cfg = load_config(overrides=['data.train=x.json', 'model.backbone=kw_resnet18',\n"
        "    'model.backbone_kwargs={budget: 0.5, channels: [8, 16, 32, 64]}'])\n"
        "model = build_detector(cfg, num_classes=3)\n"
        "import kernelwarehouse as kw\n"
        "print(sum(isinstance(m, kw.KWConv2d) for m in model.modules()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0


def test_export_without_onnx_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    # checked before the weights are read (this folder does not even exist)
    assert main(["export", "--weights", str(tmp_path / "w"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnx" in err and "yolo-heads[export]" in err
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert {"onnx", "onnxscript"} <= {
        d.split(">")[0] for d in extras["project"]["optional-dependencies"]["export"]
    }


def test_export_says_which_thresholds_are_baked_in(tmp_path, capsys, tiny):
    from yolo_heads import YOLODetector, save_checkpoint

    weights = save_checkpoint(YOLODetector(num_classes=2, **tiny), tmp_path / "w", image_size=64)
    out = tmp_path / "d.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out), "--conf", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "conf=0.1" in text and "iou=0.65" in text and "max_det=300" in text and "--conf" in text


def test_predict_draws_what_it_lists_on_the_original_image(tmp_path, tiny, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    import yolo_heads.plots
    from yolo_heads import YOLODetector, save_checkpoint

    weights = save_checkpoint(YOLODetector(num_classes=2, **tiny), tmp_path / "w", image_size=64)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    drawn = []
    real = yolo_heads.plots.draw_detections

    def spy(images, targets, predictions, names, path, conf=0.25, **kwargs):
        drawn.append((images, predictions, conf))
        return real(images, targets, predictions, names, path, conf=conf, **kwargs)

    monkeypatch.setattr(yolo_heads.plots, "draw_detections", spy)
    out = tmp_path / "pred"
    argv = ["predict", "--weights", str(weights), "--source", str(tmp_path / "a.png")]
    assert main([*argv, "--conf", "0.001", "--out", str(out)]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    ((images, (pred,), conf),) = drawn
    assert tuple(images.shape) == (1, 3, 40, 90)  # the image as given, not the 64 px canvas
    assert conf == 0.001 and len(pred["scores"]) == len(record["scores"]) > 0
    torch.testing.assert_close(
        pred["boxes"], torch.tensor(record["boxes_xyxy"]), atol=0.01, rtol=0, check_dtype=False
    )


def test_val_against_data_with_another_class_count_is_refused(tmp_path, tiny, digits, capsys):
    from yolo_heads import YOLODetector, save_checkpoint

    weights = save_checkpoint(YOLODetector(num_classes=3, **tiny), tmp_path / "w", image_size=64)
    assert main(["val", "--weights", str(weights), "--data", str(digits[1])]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "3 classes" in err and "10 classes" in err and str(digits[1]) in err
