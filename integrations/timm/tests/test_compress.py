"""Algorithm 1 end to end for an ``rd_*`` classifier (issue 25): train a tiny model, compress its
dictionary, save it (timm's ``config.json``, a Hub folder), reload it, get the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

import hub_knowledge
import rd_core
import timm_knowledge  # noqa: F401  (registers rd_resnet18)
from timm_knowledge.cli import main
from timm_knowledge.compress import compress_model

CLASSES = ("red", "green", "blue")
# resnet18 at 1/8 width with one block per stage: the RD after layer3 sees 32 channels
TINY = {"num_atoms": 16, "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder) -> tuple[Path, Path]:
    """(image folder, run output) of a 1-epoch ``timm-knowledge train`` of a tiny rd_resnet18."""
    root = image_folder
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--model", "rd_resnet18", "--model-kwargs", json.dumps(TINY)]
    argv += ["--data-dir", str(root), "--output", str(out), "--epochs", "1"]
    argv += ["--batch-size", "4", "--image-size", "32", "--warmup-epochs", "0", "--workers", "0"]
    assert main(argv) == 0
    return root, out


def _outputs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def test_compressed_classifier_reloads_with_identical_outputs(trained, tmp_path):
    root, out = trained
    result = compress_model(
        out / "model", 8, data_dir=root, image_size=32, batch_size=4, progress=False
    )
    assert result.folder == out / "model-rd8"
    config = json.loads((result.folder / "config.json").read_text())
    assert config["architecture"] == "rd_resnet18" and config["model_args"]["num_atoms"] == 8
    images = torch.rand(2, 3, 32, 32)
    expected = _outputs(result.model, images)
    assert result.model.layer3.rd.num_atoms == 8
    # timm's config.json (what timm-knowledge writes)
    clone = timm.create_model(f"local-dir:{result.folder}", pretrained=True)
    assert torch.equal(_outputs(clone, images), expected)
    # a Hub folder (hub-knowledge): save_for_hub refused the compressed model before
    hub_folder = hub_knowledge.save_for_hub(result.model, tmp_path / "hub")
    assert json.loads((hub_folder / "config.json").read_text())["model_args"]["num_atoms"] == 8
    assert torch.equal(_outputs(hub_knowledge.load(hub_folder), images), expected)
    # the student really is the teacher's most used atoms, trained: not the teacher itself
    teacher = timm.create_model(f"local-dir:{out / 'model'}", pretrained=True)
    assert teacher.layer3.rd.num_atoms == 16
    assert not torch.equal(_outputs(teacher, images), expected)


def test_rd_core_compress_then_save_for_hub_and_save_for_hf(tmp_path):
    """The issue's case: rd_core.compress on a timm rd_resnet18, then either saver."""
    model = timm.create_model("rd_resnet18", num_classes=3, **TINY).eval()
    feats = [torch.rand(4, 3, 32, 32) for _ in range(2)]
    report = rd_core.compress(model, model.layer3.rd, 8, feats, epochs=1, progress=False)
    assert model.layer3.rd is report.student
    images = torch.rand(2, 3, 32, 32)
    expected = _outputs(model, images)
    folder = hub_knowledge.save_for_hub(model, tmp_path / "hub")
    assert torch.equal(_outputs(hub_knowledge.load(folder), images), expected)
    save_for_hf(model, str(tmp_path / "hf"), safe_serialization=True)
    clone = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True)
    assert torch.equal(_outputs(clone, images), expected)


def test_compress_command_writes_a_loadable_model(trained, tmp_path, capsys):
    root, out = trained
    target = tmp_path / "small"
    argv = ["compress", str(out / "model"), "--num-atoms", "4", "--data-dir", str(root)]
    argv += ["--out", str(target), "--image-size", "32", "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "atoms 16 -> 4" in printed and str(target) in printed
    clone = hub_knowledge.load(target)
    assert clone.layer3.rd.num_atoms == 4
    assert torch.isfinite(_outputs(clone, torch.rand(1, 3, 32, 32))).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-atoms", "16"], "num_atoms=16 is not valid; expected an integer in [2, 16)"),
        (["--num-atoms", "1"], "num_atoms=1 is not valid"),
        (["--num-atoms", "4", "--lr", "0"], "lr=0.0 is not valid"),
        (["--num-atoms", "4", "--usage-score", "most"], "usage_score='most' is not valid"),
        (["--num-atoms", "4", "--loss", "l2"], "loss='l2' is not valid"),
        (["--num-atoms", "4", "--split", "test"], "has no 'test' folder"),
    ],
)
def test_compress_command_bad_values_are_one_line_and_exit_2(trained, extra, message, capsys):
    root, out = trained
    argv = ["compress", str(out / "model"), "--data-dir", str(root), "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_compress_command_refuses_a_model_without_a_dictionary(tmp_path, capsys):
    save_for_hf(timm.create_model("resnet10t", num_classes=2), str(tmp_path / "plain"))
    argv = ["compress", str(tmp_path / "plain"), "--num-atoms", "4", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "holds no Retriever-Dictionary" in capsys.readouterr().err
