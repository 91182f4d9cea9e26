"""Converters: the KernelWarehouse authors' checkpoints (their reference fixtures) and the
YOLO-RD authors' RD layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import kernelwarehouse as kw
from hub_knowledge import CheckpointError, load, save_for_hub
from hub_knowledge.converters import convert_kernelwarehouse, convert_yolo_rd, find_rd_modules
from rd_core import RetrieverDictionary

# the kernelwarehouse package's copy of the authors' reference outputs (see its README)
FIXTURES = Path(__file__).resolve().parents[3] / "packages/kernelwarehouse/tests/fixtures"


def _fixture(name: str):
    path = FIXTURES / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        x = f.get_tensor("input").float()
        logits = {tau: f.get_tensor(f"logits_tau{tau}") for tau in ("0.0", "1.0")}
    return path, meta["arch"], json.loads(meta["config"]), x, logits


def test_kernelwarehouse_checkpoint_converts_and_reproduces_the_authors_logits(tmp_path):
    path, arch, config, x, logits = _fixture("mobilenetv2_100_kw1x")
    model, report = convert_kernelwarehouse(path, arch, config, prefix="model.", progress=False)
    assert report.max_abs_diff <= 1e-5
    assert report.num_params == 5_168_146  # the authors' model's count, from the fixture README
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits["0.0"], rtol=0, atol=1e-4)
    # published and loaded back by name: same logits, tau saved with the weights
    folder = save_for_hub(model, tmp_path, lineage={"converted_from": "OSVAI/KernelWarehouse"})
    clone = load(folder).eval()
    assert kw.get_temperature(clone) == 0.0
    with torch.no_grad():
        torch.testing.assert_close(clone(x), logits["0.0"], rtol=0, atol=1e-4)
    kw.set_temperature(clone, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), logits["1.0"], rtol=0, atol=1e-4)


def test_kernelwarehouse_bad_input_is_reported():
    path, arch, config, _, _ = _fixture("resnet18_kw1x")
    with pytest.raises(CheckpointError, match=r"cannot be read as 'kw_resnet50'"):
        convert_kernelwarehouse(path, "kw_resnet50", config, prefix="model.", progress=False)
    with pytest.raises(CheckpointError, match=r"prefix='nothing\.'"):
        convert_kernelwarehouse(path, arch, config, prefix="nothing.", progress=False)
    with pytest.raises(ValueError, match=r"arch='kw_vgg16' is invalid"):
        convert_kernelwarehouse(path, "kw_vgg16", config, progress=False)
    with pytest.raises(ValueError, match=r"temperature=2"):
        convert_kernelwarehouse(path, arch, config, temperature=2, progress=False)


def _authors_layout(rd: RetrieverDictionary, prefix: str = "") -> dict[str, torch.Tensor]:
    # module paths unlike rd-core's, to show the mapping goes by structure, not names
    names = {"retriever.generator": "cv_g", "retriever.exchanger": "cv_e", "dictionary": "cv_d"}
    out = {}
    for key, value in rd.state_dict().items():
        for ours, theirs in names.items():
            key = key.replace(ours, theirs)
        out[prefix + key] = value
    return out


@pytest.mark.parametrize(("channels", "atoms"), [(24, 40), (32, 32)])  # f = N: order decides
def test_yolo_rd_weights_map_onto_the_authors_variant(channels, atoms):
    theirs = RetrieverDictionary(channels, num_atoms=atoms, kernel_size=3, variant="authors")
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in theirs.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    theirs.eval()
    checkpoint = _authors_layout(theirs, prefix="model.7.")
    checkpoint["model.6.conv.weight"] = torch.randn(channels, channels, 3, 3)  # rest of a model
    assert find_rd_modules(checkpoint) == ["model.7."]
    ours, mapping = convert_yolo_rd(checkpoint, prefix="model.7.")
    assert mapping["cv_d.conv.weight"] == "dictionary.conv.weight"
    assert (ours.in_channels, ours.num_atoms, ours.kernel_size) == (channels, atoms, 3)
    x = torch.randn(2, channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=0, atol=0)


def test_yolo_rd_paper_variant_does_not_map():
    paper = RetrieverDictionary(16, num_atoms=8, variant="paper")
    with pytest.raises(CheckpointError):
        convert_yolo_rd(paper.state_dict())
    with pytest.raises(CheckpointError, match=r"prefix='x\.'"):
        convert_yolo_rd(paper.state_dict(), prefix="x.")


def test_command_line_converts_and_reports_errors(tmp_path, capsys):
    from hub_knowledge.checkpoint import read_state_dict, save_weights
    from hub_knowledge.cli import main

    theirs = RetrieverDictionary(16, num_atoms=8, variant="authors")
    save_weights(_authors_layout(theirs, prefix="neck.3."), tmp_path / "yolo.safetensors")
    out = tmp_path / "rd.safetensors"
    assert main(["convert-yolo-rd", str(tmp_path / "yolo.safetensors"), "--out", str(out)]) == 0
    assert "neck.3.cv_g.conv.weight -> retriever.generator.conv.weight" in capsys.readouterr().out
    converted, metadata = read_state_dict(out)
    assert metadata["num_atoms"] == "8" and metadata["variant"] == "authors"
    key = "dictionary.conv.weight"
    assert torch.equal(converted[key], theirs.state_dict()[key])

    code = main(
        [
            "convert-kernelwarehouse",
            str(out),
            "--arch",
            "kw_resnet18",
            "--config",
            "{}",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "cannot be read as 'kw_resnet18'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing half-written
