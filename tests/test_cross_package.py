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


def test_kernelwarehouse_detector_with_rd_and_implicit_learns_and_deploys():
    """All three methods in one detector: a KW backbone (tau annealed 1 -> 0 as the paper
    does), a Retriever-Dictionary at stride 8 and YOLOR implicit knowledge. It fits a fixed
    batch; the fast KW executor matches the authors' per-sample formula (the reference
    executor) on the whole detector; folding implicit knowledge and BN keeps the outputs."""
    kernelwarehouse = pytest.importorskip("kernelwarehouse")
    yolo_heads = pytest.importorskip("yolo_heads")
    from rd_core import RDInsertion

    torch.manual_seed(0)
    model = yolo_heads.YOLODetector(
        "kw_resnet18",
        num_classes=3,
        budget=0.5,
        neck_channels=16,
        rd={"num_atoms": 8},
        implicit=True,
        head_kwargs={"image_size_hint": 64},
    )
    assert sum(isinstance(m, RDInsertion) for m in model.modules()) == 1
    assert implicit_layers(model)
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[20.0, 24.0, 60.0, 56.0]]), "labels": torch.tensor([2])},
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    steps, losses = 30, []
    for step in range(steps):
        kernelwarehouse.set_temperature(model, max(0.0, 1 - step / 10))  # 1 -> 0 over 10 steps
        total, _ = model.loss(model(images), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses

    model.eval()
    with torch.no_grad():
        fast = model(images)
        kernelwarehouse.set_executor(model, "reference")
        reference = model(images)
        kernelwarehouse.set_executor(model, "fast")
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    fused = yolo_heads.fuse_for_inference(model, images)
    # iPR (around the head's output convolutions) folds exactly; iFA on the neck outputs feeds
    # zero-padded 3x3 convolutions, where a constant does not fold, so it stays an addition
    assert implicit_layers(model.head) and not implicit_layers(fused.head)
    with torch.no_grad():
        for a, b in zip(fast, fused(images), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


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
