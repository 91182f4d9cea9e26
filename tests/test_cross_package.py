"""Members used together, as the demo and users combine them."""

from __future__ import annotations

import pytest
import torch

from implicit_knowledge import fuse, implicit_layers


def test_implicit_refinement_on_timm_head_fuses_away():
    timm = pytest.importorskip("timm")
    from implicit_knowledge import ImplicitPredictionRefinement

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5)
    model.classifier = ImplicitPredictionRefinement(model.classifier)
    model.eval()
    fused = fuse(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - fused(x)).abs().max() <= 1e-5
    assert not implicit_layers(fused)


def test_detector_on_kernelwarehouse_backbone_trains():
    pytest.importorskip("kernelwarehouse")
    yolo_heads = pytest.importorskip("yolo_heads")

    torch.manual_seed(0)
    model = yolo_heads.YOLODetector("kw_resnet18", num_classes=3, budget=0.5, neck_channels=32)
    warehouses = [p for n, p in model.backbone.named_parameters() if "warehouse" in n]
    assert warehouses, "the backbone should hold KernelWarehouse warehouses"
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    total, _ = model.loss(model(images), targets)
    total.backward()
    assert torch.isfinite(total)
    # timm zero-initialises each block's last BatchNorm, so warehouses used only inside residual
    # branches get no gradient on the first step; the ones feeding the main path must.
    assert sum(p.grad.abs().sum().item() for p in warehouses if p.grad is not None) > 0
    predictions = model.eval().predict(images)
    assert len(predictions) == 2 and predictions[0]["boxes"].shape[-1] == 4


def test_detector_checkpoint_folder_loads_through_hub_and_timm(tmp_path):
    """yolo-heads' checkpoint folder is the Hub layout: hub_knowledge.load and timm's local-dir
    source rebuild the detector (RD and implicit knowledge included) with the same outputs."""
    hub_knowledge = pytest.importorskip("hub_knowledge")
    yolo_heads = pytest.importorskip("yolo_heads")
    timm = pytest.importorskip("timm")

    torch.manual_seed(0)
    model = yolo_heads.YOLODetector(
        "resnet18",
        num_classes=3,
        channels=(8, 16, 32, 64),
        stem_width=8,
        neck_channels=16,
        rd={"num_atoms": 8},
        implicit=True,
    ).eval()
    folder = yolo_heads.save_checkpoint(model, tmp_path / "best", label_names=["a", "b", "c"])
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        for clone in (
            hub_knowledge.load(folder),
            timm.create_model(f"local-dir:{folder}", pretrained=True),
        ):
            for a, b in zip(expected, clone.eval()(images)):
                assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"another architecture"):
        other = yolo_heads.YOLODetector(
            "resnet18", num_classes=5, channels=(8, 16, 32, 64), stem_width=8, neck_channels=16
        )
        yolo_heads.load_checkpoint(folder, other)
