"""The authors' architectures beyond the fixtures: checkpoint layouts, fine-tuning, fusion,
timm's factory, training with PGI and checkpoints."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from yolo_heads import load_checkpoint, save_checkpoint
from yolo_heads.architectures import GraphDetector, list_architectures
from yolo_heads.architectures.blocks import RepConv
from yolo_heads.config import load_config
from yolo_heads.fuse import fuse_for_inference
from yolo_heads.losses import AnchorFreeLoss
from yolo_heads.official import authors_outputs, load, to_authors_key
from yolo_heads.run import run_training


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float tensor redrawn (BatchNorm statistics included) so outputs are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point and "anc2vec" not in name:
                if name.endswith(("running_var", "bn.weight")):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def _authors_state(model: GraphDetector) -> dict[str, torch.Tensor]:
    """The model's weights as the authors' released ``.pt`` names them (their layout: implicit
    vectors [1, C, 1, 1])."""
    return {
        to_authors_key(k): v.view(1, -1, 1, 1) if k.endswith("prior.value") else v.clone()
        for k, v in model.state_dict().items()
        if not k.endswith(".anchors")
    }


@pytest.fixture(scope="module")
def v9t() -> GraphDetector:
    torch.manual_seed(0)
    return _randomised(GraphDetector("yolov9_t"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _same_outputs(a: GraphDetector, b: GraphDetector, images: torch.Tensor) -> None:
    expected, got = authors_outputs(a, images), authors_outputs(b, images)
    assert sorted(expected) == sorted(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_every_layout_the_authors_write_loads(v9t, images, tmp_path):
    flat = _authors_state(v9t)
    released = tmp_path / "v9-t.pt"
    torch.save(flat, released)
    _same_outputs(v9t, load(released, model="yolov9_t"), images)
    # their YOLO module's own state dict (the fixtures' records)
    _same_outputs(v9t, load({f"model.{k}": v for k, v in flat.items()}, "yolov9_t"), images)

    # Lightning: raw weights under model.model., the EMA copy under ema.model.
    ema = {
        k: v + 0.01 if v.is_floating_point() and "anc2vec" not in k else v for k, v in flat.items()
    }
    ckpt = {
        "epoch": 3,
        "state_dict": {
            **{f"model.model.{k}": v for k, v in flat.items()},
            **{f"ema.model.{k}": v for k, v in ema.items()},
        },
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    from_ema = load(path, model="yolov9_t")
    theirs_ema = load(ema, model="yolov9_t")
    _same_outputs(theirs_ema, from_ema, images)  # EMA by default
    _same_outputs(v9t, load(path, model="yolov9_t", ema=False), images)


def test_deploy_checkpoint_drops_the_auxiliary_branch(v9t, images):
    deploy_keys = len(GraphDetector("yolov9_t", auxiliary=False).state_dict())
    flat = dict(list(_authors_state(v9t).items())[:deploy_keys])
    model = load(flat, model="yolov9_t")
    assert model.aux_head is None and not model.config["auxiliary"]
    main = {k: v for k, v in authors_outputs(v9t, images).items() if ".Main." in k}
    got = authors_outputs(model, images)
    assert sorted(got) == sorted(main)
    assert all(torch.equal(got[k], main[k]) for k in main)


def test_another_models_checkpoint_is_refused_with_the_first_key(v9t, tmp_path):
    flat = _authors_state(v9t)
    with pytest.raises(ValueError, match=r"'0\.conv\.weight' has shape \(16, 3, 3, 3\)"):
        load(flat, model="yolov9_s")
    with pytest.raises(ValueError, match=r"has no '22\.heads\.0\.class_conv\.2\.bias'"):
        load({k: v for k, v in flat.items() if k != "22.heads.0.class_conv.2.bias"}, "yolov9_t")
    with pytest.raises(ValueError, match=r"key '99\.conv\.weight'"):
        load({**flat, "99.conv.weight": torch.zeros(1)}, model="yolov9_t")
    with pytest.raises(ValueError, match="not in any layout"):
        load({"backbone.weight": torch.zeros(1)}, model="yolov9_t")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "missing.pt", model="yolov9_t")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": _NotATensor()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        load(pickled, model="yolov9_t")
    with pytest.raises(ValueError, match="architecture='yolov10'"):
        load(flat, model="yolov10")


class _NotATensor:
    pass


def test_another_class_count_reinitialises_only_the_class_outputs(v9t, caplog):
    flat = _authors_state(v9t)
    torch.manual_seed(5)
    fresh = GraphDetector("yolov9_t", num_classes=10)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="yolo_heads.official"):
        model = load(flat, model=fresh)
    expected = sorted(
        f"layers.{layer}.heads.{level}.class_conv.2.{p}"
        for layer in (22, 30)
        for level in range(3)
        for p in ("weight", "bias")
    )
    assert sorted(model.skipped_keys) == expected
    assert "re-initialised 12 class-output tensors" in caplog.text
    theirs = v9t.state_dict()
    for key, value in model.state_dict().items():
        if key in expected:  # re-initialised: not the checkpoint's, the right new shape
            assert value.shape[0] == 10
            assert value.shape[1:] == theirs[key].shape[1:]
        else:
            assert torch.equal(value, theirs[key]), key
    # the class branch kept the checkpoint's width (the authors' formula gives 64 for 10)
    assert model.config["Main"] == {"class_channels": 128}
    del initial
    with pytest.raises(ValueError, match=r"class_conv\.2\.weight' has shape"):
        load(flat, model=GraphDetector("yolov9_t", num_classes=10), strict_classes=True)


def test_yolov7_with_another_class_count_keeps_box_and_objectness_rows():
    torch.manual_seed(0)
    v7 = _randomised(GraphDetector("yolov7"))
    flat = _authors_state(v7)
    model = load(flat, model=GraphDetector("yolov7", num_classes=2))
    theirs = v7.state_dict()["layers.105.out.0.conv.weight"].view(3, 85, -1)
    mine = model.state_dict()["layers.105.out.0.conv.weight"].view(3, 7, -1)
    assert torch.equal(mine[:, :5], theirs[:, :5])
    assert len(model.skipped_keys) == 9  # conv weight, bias and ImplicitMul per level


@pytest.mark.parametrize("name", ["yolov9_t", "yolov7"])
def test_fusion_drops_auxiliary_and_folds_repconv(name, images):
    torch.manual_seed(0)
    model = _randomised(GraphDetector(name, num_classes=4))
    with torch.no_grad():
        reference = model(images)
        repconvs = [m for m in model.modules() if isinstance(m, RepConv)]
        assert repconvs
        folded = GraphDetector(name, num_classes=4)
        folded.load_state_dict(model.state_dict())
        folded.eval().reparameterize()
        assert all(m.fused is not None for m in folded.modules() if isinstance(m, RepConv))
        for a, b in zip(reference, folded(images)):
            assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
        fused = fuse_for_inference(model, images)
        assert fused.aux_head is None
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        for a, b in zip(reference, fused(images)):
            assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_every_architecture_is_in_timms_factory_with_features_only():
    assert set(list_architectures()) <= set(timm.list_models("yolo*"))
    torch.manual_seed(0)
    model = _randomised(timm.create_model("yolov9_t", num_classes=3))
    features = timm.create_model("yolov9_t", features_only=True, num_classes=3)
    own = features.state_dict()
    # timm's feature wrapper holds the pruned model as `model`: only the backbone layers
    features.load_state_dict(
        {f"model.{k}": v for k, v in model.state_dict().items() if f"model.{k}" in own}
    )
    assert features.feature_info.reduction() == [8, 16, 32]
    x = torch.rand(1, 3, 64, 64)
    tagged = model.forward_tags(x)
    got = features.eval()(x)
    # The reference: the full model's own B3/B4/B5 outputs.
    for tag, feat in zip(("B3", "B4", "B5"), got):
        assert torch.equal(feat, tagged[tag])
    # only the backbone is kept by features_only
    assert sum(p.numel() for p in features.parameters()) < sum(
        p.numel() for p in model.parameters()
    )


def test_rd_core_attach_and_kernelwarehouse_convert_work_on_it():
    import rd_core

    model = GraphDetector("yolov9_t", num_classes=3, auxiliary=False)
    rd = rd_core.attach(model, at=model.feature_info[0]["module"], num_atoms=16, image_size=64)
    assert rd.in_channels == 64
    assert len(model.eval()(torch.rand(1, 3, 64, 64))) == 3
    kernelwarehouse = pytest.importorskip("kernelwarehouse")
    converted = GraphDetector("yolov9_t", num_classes=3, auxiliary=False)
    kernelwarehouse.convert(converted, budget=1.0)
    assert any(type(m).__name__ == "KWConv2d" for m in converted.modules())
    assert len(converted.eval()(torch.rand(1, 3, 64, 64))) == 3


def test_loss_is_main_plus_a_quarter_of_auxiliary():
    """The authors' DualLoss: each part = gain x (main + 0.25 x aux)."""
    torch.manual_seed(0)
    model = GraphDetector("yolov9_t", num_classes=3).train()
    main, aux = model(torch.rand(2, 3, 64, 64))
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[20.0, 20.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    total, parts = model.loss((main, aux), targets)
    main_total, main_parts = AnchorFreeLoss(model.head, assigner={"min_side": 0})(main, targets)
    aux_total, aux_parts = AnchorFreeLoss(model.aux_head, assigner={"min_side": 0})(aux, targets)
    assert torch.allclose(total, main_total + 0.25 * aux_total)
    for key in ("box", "dfl", "cls"):
        assert torch.allclose(parts[key], main_parts[key] + 0.25 * aux_parts[key])
    # The authors' matcher takes candidates strictly inside a box: a 2.5 px box between anchor
    # points gets none (no box loss); yolo-heads' default widens it to the middle stride.
    tiny = [{"boxes": torch.tensor([[41.0, 13.0, 43.5, 15.5]]), "labels": torch.tensor([0])}] * 2
    assert model.loss(main, tiny)[1]["box"].item() == 0.0
    assert AnchorFreeLoss(model.head)(main, tiny)[1]["box"].item() > 0.0


@pytest.mark.parametrize("name", ["yolov9_t", "yolo_rd_9c"])
def test_two_epoch_training_with_pgi_then_checkpoint_round_trip(name, digits, tmp_path):
    cfg = load_config(
        overrides=[
            f"model={name}",
            f"data.train={digits[0]}",
            f"data.val={digits[1]}",
            f"out={tmp_path / 'run'}",
            "schedule.epochs=2",
            "schedule.batch_size=4",
            "schedule.amp=false",
            "schedule.warmup_steps=1",
        ]
    )
    result = run_training(cfg, progress=False, plots=False)
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    best = load_checkpoint(result.best).eval()
    assert isinstance(best, GraphDetector) and best.architecture == name
    assert best.aux_head is not None  # the auxiliary weights are kept for fine-tuning
    # the same weights reach the same outputs after a save / load round trip
    again = load_checkpoint(save_checkpoint(best, tmp_path / "copy")).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(best(x), again(x)):
            assert torch.equal(a, b)


def test_fine_tune_from_an_authors_checkpoint_through_the_config(v9t, digits, tmp_path, capsys):
    weights = tmp_path / "v9-t.pt"
    torch.save(_authors_state(v9t), weights)
    cfg = load_config(
        overrides=[
            "model=yolov9_t",
            f"model.weights={weights}",
            f"data.train={digits[0]}",
            f"out={tmp_path / 'run'}",
            "schedule.epochs=1",
            "schedule.batch_size=4",
            "schedule.amp=false",
        ]
    )
    run_training(cfg, progress=False, plots=False)
    assert "12 class-output tensors re-initialised for 10 classes" in capsys.readouterr().out


def test_config_refuses_an_unknown_architecture():
    from yolo_heads.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.architecture='yolov99'"):
        load_config(overrides=["model=yolov99", "data.train=x.json"])
