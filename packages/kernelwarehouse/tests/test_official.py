"""The authors' reference outputs (fixtures/) are reproduced by official.load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import kernelwarehouse as kw
from kernelwarehouse import official

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str):
    with safe_open(str(FIXTURES / f"{name}.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = f.keys()  # safe_open is not iterable
        sd = {k.removeprefix("model."): f.get_tensor(k) for k in keys if k.startswith("model.")}
        x = f.get_tensor("input").float()
        logits = {tau: f.get_tensor(f"logits_tau{tau}") for tau in ("0.0", "0.5", "1.0")}
    return meta, json.loads(meta["config"]), sd, x, logits


@pytest.mark.parametrize("name", ["resnet18_kw1x", "mobilenetv2_100_kw1x"])
def test_loader_reproduces_authors_logits(name):
    meta, config, sd, x, logits = _fixture(name)
    model = official.load(meta["arch"], sd, config).eval()
    assert sum(p.numel() for p in model.parameters()) == int(meta["params"])
    for tau, expected in logits.items():
        kw.set_temperature(model, float(tau))
        with torch.no_grad():
            out = model(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    # the reference executor (authors' formulation) gives the same numbers
    kw.set_executor(model, "reference")
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits["1.0"], rtol=0, atol=1e-4)


def test_loader_rejects_other_architecture_and_bad_config():
    _meta, config, sd, _, _ = _fixture("resnet18_kw1x")
    with pytest.raises(ValueError, match="does not fit 'kw_resnet50'"):
        official.load("kw_resnet50", sd, config)
    with pytest.raises(ValueError, match="arch='kw_vgg16' is invalid"):
        official.load("kw_vgg16", sd, config)
    with pytest.raises(ValueError, match="sharing_range"):
        official.load("kw_resnet18", sd, {**config, "sharing_range": ["stage"]})
    with pytest.raises(ValueError, match="does not fit"):
        official.load("kw_resnet18", sd, {**config, "cell_num_ratio": 2})


def test_rename_key_mobilenet_layout():
    assert official.rename_key("kw_mobilenetv2_100", "features.0.0.attention.fc2.bias") == (
        "conv_stem.attention.fc2.bias"
    )
    assert official.rename_key("kw_mobilenetv2_100", "features.1.conv.1.attention.fc1.weight") == (
        "blocks.0.0.conv_pw.attention.fc1.weight"
    )
    assert official.rename_key("kw_mobilenetv2_100", "features.17.conv.3.weight") == (
        "blocks.6.0.bn3.weight"
    )
    assert official.rename_key("kw_mobilenetv2_100", "features.18.1.running_var") == (
        "bn2.running_var"
    )
    assert official.rename_key("kw_convnext_tiny", "stages.2.4.pwconv2.attention.fc2.bias") == (
        "stages.2.blocks.4.mlp.fc2.attention.fc2.bias"
    )
