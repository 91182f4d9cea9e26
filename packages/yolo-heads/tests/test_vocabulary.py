"""Issue 16's vocabulary: ``progress=`` (``show_progress=`` a deprecated alias) and registries
that refuse a name already taken."""

from __future__ import annotations

import json

import pytest
import torch

from yolo_heads import HEADS, NECKS, YOLODetector, register_head, register_neck
from yolo_heads.data import CocoDetection, make_digits_detection
from yolo_heads.evaluate import evaluate_detector, predict_dataset
from yolo_heads.train import train

MESSAGE = "{}: 'show_progress' is deprecated, use 'progress'"


def test_digits_alias_warns_and_writes_the_same_set(tmp_path):
    new = make_digits_detection(tmp_path / "new", num_images=3, image_size=64, progress=False)
    with pytest.warns(FutureWarning, match=MESSAGE.format("make_digits_detection")):
        old = make_digits_detection(
            tmp_path / "old", num_images=3, image_size=64, show_progress=False
        )
    a, b = json.loads(new.read_text()), json.loads(old.read_text())
    assert a["annotations"] == b["annotations"] and a["images"] == b["images"]
    for image in a["images"]:
        name = image["file_name"]
        assert (new.parent / "train" / name).read_bytes() == (
            old.parent / "train" / name
        ).read_bytes()


def test_passing_both_names_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"both 'show_progress' .* and 'progress'"):
        make_digits_detection(tmp_path, num_images=1, progress=False, show_progress=False)


def test_train_and_evaluate_aliases(tmp_path, tiny, digits):
    train_ann, val_ann = digits
    data = CocoDetection(train_ann, image_size=64)
    val = CocoDetection(val_ann, image_size=64)
    runs = []
    for kwargs in ({"progress": False}, {"show_progress": False}):
        torch.manual_seed(0)
        model = YOLODetector(num_classes=10, **tiny)
        if "show_progress" in kwargs:
            with pytest.warns(FutureWarning, match=MESSAGE.format("train")):
                result = train(model, data, epochs=1, batch_size=4, plots=False, **kwargs)
        else:
            result = train(model, data, epochs=1, batch_size=4, plots=False, **kwargs)
        runs.append(result)
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.equal(p, q)
    model = runs[0].model
    with pytest.warns(FutureWarning, match=MESSAGE.format("evaluate_detector")):
        old = evaluate_detector(model, val, show_progress=False)
    assert old == evaluate_detector(model, val, progress=False)
    with pytest.warns(FutureWarning, match=MESSAGE.format("predict_dataset")):
        old = predict_dataset(model, val, show_progress=False)
    assert old == predict_dataset(model, val, progress=False)


def test_run_training_alias(tmp_path, digits):
    from yolo_heads.config import load_config
    from yolo_heads.run import run_training

    train_ann, _ = digits
    common = [
        f"data.train={train_ann}",
        "schedule.epochs=1",
        "schedule.batch_size=4",
        "schedule.amp=false",
        "model.neck_channels=16",
        "model.backbone_kwargs={channels: [8, 16, 32, 64]}",
    ]
    new = run_training(load_config(overrides=[*common, f"out={tmp_path}/a"]), progress=False)
    with pytest.warns(FutureWarning, match=MESSAGE.format("run_training")):
        old = run_training(
            load_config(overrides=[*common, f"out={tmp_path}/b"]), show_progress=False, plots=False
        )
    assert new.history[0]["loss"] == old.history[0]["loss"]


@pytest.mark.parametrize(
    ("register", "registry", "taken"),
    [(register_head, HEADS, "anchor_free"), (register_neck, NECKS, "pan")],
)
def test_registering_a_taken_name_raises(register, registry, taken):
    holder = registry[taken]
    with pytest.raises(ValueError) as err:

        @register(taken)
        class Other(torch.nn.Module):
            pass

    message = str(err.value)
    assert repr(taken) in message and holder.__qualname__ in message
    assert ("HEADS" if registry is HEADS else "NECKS") in message
    assert registry[taken] is holder  # not overwritten
