"""YOLOR's detectors from darknet cfg files: the reader's errors, a small cfg against a
hand-written darknet forward, fusion, ONNX, the authors' .pt, fine-tuning and training.

The yolor_csp fixture itself (their outputs) is checked in test_authors_fixtures.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open

from implicit_knowledge import ImplicitLayer, fuse, implicit_layers
from yolo_heads import export_onnx, load_checkpoint
from yolo_heads.architectures import GraphDetector, get_cfg
from yolo_heads.architectures.darknet import parse_cfg
from yolo_heads.config import ConfigError, load_config
from yolo_heads.fuse import fuse_for_inference
from yolo_heads.official import authors_outputs, load, to_authors_key
from yolo_heads.run import run_training

FIXTURE = Path(__file__).parent / "fixtures" / "authors" / "yolor_csp.safetensors"


def _sibling(name: str):
    """A test module beside this one (the suite runs in importlib mode: no sys.path entry)."""
    spec = importlib.util.spec_from_file_location(
        f"_{name}", Path(__file__).with_name(f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rebuild_state = _sibling("test_authors_fixtures").rebuild_state

ANCHORS = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119"
# Every section kind YOLOR's cfgs use, small: reorg, convolutions with silu / mish / leaky, a
# shortcut, a CSP route split (groups), SPP's maxpool, upsample, and the implicit head on two
# levels (strides 8 and 16).
SMALL_CFG = f"""
[net]
width=64
height=64

# 0
[reorg]

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=silu

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

# 4
[shortcut]
from=-2
activation=linear

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=silu

[route]
layers=-1
groups=2
group_id=1

[maxpool]
size=5
stride=1

# 8
[route]
layers=-1,-3

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=silu

[upsample]
stride=2

[route]
layers=-1,8

# 12
[implicit_add]
filters=80

[implicit_add]
filters=32

[implicit_mul]
filters=21

[implicit_mul]
filters=21

# 16
[route]
layers=11

[shift_channels]
from=12

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[control_channels]
from=14

[yolo]
mask=0,1,2
anchors={ANCHORS}
classes=2

# 21
[route]
layers=9

[shift_channels]
from=13

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[control_channels]
from=15

[yolo]
mask=3,4,5
anchors={ANCHORS}
classes=2
"""


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point or name.endswith(".anchors"):
                continue
            if name.endswith(("running_var", "BatchNorm2d.weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("mul.prior.value"):
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model.eval()


def _authors_state(model: GraphDetector) -> dict[str, torch.Tensor]:
    """The model's weights as the authors' ``Darknet.state_dict()`` names them."""
    return {
        to_authors_key(k, model): v.view(1, -1, 1, 1) if k.endswith("prior.value") else v.clone()
        for k, v in model.state_dict().items()
        if not k.endswith(".anchors")
    }


def _darknet_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, classes: int):
    """SMALL_CFG run by hand from the authors' state dict, following their models.py /
    layers.py: the raw [yolo] maps and the decoded inference tensor."""

    def conv(i, y, stride, act=None):
        w = sd[f"module_list.{i}.Conv2d.weight"]
        y = F.conv2d(y, w, sd.get(f"module_list.{i}.Conv2d.bias"), stride, w.shape[-1] // 2)
        if f"module_list.{i}.BatchNorm2d.weight" in sd:
            bn = [sd[f"module_list.{i}.BatchNorm2d.{k}"] for k in ("running_mean", "running_var")]
            w, b = (
                sd[f"module_list.{i}.BatchNorm2d.weight"],
                sd[f"module_list.{i}.BatchNorm2d.bias"],
            )
            y = F.batch_norm(y, *bn, w, b, False, 0.03, 1e-4)
        return {"silu": F.silu, "mish": F.mish, "leaky": lambda t: F.leaky_relu(t, 0.1)}.get(
            act, lambda t: t
        )(y)

    out = {}
    out[0] = torch.cat(
        [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
    )
    out[1] = conv(1, out[0], 1, "silu")
    out[2] = conv(2, out[1], 2, "mish")
    out[3] = conv(3, out[2], 1, "leaky")
    out[4] = out[3] + out[2]
    out[5] = conv(5, out[4], 2, "silu")
    out[6] = out[5].chunk(2, 1)[1]
    out[7] = F.max_pool2d(out[6], 5, 1, 2)
    out[8] = torch.cat([out[7], out[5]], 1)
    out[9] = conv(9, out[8], 2, "silu")
    out[10] = F.interpolate(out[9], scale_factor=2.0, mode="nearest")
    out[11] = torch.cat([out[10], out[8]], 1)
    anchors = torch.tensor([float(v) for v in ANCHORS.split(",")]).view(-1, 2)
    raws, decoded = [], []
    for level, (src, add, c, mul, stride) in enumerate([(11, 12, 18, 14, 8), (9, 13, 23, 15, 16)]):
        y = out[src] + sd[f"module_list.{add}.implicit"]
        y = conv(c, y, 1) * sd[f"module_list.{mul}.implicit"]
        b, _, h, w = y.shape
        p = y.view(b, 3, 5 + classes, h, w).permute(0, 1, 3, 4, 2).contiguous()
        raws.append(p)
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((gx, gy), 2).view(1, 1, h, w, 2).float()
        anchor_wh = (anchors[3 * level : 3 * level + 3] / stride).view(1, 3, 1, 1, 2)
        io = p.sigmoid()
        io[..., :2] = io[..., :2] * 2.0 - 0.5 + grid
        io[..., 2:4] = (io[..., 2:4] * 2) ** 2 * anchor_wh
        io[..., :4] *= stride
        decoded.append(io.view(b, -1, 5 + classes))
    return raws, torch.cat(decoded, 1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def small() -> GraphDetector:
    torch.manual_seed(0)
    return _randomised(GraphDetector("yolo_cfg", num_classes=2, cfg=SMALL_CFG))


@pytest.fixture(scope="module")
def csp() -> tuple[GraphDetector, torch.Tensor]:
    """yolor_csp with the fixture's record weights, and its input."""
    with safe_open(FIXTURE, "pt") as f:
        meta = f.metadata()
        images = f.get_tensor("input")
    return load(rebuild_state(meta["state"]), model="yolor_csp"), images


# --------------------------------------------------------------------------------- the reader


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[maxpool]\nsize=5", "[avgpool]\nsize=5"), r"line 51: unknown section \[avgpool\]"),
        (("groups=2\ngroup_id=1", "groups=2\ngroup_ids=1"), r"line 49: unknown key 'group_ids'"),
        (("filters=8\n", "filters=eight\n"), r"line 11: filters='eight' is not valid"),
        (("from=-2\n", "from=-9\n"), r"line 35: \[shortcut\] layer 4: from=-9 refers to layer -5"),
        (("activation=leaky", "activation=gelu"), r"line 31: .*activation='gelu' is not supported"),
        (("[yolo]\nmask=0,1,2", "[yolo]\nmask=0,1,7"), r"line 104: \[yolo\] mask=\[0, 1, 7\]"),
        (("from=14\n", "from=12\n"), r"line 101: \[control_channels\] layer 19: the implicit"),
        (
            ("filters=16\nsize=1", "filters=16\nsize=1\nsize=3"),
            r"line 29: key 'size' repeats .*first at line 28",
        ),
        (("filters=8\n", ""), r"line 9: \[convolutional\] needs filters="),
    ],
)
def test_cfg_errors_name_the_line(edit, message):
    """One edit of SMALL_CFG each; the line named is the edited line (counted in SMALL_CFG)."""
    old, new = edit
    assert SMALL_CFG.count(old) == 1
    with pytest.raises(ValueError, match=message):
        GraphDetector("yolo_cfg", num_classes=2, cfg=SMALL_CFG.replace(old, new))


def test_cfg_structure_errors():
    with pytest.raises(ValueError, match=r"line 2: the first section must be \[net\]"):
        parse_cfg("\n[convolutional]\nfilters=1\nsize=1\n", "x.cfg")
    with pytest.raises(ValueError, match=r"x.cfg, line 1: 'oops' is neither"):
        parse_cfg("oops\n", "x.cfg")
    # the [yolo] must read a linear 1x1 output convolution (the head this reader builds)
    broken = SMALL_CFG.replace("[shift_channels]\nfrom=13\n", "")
    with pytest.raises(ValueError, match=r"line 123: \[yolo\] layer 24: a \[yolo\] must read"):
        GraphDetector("yolo_cfg", num_classes=2, cfg=broken)
    with pytest.raises(ValueError, match=r"cfg= is only for architecture='yolo_cfg'"):
        GraphDetector("yolov9_t", cfg=SMALL_CFG)
    with pytest.raises(ValueError, match=r"needs cfg="):
        GraphDetector("yolo_cfg")


def test_config_model_cfg_builds_and_checks_the_file(tmp_path):
    path = tmp_path / "mine.cfg"
    path.write_text(SMALL_CFG.replace("activation=mish", "activation=swish"))
    cfg = load_config(overrides=[f"model.cfg={path}", "data.train=x.json"])
    from yolo_heads.config import detector_kwargs

    kwargs = detector_kwargs(cfg, num_classes=3)
    assert kwargs["architecture"] == "yolo_cfg" and "activation=swish" in kwargs["cfg"]
    path.write_text(SMALL_CFG.replace("[upsample]", "[upsampel]"))
    line = SMALL_CFG.splitlines().index("[upsample]") + 1
    with pytest.raises(
        ConfigError, match=rf"model\.cfg: .*mine\.cfg, line {line}: unknown section"
    ):
        load_config(overrides=[f"model.cfg={path}", "data.train=x.json"])
    with pytest.raises(ConfigError, match=r"model\.cfg='nope\.cfg' does not exist"):
        load_config(overrides=["model.cfg=nope.cfg", "data.train=x.json"])
    with pytest.raises(ConfigError, match=r"leave model\.architecture unset"):
        load_config(overrides=["model=yolov7", f"model.cfg={path}", "data.train=x.json"])


@pytest.mark.parametrize(
    ("name", "params", "strides"),
    [
        ("yolor_csp", 52_923_994, [8, 16, 32]),  # the fixture's (their Darknet)
        ("yolor_p6", 37_265_016, [8, 16, 32, 64]),  # the paper's Table 9
        ("yolor_w6", 79_873_400, [8, 16, 32, 64]),  # the paper's Table 9
    ],
)
def test_shipped_cfgs_parameter_counts(name, params, strides):
    model = GraphDetector(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.strides == strides
    assert [f["reduction"] for f in model.feature_info] == strides
    assert "[implicit_add]" in get_cfg(name)


# ------------------------------------------------------------------- a small cfg, by hand


def test_small_cfg_matches_a_hand_written_darknet_forward(small, images):
    state = _authors_state(small)
    raws, decoded = _darknet_reference(state, images, classes=2)
    got = authors_outputs(small, images)
    assert sorted(got) == ["out.decoded", "out.level.0", "out.level.1"]
    for level, raw in enumerate(raws):
        assert (got[f"out.level.{level}"] - raw).abs().max().item() <= 1e-5 * raw.abs().max()
    assert (got["out.decoded"] - decoded).abs().max().item() <= 1e-5 * decoded.abs().max()
    # every cfg layer keeps its number; the head took over layers 12-20 and 22-25
    assert "module_list.5.BatchNorm2d.running_var" in state
    assert "module_list.18.Conv2d.bias" in state and "module_list.14.implicit" in state
    assert sum(p.numel() for p in small.parameters()) == sum(v.numel() for v in state.values()) - (
        sum(v.numel() for k, v in state.items() if k.endswith(("running_mean", "running_var")))
    ) - sum(1 for k in state if k.endswith("num_batches_tracked"))


def test_authors_layouts_load_and_their_pt_with_numpy_fitness(small, images, tmp_path):
    theirs = _authors_state(small)
    ckpt = tmp_path / "small.pt"
    # what YOLOR's train.py / strip_optimizer write: the fitness values are numpy arrays
    torch.save(
        {
            "epoch": -1, "best_fitness": np.array([0.4321]), "best_fitness_p": 0.0,
            "training_results": None, "model": theirs, "optimizer": None, "wandb_id": None,
        },
        ckpt,
    )  # fmt: skip
    expected = authors_outputs(small, images)
    for source in (theirs, ckpt):
        model = load(source, model=GraphDetector("yolo_cfg", num_classes=2, cfg=SMALL_CFG))
        got = authors_outputs(model, images)
        assert all(torch.equal(expected[k], got[k]) for k in expected)
    wrong = dict(theirs)
    wrong["module_list.5.Conv2d.weight"] = wrong["module_list.5.Conv2d.weight"][:, :4]
    with pytest.raises(ValueError, match=r"'module_list\.5\.Conv2d\.weight' has shape"):
        load(wrong, model=GraphDetector("yolo_cfg", num_classes=2, cfg=SMALL_CFG))
    del wrong["module_list.5.Conv2d.weight"]
    with pytest.raises(ValueError, match=r"it has no 'module_list\.5\.Conv2d\.weight'"):
        load(wrong, model=GraphDetector("yolo_cfg", num_classes=2, cfg=SMALL_CFG))


def test_another_class_count_keeps_box_and_objectness_rows(small, caplog):
    theirs = _authors_state(small)
    torch.manual_seed(3)
    fresh = GraphDetector("yolo_cfg", num_classes=7, cfg=SMALL_CFG)
    init = {k: v.clone() for k, v in fresh.state_dict().items()}
    model = load(theirs, model=fresh)
    assert len(model.skipped_keys) == 6  # conv weight, bias and ImplicitMul per level
    for level, (conv, mul) in enumerate([(18, 14), (23, 15)]):
        prefix = f"layers.25.out.{level}."
        for ours, key in ((f"{prefix}conv.bias", f"{conv}.Conv2d.bias"),
                          (f"{prefix}mul.prior.value", f"{mul}.implicit")):  # fmt: skip
            got = model.state_dict()[ours].view(3, 12)
            mine = init[ours].view(3, 12)
            assert torch.equal(got[:, :5], theirs[f"module_list.{key}"].view(3, 7)[:, :5])
            assert torch.equal(got[:, 5:], mine[:, 5:])  # class rows: the model's own init
    with pytest.raises(ValueError, match=r"has shape \(21, 80, 1, 1\), the model \(36, 80"):
        load(theirs, model=GraphDetector("yolo_cfg", num_classes=7, cfg=SMALL_CFG),
             strict_classes=True)  # fmt: skip


def test_timm_factory_features_only_and_a_user_cfg(small):
    torch.manual_seed(0)
    model = GraphDetector("yolor_csp", num_classes=3).eval()
    features = timm.create_model("yolor_csp", features_only=True, num_classes=3)
    own = features.state_dict()
    features.load_state_dict(
        {f"model.{k}": v for k, v in model.state_dict().items() if f"model.{k}" in own}
    )
    assert features.feature_info.reduction() == [8, 16, 32]
    assert features.feature_info.channels() == [256, 512, 1024]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tagged = model.forward_tags(x)
        for tag, feat in zip(("B3", "B4", "B5"), features.eval()(x)):
            assert torch.equal(feat, tagged[tag])
    user = timm.create_model("yolo_cfg", cfg=SMALL_CFG, num_classes=2)
    user.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(small(x), user.eval()(x)))


# ---------------------------------------------------------------------- fusion and export


def test_implicit_knowledge_folds_into_the_output_convolutions(csp):
    model, images = csp
    with torch.no_grad():
        reference = authors_outputs(model, images)
        folded = fuse(model)
        assert not implicit_layers(folded)  # all six vectors are gone
        got = authors_outputs(folded, images)
        for key, value in reference.items():
            assert (got[key] - value).abs().max().item() <= 1e-5 * value.abs().max().item()
        fused = fuse_for_inference(model, images)
        assert not any(
            isinstance(m, (ImplicitLayer, torch.nn.BatchNorm2d)) for m in fused.modules()
        )
        got = authors_outputs(fused, images)
        for key, value in reference.items():
            assert (got[key] - value).abs().max().item() <= 1e-4 * value.abs().max().item()
    # folded away: the implicit vectors (add 256 + 512 + 1024, mul 3 x 255) and, per BatchNorm,
    # its weight and bias (the convolution gains a bias instead)
    norms = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in fused.parameters()) == before - 1792 - 765 - norms


def test_onnx_export_matches_predict(digits, tmp_path):
    from yolo_heads.data import CocoDetection, collate

    ort = pytest.importorskip("onnxruntime")
    helpers = _sibling("test_export")  # its trained-model thresholds and detection matching
    MAX_DET = helpers.MAX_DET
    torch.manual_seed(0)
    train = CocoDetection(digits[0], image_size=64)
    images, targets = collate([train[i] for i in range(len(train))])
    model = GraphDetector("yolo_cfg", num_classes=10, cfg=SMALL_CFG)
    with torch.no_grad():  # objectness priors for 64 px images instead of 640 px
        for level in model.head.out:
            level.conv.bias.view(3, -1)[:, 4] += 4.0
    helpers._train(model, images, targets, steps=20)
    conf, iou = helpers._thresholds(model, images[:4], 0.005, 0.65)
    path = export_onnx(model, tmp_path / "small.onnx", image_size=64, conf=conf, iou=iou,
                       max_det=MAX_DET)  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        predictions = model.predict(images[:batch], conf=conf, iou=iou, max_det=MAX_DET)
        assert all(0 < len(p["scores"]) < MAX_DET for p in predictions)
        (got,) = session.run(["detections"], {"images": images[:batch].numpy()})
        helpers._assert_same_detections(got, predictions, batch)


# ------------------------------------------------------------------------------- training


def test_yolor_csp_fine_tunes_from_the_authors_pt_for_two_epochs(csp, digits, tmp_path, capsys):
    """The authors' .pt (80 classes) -> 10 digit classes, 2 epochs at 64 px through the config;
    the checkpoint folder rebuilds the model."""
    model, _ = csp
    weights = tmp_path / "yolor_csp.pt"
    torch.save({"epoch": -1, "best_fitness": np.array([0.5]), "model": _authors_state(model),
                "optimizer": None}, weights)  # fmt: skip
    cfg = load_config(
        overrides=[
            "model=yolor_csp",
            f"model.weights={weights}",
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
    assert "9 class-output tensors re-initialised for 10 classes" in capsys.readouterr().out
    assert len(result.history) == 2
    assert all(np.isfinite(row["loss"]) for row in result.history)
    best = load_checkpoint(result.best).eval()
    assert isinstance(best, GraphDetector) and best.architecture == "yolor_csp"
    assert best.num_classes == 10
    config = json.loads((Path(result.best) / "config.json").read_text())
    assert config["architecture"] == "yolor_csp"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert [tuple(o.shape) for o in best(x)] == [(1, 3, s, s, 15) for s in (8, 4, 2)]
