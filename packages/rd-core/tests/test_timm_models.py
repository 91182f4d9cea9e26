"""RD on any timm model end to end: features_only / out_indices, gradient checkpointing,
publishing with timm's writer and rebuilding through ``local-dir:`` with the weights."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models._hub import save_for_hf

from rd_core import attach, attached, attachments
from rd_core.factory import export_config

# real architectures at 64 px; RD after a middle stage / block, whose output comes first
MODELS = {
    "resnet18": ("layer3", (3, 4), {}),
    "convnext_tiny": ("stages.2", (2, 3), {}),
    "cspdarknet53": ("stages.2", (3, 4), {}),
    "deit_tiny_patch16_224": ("blocks.1", (1, 2), {"img_size": 64}),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("base", list(MODELS))
def test_features_only_with_out_indices_runs_the_rd(base):
    at, out_indices, args = MODELS[base]
    entry = {"at": at, "num_atoms": 16}
    model = timm.create_model(
        "with_rd",
        base_architecture=base,
        rd_attachments=[entry],
        features_only=True,
        out_indices=out_indices,
        **args,
    ).eval()
    (insertion,) = attached(model).values()
    # reference: timm's own feature wrapper of the plain base with the same weights, and the
    # RD applied by hand to the output of the stage it follows
    plain = timm.create_model(base, features_only=True, out_indices=out_indices, **args).eval()
    unexpected = plain.load_state_dict(model.state_dict(), strict=False).unexpected_keys
    assert unexpected and all(".rd." in k for k in unexpected)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), plain(x)
        assert [f.shape[1] for f in ours] == model.feature_info.channels()
        # the first requested output is the RD's own stage
        torch.testing.assert_close(ours[0], insertion.rd(theirs[0]), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(ours[0], theirs[0])


@pytest.mark.parametrize(
    ("base", "at", "args", "counted"),
    [
        ("resnet18", "layer3", {}, "rd"),  # checkpoint_seq(flatten=True) walks the insertion
        ("test_convnext", "stages.1", {}, "module.blocks.0"),  # stage.grad_checkpointing
        ("deit_tiny_patch16_224", "blocks.1", {"img_size": 32, "depth": 3}, "rd"),
    ],
)
def test_gradient_checkpointing_through_an_insertion(base, at, args, counted):
    model = timm.create_model(base, num_classes=4, **args)
    attach(model, at=at, num_atoms=8, image_size=32)
    insertion = attached(model)[at]
    calls = []
    # a pre-hook: recomputation may stop early, inside the module, once it has what it needs
    insertion.get_submodule(counted).register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.set_grad_checkpointing(checkpointing)
        model.train()
        model.zero_grad()
        calls.clear()
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    assert len(calls) == 1
    checkpointed = grads(True)
    assert len(calls) == 2  # recomputed in backward: the insertion is checkpointed
    assert plain.keys() == checkpointed.keys() and any(".rd." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("base", "at"), [("test_convnext", "stages.1"), ("test_vit", "blocks.0")])
def test_attach_then_publish_rebuilds_through_local_dir(tmp_path, base, at):
    model = timm.create_model(base, num_classes=3)
    attach(model, at=at, num_atoms=8, variant="authors", image_size=32)
    model.eval()
    save_for_hf(model, str(tmp_path), safe_serialization=True)  # timm's own writer
    path = tmp_path / "config.json"
    config = export_config(model, json.loads(path.read_text()))
    assert config["architecture"] == "with_rd"
    assert config["model_args"]["base_architecture"] == base
    path.write_text(json.dumps(config))

    clone = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert attachments(clone) == attachments(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
        features = timm.create_model(
            f"local-dir:{tmp_path}", pretrained=True, features_only=True, out_indices=(1,)
        ).eval()
        reference = timm.create_model(base, features_only=True, out_indices=(1,)).eval()
        reference.load_state_dict(model.state_dict(), strict=False)
        # pretrained weights reach the wrapper, RD included: its output is not the plain one
        assert attached(features) and not torch.allclose(features(x)[0], reference(x)[0])
    # a registered architecture that builds its own RDs keeps its config
    assert export_config(clone, {"architecture": "with_rd", "model_args": {}})["model_args"][
        "rd_attachments"
    ] == attachments(model)


def test_bad_with_rd_arguments():
    with pytest.raises(ValueError, match=r"base_architecture='resnet_nope' is not"):
        timm.create_model("with_rd", base_architecture="resnet_nope")
    with pytest.raises(ValueError, match=r"rd_attachments=.*list of dicts"):
        timm.create_model("with_rd", base_architecture="resnet18", rd_attachments={"at": 1})
    with pytest.raises(ValueError, match=r"at='layer9' is not a module"):
        timm.create_model(
            "with_rd", base_architecture="resnet18", rd_attachments=[{"at": "layer9"}]
        )
