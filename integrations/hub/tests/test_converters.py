"""Converters: the KernelWarehouse authors' checkpoints (their reference fixtures) and the
convert-yolo-rd command (which calls rd_core.official)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import kernelwarehouse as kw
from hub_knowledge import CheckpointError, load, save_for_hub
from hub_knowledge.converters import convert_kernelwarehouse
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
    # their DConv's attribute names (MultimediaTechLab/YOLO): CG, GIE, D
    names = {"retriever.generator": "CG", "retriever.exchanger": "GIE", "dictionary": "D"}
    out = {}
    for key, value in rd.state_dict().items():
        for ours, theirs in names.items():
            key = key.replace(ours, theirs)
        out[prefix + key] = value
    return out


def test_command_line_converts_and_reports_errors(tmp_path, capsys):
    from hub_knowledge.checkpoint import read_state_dict
    from hub_knowledge.cli import main

    theirs = RetrieverDictionary(16, num_atoms=8, variant="authors")
    # their Lightning trainer's layout: {"state_dict": {"model.model.4.dconv.CG...": ...}}
    torch.save(
        {"state_dict": _authors_layout(theirs, prefix="model.model.4.dconv."), "epoch": 1},
        tmp_path / "yolo.ckpt",
    )
    out = tmp_path / "rd.safetensors"
    assert main(["convert-yolo-rd", str(tmp_path / "yolo.ckpt"), "--out", str(out)]) == 0
    assert "f=16 N=8 k=5" in capsys.readouterr().out
    converted, metadata = read_state_dict(out)
    assert json.loads(metadata["num_atoms"]) == 8 and json.loads(metadata["variant"]) == "authors"
    key = "dictionary.conv.weight"
    assert torch.equal(converted[key], theirs.state_dict()[key])
    assert (
        main(
            [
                "convert-yolo-rd",
                str(tmp_path / "yolo.ckpt"),
                "--prefix",
                "7.",
                "--out",
                str(tmp_path / "no.safetensors"),
            ]
        )
        == 2
    )
    assert "prefix='7.'" in capsys.readouterr().err
    assert not (tmp_path / "no.safetensors").exists()

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
