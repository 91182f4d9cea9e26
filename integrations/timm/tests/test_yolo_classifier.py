"""The authors' YOLOv9 classifier (yolo-heads' ``yolov9_c_cls``) and its RD variant trained by
``timm-knowledge train``: the one classification path of the project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import timm_knowledge  # noqa: F401  (registers yolo-heads' models when it is installed)
from timm_knowledge.cli import main

pytest.importorskip("yolo_heads")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "name, kwargs",
    [("yolov9_c_cls", {}), ("yolo_rd_9c_cls", {"B3": {"num_atoms": 8}})],
    ids=["yolov9_c_cls", "yolo_rd_9c_cls"],
)
def test_timm_knowledge_trains_the_yolov9_classifier(image_folder, tmp_path, name, kwargs):
    out = tmp_path / "run"
    main(
        ["train", "--model", name, "--model-kwargs", json.dumps(kwargs), "--data-dir",
         str(image_folder), "--output", str(out), "--epochs", "1", "--batch-size", "4",
         "--image-size", "32", "--opt", "adamw", "--lr", "0.001", "--no-aug", "--threads", "1",
         "--workers", "0"]
    )  # fmt: skip
    (epoch,) = _lines(out / "metrics.jsonl")
    assert np.isfinite(epoch["train_loss"]) and 0 <= epoch["val_top1"] <= epoch["val_top5"] <= 100
    # the saved folder rebuilds the classifier (3 classes, RD atoms included) with its weights
    model = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True).eval()
    assert type(model).__name__ == "GraphClassifier" and model.num_classes == 3
    saved = torch.load(out / "last.pth", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert (model.rd_at == "layers.4") == (name == "yolo_rd_9c_cls")
