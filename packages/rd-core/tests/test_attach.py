"""attach(): insertion after named modules of real timm models, shapes kept, clear errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from rd_core import (
    RDInsertion,
    RetrieverDictionary,
    attach,
    attached,
    attachments,
    detach,
    reattach,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rd_runs(model, rd, x):
    """Forward ``model`` and report whether ``rd`` saw an input in the process."""
    seen = []
    handle = rd.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    out = model(x)
    handle.remove()
    return out, seen


def test_resnet_classifier():
    model = timm.create_model("resnet18", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    reference = model(x)
    rd = attach(model, at="layer3", num_atoms=32, image_size=64)
    assert isinstance(rd, RetrieverDictionary) and rd.in_channels == 256
    assert isinstance(model.layer3, RDInsertion)
    out, seen = _rd_runs(model, rd, x)
    assert out.shape == reference.shape
    assert seen == [torch.Size([2, 256, 4, 4])]
    assert not torch.allclose(out, reference)  # the RD really changes the features
    assert list(attached(model)) == ["layer3"]
    assert detach(model, "layer3") is rd
    torch.testing.assert_close(model(x), reference)


def test_resnet_features_only_keeps_every_output():
    model = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3)).eval()
    x = torch.randn(1, 3, 64, 64)
    shapes = [f.shape for f in model(x)]
    rd = attach(model, at="layer2", num_atoms=16, variant="authors", image_size=64)
    assert rd.in_channels == 128
    out, seen = _rd_runs(model, rd, x)
    assert [f.shape for f in out] == shapes
    assert seen == [torch.Size([1, 128, 8, 8])]
    # The collected layer2 output is the RD's output.
    captured = []
    h = rd.register_forward_hook(lambda m, i, o: captured.append(o))
    out = model(x)
    h.remove()
    torch.testing.assert_close(out[1], captured[0])


@pytest.mark.parametrize(
    ("name", "level"), [("cspdarknet53", 3), ("convnext_tiny", 1), ("efficientnet_b0", 2)]
)
def test_features_only_takes_feature_info_names(name, level):
    # feature_info names are dotted ("stages.2"); the features_only wrapper flattens its
    # top-level containers ("stages_2"). The name timm reports must be accepted as it is.
    model = timm.create_model(name, features_only=True).eval()
    at = model.feature_info.module_name()[level]
    x = torch.randn(1, 3, 64, 64)
    reference = [f.shape for f in model(x)]
    rd = attach(model, at=at, num_atoms=16, image_size=64)
    assert rd.in_channels == model.feature_info.channels()[level]
    captured = []
    handle = rd.register_forward_hook(lambda m, i, o: captured.append(o))
    out = model(x)
    handle.remove()
    assert [f.shape for f in out] == reference
    torch.testing.assert_close(out[level], captured[0])  # the level collected is the RD's output
    assert detach(model, at) is rd
    assert not attached(model)


def test_convnext_stage():
    model = timm.create_model("test_convnext", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    reference_shape = model(x).shape
    rd = attach(model, at="stages.1", num_atoms=16, image_size=64)
    out, seen = _rd_runs(model, rd, x)
    assert out.shape == reference_shape
    assert len(seen) == 1 and seen[0][1] == rd.in_channels


def test_deit_tokens_reshaped_to_maps():
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", img_size=64, num_classes=4, depth=2
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    reference = model(x)
    rd = attach(model, at="blocks.0", num_atoms=16, image_size=64)
    insertion = model.blocks[0]
    assert insertion.layout == "tokens" and insertion.num_prefix_tokens == 2
    out, seen = _rd_runs(model, rd, x)
    assert out.shape == reference.shape
    assert seen == [torch.Size([2, 192, 4, 4])]
    # Prefix (class + distillation) tokens pass through the RD untouched.
    tokens = []
    h1 = insertion.module.register_forward_hook(lambda m, i, o: tokens.append(o))
    h2 = insertion.register_forward_hook(lambda m, i, o: tokens.append(o))
    model(x)
    h1.remove()
    h2.remove()
    before, after = tokens
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2:], before[:, 2:])


def test_nested_module_name_and_training_flag():
    model = timm.create_model("test_resnet").train()
    rd = attach(model, at="layer2.0.conv1", num_atoms=8, image_size=32)
    assert rd.in_channels == 48 and rd.training
    assert isinstance(model.layer2[0].conv1, RDInsertion)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert rd.dictionary.raw_atoms.grad is not None


def test_probe_leaves_batchnorm_statistics_alone():
    model = timm.create_model("test_resnet").train()
    before = model.bn1.running_mean.clone()
    attach(model, at="layer1", num_atoms=8, image_size=32)
    torch.testing.assert_close(model.bn1.running_mean, before)
    assert model.training


def test_unknown_module_lists_close_matches():
    model = timm.create_model("test_resnet")
    with pytest.raises(ValueError, match=r"at='layr3'.*close matches: \['layer3'"):
        attach(model, at="layr3", image_size=32)
    with pytest.raises(ValueError, match="is not a module"):
        attach(model, at="", image_size=32)


def test_attach_twice_and_bad_layout():
    model = timm.create_model("test_resnet")
    attach(model, at="layer1", num_atoms=8, image_size=32)
    with pytest.raises(ValueError, match="already"):
        attach(model, at="layer1", num_atoms=8, image_size=32)
    with pytest.raises(ValueError, match="unknown layout 'nchwx'"):
        attach(model, at="layer2", layout="nchwx", image_size=32)


def test_non_map_output_is_rejected():
    model = timm.create_model("test_resnet", num_classes=3)
    with pytest.raises(ValueError, match=r"output of 'fc' has shape \(1, 3\)"):
        attach(model, at="fc", image_size=32)


def test_state_dict_keeps_the_plain_model_keys():
    plain = timm.create_model("test_resnet", num_classes=3).eval()
    model = timm.create_model("test_resnet", num_classes=3).eval()  # different random weights
    rd = attach(model, at="layer3", num_atoms=8, image_size=32)
    keys = set(model.state_dict())
    rd_keys = {k for k in keys if k.startswith("layer3.rd.")}
    assert keys - rd_keys == set(plain.state_dict())
    assert rd_keys == {f"layer3.rd.{k}" for k in rd.state_dict()}
    # A checkpoint of the plain model loads into the model with an RD ...
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == rd_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 32, 32)
    detached = detach(model, "layer3")
    torch.testing.assert_close(model(x), plain(x))
    # ... and a checkpoint with an RD round-trips strictly, RD included.
    model.layer3 = RDInsertion(model.layer3, detached)
    other = timm.create_model("test_resnet", num_classes=3).eval()
    attach(other, at="layer3", num_atoms=8, image_size=32)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x), model(x))


def test_attachments_rebuild_the_architecture_for_a_checkpoint():
    source = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=3)
    attach(source, at="blocks.1", num_atoms=8, variant="authors", image_size=32)
    config = attachments(source)
    assert json.loads(json.dumps(config)) == config
    target = timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=3)
    rds = reattach(target, config)
    assert list(rds) == ["blocks.1"] and rds["blocks.1"].variant == "authors"
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))
    with pytest.raises(ValueError, match="already"):
        reattach(target, config)


def test_deprecated_input_size_is_an_alias_of_image_size_and_in_chans():
    torch.manual_seed(0)
    new_model = timm.create_model("test_resnet", in_chans=1).eval()
    old_model = timm.create_model("test_resnet", in_chans=1).eval()
    old_model.load_state_dict(new_model.state_dict())
    torch.manual_seed(1)
    new = attach(new_model, at="layer2", num_atoms=8, image_size=(32, 48), in_chans=1)
    torch.manual_seed(1)
    with pytest.warns(
        FutureWarning, match=r"^attach: 'input_size' is deprecated, use 'image_size'$"
    ):
        old = attach(old_model, at="layer2", num_atoms=8, input_size=(1, 32, 48))
    assert attachments(old_model) == attachments(new_model)
    x = torch.randn(2, 1, 32, 48)
    torch.testing.assert_close(old_model(x), new_model(x), rtol=0, atol=0)
    assert old.in_channels == new.in_channels
    model = timm.create_model("test_resnet")
    with pytest.raises(TypeError, match=r"attach: pass 'image_size' only \('input_size' is its"):
        attach(model, at="layer2", image_size=32, input_size=(3, 32, 32))
    with pytest.raises(TypeError, match=r"in_chans=1 contradicts input_size=\(3, 32, 32\)"):
        attach(model, at="layer2", in_chans=1, input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"input_size=\(32, 32\) is invalid: expected \(C, H, W\)"):
        attach(model, at="layer2", input_size=(32, 32))
    assert not attached(model)


def test_image_size_int_and_pair_and_the_models_default():
    for size in (32, (32, 32), [32, 32], None):
        model = timm.create_model("test_resnet")
        assert attach(model, at="layer3", num_atoms=8, image_size=size).in_channels == 192


def test_probe_failure_names_the_sizes():
    model = timm.create_model("test_resnet")
    with pytest.raises(ValueError, match=r"in_chans=1, image_size=\(32, 32\) failed"):
        attach(model, at="layer3", num_atoms=8, image_size=32, in_chans=1)


def test_registering_a_layout_or_variant_twice_is_refused():
    from rd_core import LAYOUTS, get_variant, register_layout, register_variant
    from rd_core.attach import Layout
    from rd_core.variants import _VARIANTS, VariantSpec

    before = LAYOUTS["nchw"]
    held = (
        r"register_layout: 'nchw' is already in the layout registry \(held by Layout\(name='nchw'"
    )
    with pytest.raises(ValueError, match=held):
        register_layout(Layout("nchw", lambda s: s[1], None, None))
    assert LAYOUTS["nchw"] is before
    paper = get_variant("paper")
    held = r"register_variant: 'paper' is already in the variant registry \(held by VariantSpec\("
    with pytest.raises(ValueError, match=held + r"'paper'\): YOLO-RD paper"):
        register_variant(VariantSpec("paper", None, None, None, None))
    assert get_variant("paper") is paper
    parts = ("build_retriever", "build_norm", "build_dictionary", "mix")
    spec = VariantSpec("test-only", *[getattr(paper, f) for f in parts])
    register_variant(spec)
    try:
        with pytest.raises(ValueError, match="'test-only' is already"):
            register_variant(spec)
        assert RetrieverDictionary(8, num_atoms=4, variant="test-only").variant == "test-only"
    finally:
        del _VARIANTS["test-only"]
