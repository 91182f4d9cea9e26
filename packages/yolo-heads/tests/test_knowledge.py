"""Implicit knowledge (YOLOR) and the Retriever-Dictionary (YOLO-RD) inside the detector."""

from __future__ import annotations

import pytest
import torch

from implicit_knowledge import ImplicitAdd, ImplicitMul, fuse
from rd_core import RDInsertion, RetrieverDictionary
from yolo_heads import YOLODetector
from yolo_heads.checkpoint import load_checkpoint, save_checkpoint
from yolo_heads.data import CocoDetection
from yolo_heads.train import train

SMALL_ANCHORS = [
    [[6, 8], [10, 14], [14, 10]],
    [[16, 16], [20, 28], [28, 20]],
    [[32, 32], [40, 52], [52, 40]],
]


def implicit_values(model) -> torch.Tensor:
    layers = [m for m in model.modules() if isinstance(m, (ImplicitAdd, ImplicitMul))]
    with torch.no_grad():
        return torch.cat([m.implicit().flatten() for m in layers]).clone()


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("head", ["anchor_based", "anchor_free"])
def test_implicit_modules_are_placed(head, tiny):
    kwargs = {"head_kwargs": {"anchors": SMALL_ANCHORS}} if head == "anchor_based" else {}
    model = YOLODetector(num_classes=4, head=head, implicit=True, **kwargs, **tiny)
    # iFA: one ImplicitAdd per neck level; iPR: add + mul around every output convolution.
    convs = 3 if head == "anchor_based" else 6
    assert count(model.alignment, ImplicitAdd) == 3
    assert count(model.head, ImplicitAdd) == convs and count(model.head, ImplicitMul) == convs
    assert count(YOLODetector(num_classes=4, head=head, **kwargs, **tiny), ImplicitAdd) == 0


@pytest.mark.parametrize("head", ["anchor_based", "anchor_free"])
def test_fuse_trained_detector_gives_same_predictions(head, digits, tiny):
    kwargs = {"head_kwargs": {"anchors": SMALL_ANCHORS}} if head == "anchor_based" else {}
    model = YOLODetector(num_classes=10, head=head, implicit=True, **kwargs, **tiny)
    initial = implicit_values(model)
    trained = train(
        model,
        CocoDetection(digits[0], image_size=64),
        epochs=1,
        batch_size=4,
        lr=1e-2,
        ema=False,
        progress=False,
    ).model.eval()
    # Training moved the implicit tensors away from their initialisation: the check has teeth.
    assert (implicit_values(trained) - initial).abs().max() > 1e-3
    images = torch.rand(2, 3, 64, 64)
    before_raw = [o.clone() for o in trained(images)]
    before = trained.predict(images, conf=0.01)
    params_before = sum(p.numel() for p in trained.parameters())
    fused = fuse(trained)
    assert count(fused.head, ImplicitAdd) == 0 and count(fused.head, ImplicitMul) == 0
    assert sum(p.numel() for p in fused.parameters()) < params_before
    for a, b in zip(before_raw, fused(images)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    after = fused.predict(images, conf=0.01)
    for a, b in zip(before, after):
        assert a["labels"].tolist() == b["labels"].tolist()
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)


def test_rd_goes_where_the_paper_puts_it(tiny):
    model = YOLODetector(num_classes=3, rd={"num_atoms": 16}, **tiny)
    # The backbone stage that produces the stride-8 map (resnet: layer2).
    assert model.rd_at == "layer2"
    assert isinstance(model.backbone.body.layer2, RDInsertion)
    assert count(model, RetrieverDictionary) == 1
    assert model.backbone.body.layer2.rd.in_channels == 16  # tiny resnet18: 16 channels
    assert len(model(torch.rand(1, 3, 64, 64))) == 3


@pytest.mark.parametrize(
    ("backbone", "kwargs", "at"),
    [
        ("cspdarknet53", {}, "stages.2"),
        ("convnext_tiny", {}, "stages.1"),
        ("efficientnet_b0", {}, "blocks.2"),
        ("kw_resnet18", {"budget": 0.5}, "layer2"),
    ],
)
def test_rd_on_the_papers_backbones(backbone, kwargs, at):
    """The RD goes after the stage that gives the stride-8 map, named as timm's feature_info
    names it, and the neck's first level is the RD's output."""
    import kernelwarehouse  # noqa: F401  (registers kw_* models with timm)

    model = YOLODetector(backbone, num_classes=3, neck_channels=16, rd={"num_atoms": 16}, **kwargs)
    assert model.rd_at == at
    insertions = [m for m in model.backbone.body.modules() if isinstance(m, RDInsertion)]
    assert len(insertions) == 1
    rd = insertions[0].rd
    assert rd.in_channels == model.backbone.channels[0]
    seen = {}
    rd.register_forward_hook(lambda m, i, o: seen.update(rd_in=i[0], rd_out=o))
    model.neck.register_forward_pre_hook(lambda m, i: seen.update(levels=i[0]))
    model.eval()(torch.rand(1, 3, 64, 64))
    assert seen["rd_in"].shape[-2:] == (8, 8)  # 64 px / stride 8
    assert seen["levels"][0] is seen["rd_out"]


def test_rd_at_named_module_with_dictionary(tiny):
    atoms = torch.randn(12, 32)  # tiny layer3 has 32 channels
    model = YOLODetector(num_classes=3, rd={"at": "layer3", "dictionary": atoms}, **tiny)
    rd = model.backbone.body.layer3.rd
    assert model.rd_at == "layer3" and rd.num_atoms == 12
    total, _ = model.loss(
        model(torch.rand(2, 3, 64, 64)),
        [{"boxes": torch.tensor([[2.0, 2, 30, 30]]), "labels": torch.tensor([1])}] * 2,
    )
    total.backward()
    assert any(p.grad is not None for p in rd.parameters())


def test_rd_dictionary_from_dict_init(tiny, digits):
    from dict_init import build_dictionary
    from dict_init.encoders import VisionEncoder

    plain = YOLODetector(num_classes=10, **tiny)
    images = torch.stack([CocoDetection(digits[0], image_size=64)[i][0] for i in range(4)])
    encoder = VisionEncoder(plain.backbone.body, "layer2", image_size=64)
    dictionary = build_dictionary(encoder, images, num_atoms=8, seed=0, progress=False)
    model = YOLODetector(num_classes=10, rd={"dictionary": dictionary}, **tiny)
    rd = model.backbone.body.layer2.rd
    assert rd.num_atoms == 8
    # The atoms themselves arrived, not only their count: the same [N, C] directions, in
    # order (the module uses its atoms at unit length, as the paper does).
    expected = dictionary.atoms / dictionary.atoms.norm(dim=1, keepdim=True)
    torch.testing.assert_close(rd.atoms, expected.to(rd.atoms.dtype))
    assert not torch.allclose(dictionary.atoms, torch.zeros_like(dictionary.atoms))


def test_rd_bad_arguments(tiny):
    with pytest.raises(ValueError, match="no_such_layer"):
        YOLODetector(num_classes=3, rd={"at": "no_such_layer", "num_atoms": 8}, **tiny)
    with pytest.raises(ValueError, match=r"dim|dimension|channels"):
        YOLODetector(num_classes=3, rd={"dictionary": torch.randn(8, 5)}, **tiny)
    with pytest.raises(TypeError, match="rd="):
        YOLODetector(num_classes=3, rd="layer2", **tiny)


def test_checkpoint_with_rd_and_implicit_rebuilds(tiny, tmp_path):
    model = YOLODetector(num_classes=3, rd={"num_atoms": 8}, implicit=True, **tiny).eval()
    folder = save_checkpoint(model, tmp_path / "m")
    restored = load_checkpoint(folder).eval()
    images = torch.rand(1, 3, 64, 64)
    for a, b in zip(model(images), restored(images)):
        torch.testing.assert_close(a, b)


def test_kernelwarehouse_backbone_is_timms_features_model():
    """A KernelWarehouse backbone registered in timm is just another backbone name: the
    detector's backbone computes exactly what timm's own features_only KW model computes."""
    import timm

    import kernelwarehouse  # noqa: F401  (registers kw_* models with timm)
    from kernelwarehouse import KWConv2d, set_temperature

    # zero_init_last=False: timm zero-initialises each block's last BN, which would hide every
    # warehouse used only inside residual branches from the gradient check below at step 0
    kwargs = {"budget": 0.5, "zero_init_last": False}
    model = YOLODetector("kw_resnet18", num_classes=3, neck_channels=16, **kwargs).eval()
    assert model.backbone.channels == [128, 256, 512]
    assert sum(isinstance(m, KWConv2d) for m in model.backbone.modules()) > 0
    reference = timm.create_model(
        "kw_resnet18", features_only=True, out_indices=(2, 3, 4), **kwargs
    ).eval()
    reference.load_state_dict(model.backbone.body.state_dict())
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(images), reference(images), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # At tau = 1 (the start of the paper's schedule) a warehouse smaller than its layers leaves
    # some kernels at zero; at tau = 0 every kernel is assembled from the cells.
    set_temperature(model, 0.0)
    outputs = model.train()(images)
    total, _ = model.loss(
        outputs, [{"boxes": torch.tensor([[2.0, 2, 40, 30]]), "labels": torch.tensor([2])}] * 2
    )
    total.backward()
    assert torch.isfinite(total)
    # the gradient reaches the warehouses, which the kernels are assembled from
    warehouses = [p for n, p in model.backbone.named_parameters() if "warehouse" in n]
    assert warehouses and all(p.grad is not None and p.grad.abs().sum() > 0 for p in warehouses)
