"""Paper architectures in timm's factory: parameter counts, timm kwargs, features_only."""

from __future__ import annotations

import pytest
import timm
import torch

import kernelwarehouse as kw

# (name, budget, paper / SPEC parameter count, relative tolerance)
PAPER_COUNTS = [
    ("kw_resnet18", 0.25, 4.03e6, 0.005),
    ("kw_resnet18", 0.5, 7.43e6, 0.005),
    ("kw_resnet18", 1.0, 11.93e6, 0.005),
    ("kw_resnet18", 2.0, 23.24e6, 0.005),
    ("kw_resnet18", 4.0, 45.86e6, 0.005),
    ("kw_resnet50", 0.5, 17.64e6, 0.005),
    ("kw_resnet50", 1.0, 28.05e6, 0.005),
    ("kw_resnet50", 4.0, 102.02e6, 0.005),
    ("kw_mobilenetv2_100", 0.5, 2.65e6, 0.005),
    ("kw_mobilenetv2_100", 1.0, 5.17e6, 0.005),
    ("kw_mobilenetv2_100", 4.0, 11.38e6, 0.005),
    ("kw_mobilenetv2_050", 0.5, 1.47e6, 0.005),
    ("kw_mobilenetv2_050", 1.0, 2.85e6, 0.005),
    ("kw_mobilenetv2_050", 4.0, 4.65e6, 0.005),
    ("kw_convnext_tiny", 1.0, 32.99e6, 0.005),
    ("kw_convnext_tiny", 0.75, 24.53e6, 0.005),
    # no released DeiT configuration: documented deviations (README), all within 1.3%
    ("kw_deit_tiny_patch16_224", 1.0, 6.39e6, 0.015),
    ("kw_deit_tiny_patch16_224", 4.0, 20.44e6, 0.015),
    ("kw_deit_small_patch16_224", 0.75, 19.23e6, 0.015),
    ("kw_deit_small_patch16_224", 1.0, 24.36e6, 0.015),
]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, budget, expected, tol", PAPER_COUNTS)
def test_parameter_counts_match_paper(name, budget, expected, tol):
    with torch.device("meta"):  # shapes only: no memory, no forward
        model = timm.create_model(name, budget=budget)
    assert _count(model) == pytest.approx(expected, rel=tol)


def test_convnext_counts_paper_grouping_and_authors_config():
    with torch.device("meta"):
        authors = timm.create_model(
            "kw_convnext_tiny",
            grouping="convnext_authors",
            kw_kwargs={"attention_norm": "layernorm", "reduction": 1 / 16},
        )
        paper = timm.create_model("kw_convnext_tiny")
    assert _count(authors) == pytest.approx(39.37e6, rel=0.005)
    groups = [wp.group for wp in paper.kw_plan.warehouses]
    # stage 3 split in three; separate depth-wise, point-wise and down-sampling warehouses
    assert groups[:4] == ["stem", "stage0:dw", "stage0:pw", "downsample1"]
    assert {"stage2a:pw", "stage2b:pw", "stage2c:pw"} <= set(groups)
    assert [wp.total_mixtures for wp in paper.kw_plan.warehouses if wp.group.endswith("pw")] == [
        24
    ] * 6  # Table 14


def test_resnet18_plan_follows_table15():
    with torch.device("meta"):
        model = timm.create_model("kw_resnet18")
    plan = model.kw_plan
    assert [wp.total_mixtures for wp in plan.warehouses] == [56, 47, 47, 27]  # Table 14
    assert plan.group_of("layer2.0.conv1") == "stage0"
    assert plan.group_of("layer2.0.downsample.0") == "stage0"
    assert plan.group_of("layer2.0.conv2") == "stage1"
    assert "conv1" in plan.kept_static and "fc" in plan.kept_static
    assert "stage0" in str(plan) and "parameters: 11,689,512 -> 11,932,148" in str(plan)


def test_timm_kwargs_and_forward_small():
    model = timm.create_model(
        "kw_resnet18", budget=0.5, num_classes=7, in_chans=1, drop_rate=0.1, drop_path_rate=0.05
    )
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    cells = [m.shared_warehouse.cells for m in model.modules() if isinstance(m, kw.KWLayer)]
    assert all(c.grad is not None for c in cells)


def test_features_only_resnet18_keeps_warehouses():
    feats = timm.create_model("kw_resnet18", features_only=True, out_indices=(1, 2, 3, 4))
    full = timm.create_model("kw_resnet18")
    outs = feats(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]
    assert feats.feature_info.channels() == [64, 128, 256, 512]
    assert set(feats.state_dict()) <= set(
        full.state_dict()
    )  # same warehouses: a classifier checkpoint loads (minus fc)
    n_cells = sum(m.numel() for n, m in feats.named_parameters() if n.endswith("warehouse.cells"))
    assert n_cells == sum(wp.params for wp in full.kw_plan.warehouses)


def test_features_only_mobilenetv2():
    feats = timm.create_model("kw_mobilenetv2_050", features_only=True)
    outs = feats(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == feats.feature_info.channels()
    assert len(outs) == 5


def test_deit_value_only_and_forward():
    model = timm.create_model("kw_deit_tiny_patch16_224", img_size=32, num_classes=5)
    names = model.kw_plan.layer_names
    assert "blocks.0.attn.qkv.v" in names and "blocks.0.attn.qkv.qk" not in names
    groups = {wp.group for wp in model.kw_plan.warehouses}
    assert groups == {"stage0:attn", "stage0:mlp", "stage1:attn", "stage1:mlp"}
    assert model.kw_plan.group_of("blocks.6.attn.proj") == "stage1:attn"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_factory_rejects_bad_budget_and_pretrained():
    with pytest.raises(ValueError, match="budget=0 is invalid"):
        timm.create_model("kw_resnet18", budget=0)
    with pytest.raises(ValueError, match=r"budget=-0\.5 is invalid"):
        timm.create_model("kw_mobilenetv2_100", budget=-0.5)
    with pytest.raises(ValueError, match="pretrained=True"):
        timm.create_model("kw_resnet18", pretrained=True)


def test_convert_generic_timm_model():
    model = timm.create_model("mobilenetv3_small_050", num_classes=4)
    plan = kw.convert(model, budget=2.0)
    assert plan.params_before < plan.params_after < 3 * plan.params_before
    assert "classifier" in plan.kept_static
    # depth-wise layers never share a warehouse with dense ones
    for wp in plan.warehouses:
        kinds = {lp.kind for lp in wp.layers}
        assert len(kinds) == 1
        if wp.group.split(":")[1] == "grouped":
            assert wp.cell.in_channels == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="convert it only once"):
        kw.convert(model)
    with pytest.raises(ValueError, match="groups='nope' is not a registered"):
        kw.convert(timm.create_model("resnet10t"), groups="nope")
    with pytest.raises(ValueError, match="budget=0 is invalid"):
        kw.convert(timm.create_model("resnet10t"), budget=0)


def test_saved_model_is_rebuilt_by_timm_from_a_local_dir(tmp_path):
    # timm's own export and import (config.json + model.safetensors), the path the Hub also takes
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("kw_resnet18", budget=0.5, num_classes=5).eval()
    kw.set_temperature(model, 0.25)
    assert model.pretrained_cfg["architecture"] == "kw_resnet18"
    assert "hf_hub_id" not in model.pretrained_cfg  # resnet18's weights are not this model's
    save_for_hf(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(loaded) is type(model)
    assert {wp.budget for wp in loaded.kw_plan.warehouses} == {0.5}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
