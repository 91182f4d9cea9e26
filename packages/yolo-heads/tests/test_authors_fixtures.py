"""The authors' detectors against their own outputs (tests/fixtures/authors, README beside).

Each fixture holds the outputs of the authors' code (MultimediaTechLab/YOLO; WongKinYiu/yolor's
``Darknet`` for yolor_csp) for a state dict that its record rebuilds bit for bit; any fixture
made by the same recipe is checked by the same loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from yolo_heads.architectures import GraphDetector, architecture_for, build_architecture
from yolo_heads.official import authors_outputs, load

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "authors").glob("*.safetensors"))


def _has_main_outputs(path: Path) -> bool:
    with safe_open(path, "pt") as f:
        names = f.keys()
    return any(k.startswith("out.Main.") for k in names)


# The YOLO-RD repo's detectors (tagged outputs out.Main.* / out.AUX.*); YOLOR's have one head,
# v9-c-cls one tensor (out.Main, the logits).
TAGGED = [p for p in FIXTURES if _has_main_outputs(p)]


def rebuild_state(record: str) -> dict[str, torch.Tensor]:
    """The fixture README's recipe: one generator, entries in order, 'keep' drawn from none."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, _dtype, dist, arg1, arg2 in json.loads(record):
        if dist == "normal":
            state[key] = torch.empty(shape).normal_(arg1, arg2, generator=g)
        elif dist == "uniform":
            state[key] = torch.empty(shape).uniform_(arg1, arg2, generator=g)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
        else:  # the frozen DFL projection of v9 heads
            assert key.endswith("anc2vec.anc2vec.weight"), key
            state[key] = torch.arange(shape[1], dtype=torch.float32).view(shape)
    return state


def read_fixture(path: Path, prefix: str = "out.") -> tuple[dict, torch.Tensor, dict]:
    """Metadata, input and the outputs whose keys start with ``prefix``."""
    with safe_open(path, "pt") as f:
        names = f.keys()
        outputs = {k: f.get_tensor(k) for k in names if k.startswith(prefix)}
        return f.metadata(), f.get_tensor("input"), outputs


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_outputs_match_the_authors(path: Path) -> None:
    meta, images, reference = read_fixture(path)
    name = architecture_for(meta["model"])
    model = load(rebuild_state(meta["state"]), model=name)
    assert sum(p.numel() for p in model.parameters()) == int(meta["params"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == int(meta["params_trainable"])
    deploy = build_architecture(name, auxiliary=False)
    assert sum(p.numel() for p in deploy.parameters()) == int(meta["params_deploy"])

    outputs = authors_outputs(model, images)
    assert sorted(outputs) == sorted(reference)
    tolerance = 1e-4 * float(meta["max_abs_out"])
    for key, expected in reference.items():
        assert outputs[key].shape == expected.shape, key
        assert (outputs[key] - expected).abs().max().item() <= tolerance, key


@pytest.mark.parametrize("path", TAGGED, ids=[p.stem for p in TAGGED])
def test_deploy_checkpoint_gives_the_main_outputs(path: Path) -> None:
    """A deploy state dict (the record's prefix without the auxiliary branch) loads into the
    model, which drops its branch; the main outputs equal the fixture's."""
    meta, images, reference = read_fixture(path, prefix="out.Main")
    name = architecture_for(meta["model"])
    state = rebuild_state(meta["state"])
    deploy_keys = len(GraphDetector(name, auxiliary=False).state_dict())
    prefix = dict(list(state.items())[:deploy_keys])
    model = load(prefix, model=GraphDetector(name))
    assert model.aux_head is None
    outputs = authors_outputs(model, images)
    assert sorted(outputs) == sorted(reference)
    for key, expected in reference.items():
        assert (outputs[key] - expected).abs().max().item() <= 1e-4 * float(meta["max_abs_out"])


def test_yolor_fixture_is_in_the_loop() -> None:
    """yolor_csp's fixture (their ``Darknet`` state dict, ``module_list.<i>.*``) is one of the
    files the loop above checks, with its four outputs."""
    path = next(p for p in FIXTURES if p.stem == "yolor_csp")
    with safe_open(path, "pt") as f:
        assert architecture_for(f.metadata()["model"]) == "yolor_csp"
        names = f.keys()
        assert sorted(k for k in names if k.startswith("out.")) == [
            "out.decoded", "out.level.0", "out.level.1", "out.level.2",
        ]  # fmt: skip
