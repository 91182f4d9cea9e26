"""The classification trainer on a generated image folder: a short run, resume, tau per step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import kernelwarehouse as kw
from timm_knowledge.cli import main
from timm_knowledge.train import TrainConfig, train

CLASSES = ("red", "green", "blue")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _config(root: Path, out: Path, **kwargs) -> TrainConfig:
    base = dict(
        model="kw_resnet18",
        # one block per stage keeps the test fast; b = 1/2 would quadruple the attention outputs
        model_kwargs={"budget": 1.0, "layers": [1, 1, 1, 1], "zero_init_last": False},
        data_dir=str(root),
        output=str(out),
        epochs=2,
        batch_size=4,
        image_size=32,
        lr=0.05,
        warmup_epochs=0,
        temp_epochs=1.5,
    )
    return TrainConfig(**{**base, **kwargs})


def test_short_run_with_timm_recipe_pieces(image_folder, tmp_path):
    out = tmp_path / "run"
    cfg = _config(image_folder, out, mixup=0.2, cutmix=0.5, smoothing=0.1, model_ema=True, amp=True)
    metrics = train(cfg)
    epochs = _lines(out / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert 0 <= e["val_top1"] <= e["val_top5"] <= 100 and np.isfinite(e["train_loss"])
        assert 0 <= e["ema_val_top1"] <= 100
    assert metrics == epochs[-1]
    # tau per iteration: linear from 1 to 0 over 1.5 epochs of 3 iterations (12 images / 4)
    rows = _lines(out / "iterations.jsonl")
    per_epoch = 12 // 4
    assert [r["step"] for r in rows] == list(range(2 * per_epoch))
    expected = [max(0.0, 1.0 - i / (1.5 * per_epoch)) for i in range(2 * per_epoch)]
    np.testing.assert_allclose([r["tau"] for r in rows], expected, atol=1e-6)
    # Hub format: timm rebuilds the KW model (budget included) and loads the weights
    assert {p.name for p in (out / "model").iterdir()} >= {"config.json", "model.safetensors"}
    assert (out / "model_ema" / "model.safetensors").is_file()
    saved = torch.load(out / "last.pth", weights_only=True)["model"]
    rebuilt = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True).eval()
    assert rebuilt.kw_plan.warehouses[0].budget == 1.0 and len(rebuilt.layer1) == 1
    for key, value in rebuilt.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    assert kw.get_temperature(rebuilt) == pytest.approx(0.0)


def test_resume_continues_the_run(image_folder, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(_config(image_folder, straight, no_aug=True))
    # a run that dies after writing epoch 0's checkpoint ...
    crashed = tmp_path / "crashed"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("timm_knowledge.train._save_hub_dir", crash)
        with pytest.raises(KeyboardInterrupt):
            train(_config(image_folder, crashed, no_aug=True))
    # ... resumed from the command line finishes like the uninterrupted run
    kwargs = json.dumps(_config(image_folder, crashed).model_kwargs)
    main(
        ["train", "--model", "kw_resnet18", "--model-kwargs", kwargs, "--data-dir",
         str(image_folder), "--output", str(crashed), "--epochs", "2", "--batch-size", "4",
         "--image-size", "32", "--lr", "0.05", "--temp-epochs", "1.5", "--no-aug",
         "--resume", str(crashed / "last.pth")]
    )  # fmt: skip
    assert [e["epoch"] for e in _lines(crashed / "metrics.jsonl")] == [1, 2]
    rows, reference = _lines(crashed / "iterations.jsonl"), _lines(straight / "iterations.jsonl")
    assert [r["step"] for r in rows] == list(range(6))
    for key in ("tau", "lr", "loss"):
        np.testing.assert_allclose([r[key] for r in rows], [r[key] for r in reference], rtol=1e-4)
    final = torch.load(crashed / "last.pth", weights_only=True)["model"]
    for key, value in torch.load(straight / "last.pth", weights_only=True)["model"].items():
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_bad_options_are_named(image_folder, tmp_path):
    with pytest.raises(ValueError, match="data_dir='/nonexistent' is invalid"):
        train(_config(Path("/nonexistent"), tmp_path))
    with pytest.raises(ValueError, match="batch_size=3 is invalid with mixup"):
        train(_config(image_folder, tmp_path, batch_size=3, mixup=0.2))
    with pytest.raises(ValueError, match="temp_init=2 is invalid"):
        train(_config(image_folder, tmp_path, temp_init=2))


def test_plain_timm_model_trains_without_a_temperature(image_folder, tmp_path):
    cfg = _config(image_folder, tmp_path, model="resnet10t", model_kwargs={}, epochs=1)
    metrics = train(cfg)
    assert metrics["tau"] is None and 0 <= metrics["val_top1"] <= 100
    assert all(r["tau"] is None for r in _lines(tmp_path / "iterations.jsonl"))


def test_input_size_is_a_deprecated_alias_of_image_size(tmp_path):
    base = dict(model="resnet10t", data_dir=str(tmp_path), output=str(tmp_path / "o"))
    with pytest.warns(
        FutureWarning, match=r"TrainConfig: 'input_size' is deprecated, use 'image_size'"
    ):
        old = TrainConfig(**base, input_size=48)
    assert old == TrainConfig(**base, image_size=48) and old.image_hw == (48, 48)
    with pytest.raises(TypeError, match=r"image_size only"):
        TrainConfig(**base, image_size=48, input_size=48)
    flags = ["train", "--model", "resnet10t", "--data-dir", str(tmp_path), "--output", "o"]
    with pytest.warns(FutureWarning, match="'input_size' is deprecated"):
        by_old_flag = _cli_config([*flags, "--input-size", "40"])
    assert by_old_flag == _cli_config([*flags, "--image-size", "40"])
    assert _cli_config([*flags, "--image-size", "40,56"]).image_hw == (40, 56)


def _cli_config(argv: list[str]) -> TrainConfig:
    from timm_knowledge.cli import _parser

    args = vars(_parser().parse_args(argv))
    args.pop("command")
    return TrainConfig(**args)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("lr", float("nan"), r"lr=nan is invalid: expected a finite number > 0"),
        ("lr", float("inf"), r"lr=inf is invalid"),
        ("lr", 0, r"lr=0 is invalid"),
        ("momentum", -0.1, r"momentum=-0.1 is invalid: expected a finite number >= 0 and <= 1"),
        ("weight_decay", float("nan"), r"weight_decay=nan is invalid"),
        ("smoothing", 1.5, r"smoothing=1.5 is invalid"),
        ("model_ema_decay", 1.5, r"model_ema_decay=1.5 is invalid"),
        ("min_lr", -1, r"min_lr=-1 is invalid"),
        ("mixup", "0.2", r"mixup='0.2' is invalid"),
        ("temp_epochs", float("nan"), r"temp_epochs=nan is invalid"),
        ("epochs", True, r"epochs=True is invalid: expected a positive integer"),
        ("epochs", 0, r"epochs=0 is invalid"),
        ("batch_size", None, r"batch_size=None is invalid"),
        ("workers", -2, r"workers=-2 is invalid: expected an integer >= 0, or -1"),
        ("threads", -1, r"threads=-1 is invalid: expected an integer >= 0"),
        ("image_size", 0, r"image_size=0 is invalid: expected a positive integer or \(H, W\)"),
        ("image_size", (32, 0), r"image_size=\(32, 0\) is invalid"),
        ("model", "", r"model='' is invalid: expected a non-empty string"),
        ("model", "no_such_model", r"model='no_such_model' is not registered"),
        ("output", None, r"output=None is invalid"),
        ("device", "gpu:x", r"device='gpu:x' is invalid"),
        ("model_kwargs", [1], r"model_kwargs=\[1\] must be a dict"),
        ("amp_dtype", "int8", r"amp_dtype='int8' is invalid"),
    ],
)
def test_bad_trainer_values_are_named_before_anything_runs(
    image_folder, tmp_path, option, value, message
):
    with pytest.raises((ValueError, TypeError), match=message):
        train(_config(image_folder, tmp_path / "run", **{option: value}))
    assert not (tmp_path / "run").exists()


def test_command_line_bad_values_are_one_line_and_exit_2(image_folder, capsys):
    base = ["train", "--model", "resnet10t", "--data-dir", str(image_folder), "--output", "o"]
    assert main([*base, "--lr", "nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["timm-knowledge train: lr=nan is invalid: expected a finite number > 0"]
    assert main([*base, "--no-such-flag"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--no-such-flag" in line


# --- issue 25: bad input that trained silently or ended in a raw error -----------------------


def _folder(root: Path, classes: tuple[str, ...], splits=("train", "val")) -> Path:
    rng = np.random.default_rng(1)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_one_class_is_refused(tmp_path):
    root = _folder(tmp_path / "data", ("only",))
    with pytest.raises(ValueError, match=r"data_dir=.* train split has 1 class \(\['only'\]\).* 2"):
        train(_config(root, tmp_path / "run", model="resnet10t", model_kwargs={}))


def test_data_dir_without_a_train_folder_is_named(tmp_path, capsys):
    root = _folder(tmp_path / "data", ("a", "b"), splits=("images",))
    with pytest.raises(ValueError, match=r"data_dir=.* has no 'train' folder.*\['images'\]"):
        train(_config(root, tmp_path / "run", model="resnet10t", model_kwargs={}))
    argv = ["train", "--model", "resnet10t", "--data-dir", str(root), "--output", "o"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "has no 'train' folder" in line


def test_truncated_image_is_named_or_skipped(tmp_path):
    root = _folder(tmp_path / "data", ("a", "b"))
    bad = root / "train" / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = _config(root, tmp_path / "run", model="resnet10t", model_kwargs={}, epochs=1)
    with pytest.raises(ValueError, match=rf"image '{bad}' cannot be read.*skip_bad_images"):
        train(cfg)
    with pytest.warns(UserWarning, match=rf"skipped unreadable image '{bad}'"):
        train(_config(root, tmp_path / "run2", model="resnet10t", model_kwargs={}, epochs=1,
                      skip_bad_images=True))  # fmt: skip


def test_resume_from_a_truncated_checkpoint_is_named(image_folder, tmp_path, capsys):
    cfg = _config(image_folder, tmp_path / "run", model="resnet10t", model_kwargs={}, epochs=1)
    train(cfg)
    last = tmp_path / "run" / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"resume=.*last\.pth.* cannot be read"):
        train(_config(image_folder, tmp_path / "run", model="resnet10t", model_kwargs={},
                      epochs=2, resume=str(last)))  # fmt: skip


def test_command_line_takes_no_abbreviated_flags(image_folder, tmp_path, capsys):
    # `--epoch 1` was read as --epochs 1; a new flag could change what an old command means
    out = str(tmp_path / "run")
    base = ["train", "--model", "resnet10t", "--data-dir", str(image_folder), "--output", out]
    assert main([*base, "--epoch", "1"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--epoch" in line and "unrecognized" in line
