"""Compressed Retriever-Dictionaries (YOLO-RD section 3.3) in Hub folders (issue 25): the atom
count travels with ``config.json``, so the folder rebuilds the compressed model exactly."""

from __future__ import annotations

import pytest
import torch

from hub_knowledge import load

rd_core = pytest.importorskip("rd_core")


def _outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model.eval()(images)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def test_compressed_detector_checkpoint_loads_through_hub_knowledge(tmp_path):
    yolo_heads = pytest.importorskip("yolo_heads")
    model = yolo_heads.YOLODetector(
        "resnet18",
        num_classes=3,
        neck_channels=16,
        channels=(8, 16, 32, 64),
        stem_width=8,
        rd={"num_atoms": 16},
    ).eval()
    data = [torch.rand(2, 3, 64, 64) for _ in range(2)]
    rd_core.compress(model, model.backbone.body.layer2.rd, 8, data, progress=False)
    folder = yolo_heads.save_checkpoint(model, tmp_path / "det")
    clone = load(folder)
    assert clone.backbone.body.layer2.rd.num_atoms == 8
    images = torch.rand(1, 3, 64, 64)
    expected = _outputs(model, images)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(clone, images), expected))
