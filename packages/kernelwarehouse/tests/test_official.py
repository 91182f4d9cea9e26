"""The authors' reference outputs (fixtures/) are reproduced by official.load."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
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


# what the authors' main.py passes for the warehouse settings their kw1d2x JSON leaves out
_MAIN_PY_DEFAULTS = {
    "reduction": None,
    "cell_num_ratio": None,
    "cell_inplane_ratio": None,
    "cell_outplane_ratio": None,
    "sharing_range": [],
    "nonlocal_basis_ratio": 1.0,
}


@pytest.mark.parametrize("name", ["mobilenetv2_100_kw1d2x", "mobilenetv2_050_kw1d2x"])
def test_half_mobilenetv2_reproduces_authors_logits_from_their_config(name):
    meta, config, sd, x, logits = _fixture(name)
    # their JSON for these constructors holds training options only
    assert config["model"] == meta["arch"] and not set(config) & set(_MAIN_PY_DEFAULTS)
    for given in (config, {}, None, {**config, **_MAIN_PY_DEFAULTS}):
        model = official.load(meta["arch"], sd, given).eval()
        assert sum(p.numel() for p in model.parameters()) == int(meta["params"])
        for tau, expected in logits.items():
            kw.set_temperature(model, float(tau))
            with torch.no_grad():
                torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"config\['cell_num_ratio'\]=1 is invalid for arch="):
        official.load(meta["arch"], sd, {**config, "cell_num_ratio": 1})
    with pytest.raises(ValueError, match=r"config\['sharing_range'\]=\['layer', 'pwconv'\]"):
        official.load(meta["arch"], sd, {"sharing_range": ["layer", "pwconv"]})


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


# ------------------------------------------------------------------ the authors' 1/2x MobileNetV2
# No reference outputs exist for their kw1d2x_mobilenetv2_* constructors, so the state-dict
# layout is written out here from their code (models/kw1d2x_mobilenetv2.py and
# modules/kernel_warehouse.py of OSVAI/KernelWarehouse): key names, shapes and the warehouse
# sizes of their Warehouse_Manager.store(), and the loader must place every tensor.
_HALF_RATIOS = {  # per warehouse, in their reservation order
    "num": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.5),
    "in": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.025),
    "out": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 1),
}


def _make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _authors_half_mobilenetv2(width: float, num_classes: int = 1000):
    """``(state-dict shapes, params)`` of their ``KW1d2x_MobileNetV2(width_mult=width)``."""
    shapes: dict[str, tuple[int, ...]] = {}
    warehouses: dict[str, list[tuple[int, ...]]] = {}  # name -> kernel shapes, in order
    kw_layers: list[tuple[str, str, tuple[int, ...]]] = []  # (prefix, warehouse, kernel)

    def reserve(prefix, cin, cout, k, groups, warehouse, enabled=True):
        kernel = (cout, cin // groups, k, k)
        if not enabled:
            shapes[prefix + ".weight"] = kernel
            return
        warehouses.setdefault(warehouse, []).append(kernel)
        kw_layers.append((prefix, warehouse, kernel))

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1]]
    setting += [[6, 160, 3, 2], [6, 320, 1, 1]]
    kw_stage, pw_enabled = [1, 2, 3, 4, 5, 6, 6], [False] * 5 + [True, True]
    cin, last = _make_divisible(32 * width), _make_divisible(1280 * max(1.0, width))
    reserve("features.0.0", 3, cin, 3, 1, "stage0_conv0")
    bn("features.0.1", cin)
    index, layer_idx = 1, 0
    for idx, (t, c, n, _s) in enumerate(setting):
        cout = _make_divisible(c * width)
        for i in range(n):
            handover = i == 0 and idx > 0 and kw_stage[idx] != kw_stage[idx - 1]
            stage = kw_stage[idx] - 1 if handover else kw_stage[idx]
            on = pw_enabled[stage - 1]
            hidden, p, j = round(cin * t), f"features.{index}.conv", 0
            if t != 1:
                reserve(f"{p}.0.0", cin, hidden, 1, 1, f"stage{stage}_l_pwconv0", on)
                bn(f"{p}.0.1", hidden)
                j = 1
            reserve(f"{p}.{j}.0", hidden, hidden, 3, hidden, f"stage{stage}_l_dwconv0")
            bn(f"{p}.{j}.1", hidden)
            reserve(f"{p}.{j + 1}", hidden, cout, 1, 1, f"stage{stage}_l_pwconv1", on)
            bn(f"{p}.{j + 2}", cout)
            cin, index, layer_idx = cout, index + 1, 0 if handover else layer_idx + 1
    reserve(f"features.{index}.0", cin, last, 1, 1, "stage6_l_pwconv1")
    bn(f"features.{index}.1", last)
    # their KWLinear: a KWConv1d as ``conv``, kernel [classes, in, 1], with a bias
    warehouses["classifier"] = [(num_classes, last, 1)]
    kw_layers.append(("classifier.1.conv", "classifier", (num_classes, last, 1)))
    shapes["classifier.1.conv.bias"] = (num_classes,)
    # Warehouse_Manager.store(): gcd cells scaled by the ratios, n = int(m_t * cell_num_ratio)
    cells = {}
    for w, (name, kernels) in enumerate(warehouses.items()):
        gcd_out = math.gcd(*[k[0] for k in kernels])
        gcd_in = math.gcd(*[k[1] for k in kernels])
        ce = max(int(gcd_in * _HALF_RATIOS["in"][w]), 1)
        fe = max(int(gcd_out * _HALF_RATIOS["out"][w]), 1)
        m_t = sum(k[0] // fe * k[1] // ce * math.prod(k[2:]) for k in kernels)
        n = max(int(m_t * _HALF_RATIOS["num"][w]), 1)
        shapes[f"warehouse_manager.weights.{w}"] = (n, fe, ce, *([1] * (len(kernels[0]) - 2)))
        cells[name] = (n, fe, ce)
    for prefix, name, kernel in kw_layers:  # Attention(in_planes, reduction 1/32, n, m)
        n, fe, ce = cells[name]
        m = kernel[0] // fe * kernel[1] // ce * math.prod(kernel[2:])
        in_planes = kernel[0] if "dwconv" in name else kernel[1]  # depth-wise: groups = c
        hidden = max(int(in_planes * 0.03125), 16)
        shapes[f"{prefix}.attention.fc1.weight"] = (hidden, in_planes)
        bn(f"{prefix}.attention.norm1", hidden)
        shapes[f"{prefix}.attention.fc2.weight"] = ((n + 1) * m, hidden)
        shapes[f"{prefix}.attention.fc2.bias"] = ((n + 1) * m,)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(math.prod(s) for k, s in shapes.items() if not k.endswith(buffers))
    return shapes, params


@pytest.mark.parametrize(
    ("arch", "width", "paper_m"),
    [
        ("kw1d2x_mobilenetv2_100", 1.0, 2.65),
        ("kw1d2x_mobilenetv2_050", 0.5, 1.47),
    ],
)
def test_loader_takes_the_authors_half_mobilenetv2_layout(arch, width, paper_m):
    shapes, params = _authors_half_mobilenetv2(width)
    assert abs(params / 1e6 - paper_m) < 0.01  # the written-out layout is the paper's model
    gen = torch.Generator().manual_seed(0)
    sd = {
        k: (
            torch.randint(0, 5, s)
            if k.endswith("num_batches_tracked")
            else torch.rand(s, generator=gen) + 0.5
        )
        for k, s in shapes.items()
    }
    model = official.load(arch, sd).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    loaded = model.state_dict()
    owners = {i: wp.layers[0].name for i, wp in enumerate(model.kw_plan.warehouses)}
    for key, value in sd.items():
        if key.startswith("warehouse_manager.weights."):
            target = loaded[f"{owners[int(key.rsplit('.', 1)[1])]}.warehouse.cells"]
        else:
            target = loaded[official.rename_key(arch, key)]
        torch.testing.assert_close(target.reshape(value.shape), value.to(target.dtype))
    kw.set_temperature(model, 0.0)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()
    with pytest.raises(ValueError, match="config=None is invalid for arch='kw_resnet18'"):
        official.load("kw_resnet18", sd)


def test_readme_checkpoint_example_runs_from_another_directory(tmp_path):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## The authors' checkpoints", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "KW_FIXTURES": str(FIXTURES), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code + "\nprint(type(model).__name__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ResNet")
