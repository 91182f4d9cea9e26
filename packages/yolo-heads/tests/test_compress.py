"""Algorithm 1 end to end for a detector (issue 25): train a tiny detector with an RD, compress
its dictionary (``yolo-heads compress`` and :func:`compress_checkpoint`), save, reload, get the
same outputs; ``val``, ``predict`` and ``export`` read the compressed checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rd_core
from yolo_heads import YOLODetector, load_checkpoint, save_checkpoint
from yolo_heads.architectures import GraphDetector
from yolo_heads.checkpoint import read_config
from yolo_heads.cli import main
from yolo_heads.compress import compress_checkpoint

TINY = [
    "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
    "model.neck_channels=16",
    "schedule.batch_size=4",
    "schedule.amp=false",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits) -> Path:
    """A 1-epoch run of a tiny detector with a 16-atom RD (``yolo-heads train``)."""
    out = tmp_path_factory.mktemp("compress") / "run"
    argv = ["train", "--config", "digits", "--no-progress", "--no-plots"]
    argv += [f"data.train={digits[0]}", f"data.val={digits[1]}", f"out={out}"]
    argv += ["schedule.epochs=1", "model.rd.enabled=true", "model.rd.num_atoms=16", *TINY]
    assert main(argv) == 0
    assert (out / "weights" / "best").is_dir()
    return out


def _outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model.eval()(images))


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_compressed_detector_reloads_with_identical_outputs(run, tmp_path):
    best = run / "weights" / "best"
    # the run's own training data (RUN/config.yaml), as Algorithm 1 line 17
    result = compress_checkpoint(best, 8, out=tmp_path / "small", loss="cosine", progress=False)
    assert result.folder == tmp_path / "small" and result.data.endswith("train.json")
    rd = result.model.backbone.body.layer2.rd
    assert rd is result.report.student and rd.num_atoms == 8
    config = read_config(result.folder)
    assert config["model_args"]["rd"]["num_atoms"] == 8
    assert config["knowledge"]["compression"]["teacher_atoms"] == 16
    assert config["knowledge"]["compression"]["loss"] == "cosine"
    images = torch.rand(2, 3, 64, 64)
    expected = _outputs(result.model, images)
    clone = load_checkpoint(result.folder)
    assert clone.backbone.body.layer2.rd.num_atoms == 8
    assert _same(_outputs(clone, images), expected)
    assert clone.label_names == load_checkpoint(best).label_names


def test_rd_core_compress_of_a_detector_saves_and_loads(tiny, tmp_path):
    """The issue's case: rd_core.compress on a detector, then save_checkpoint / load_checkpoint
    (which failed with ``raw_atoms (8, 32) vs (16, 32)``)."""
    model = YOLODetector(num_classes=3, rd={"num_atoms": 16}, **tiny).eval()
    rd = model.backbone.body.layer2.rd
    data = [torch.rand(2, 3, 64, 64) for _ in range(2)]
    rd_core.compress(model, rd, 8, data, epochs=1, progress=False)
    images = torch.rand(1, 3, 64, 64)
    folder = save_checkpoint(model, tmp_path / "det")
    assert _same(_outputs(load_checkpoint(folder), images), _outputs(model, images))


def test_authors_detector_with_an_attached_rd_saves_compressed(tmp_path):
    model = GraphDetector("yolov9_t", num_classes=2, auxiliary=False, rd={"num_atoms": 16})
    rd = next(m for m in model.modules() if isinstance(m, rd_core.RetrieverDictionary))
    rd_core.compress(model.eval(), rd, 4, [torch.rand(1, 3, 64, 64)], progress=False)
    folder = save_checkpoint(model, tmp_path / "v9t")
    assert read_config(folder)["model_args"]["rd"]["num_atoms"] == 4
    images = torch.rand(1, 3, 64, 64)
    assert _same(_outputs(load_checkpoint(folder), images), _outputs(model, images))


def test_rd_9c_built_in_dictionary_saves_compressed(tmp_path):
    """rd-9c's RD is a block of the layer table (tag B3): its count goes under the tag."""
    model = GraphDetector("yolo_rd_9c", num_classes=2, auxiliary=False, B3={"num_atoms": 16})
    rd = model.layers[4].dconv
    rd_core.compress(model.eval(), rd, 4, [torch.rand(1, 3, 64, 64)], progress=False)
    folder = save_checkpoint(model, tmp_path / "rd9c")
    assert read_config(folder)["model_args"]["B3"] == {"num_atoms": 4}
    images = torch.rand(1, 3, 64, 64)
    assert _same(_outputs(load_checkpoint(folder), images), _outputs(model, images))


def test_compress_command_then_val_predict_export(run, digits, tmp_path, capsys):
    best = run / "weights" / "best"
    assert main(["compress", str(best), "--num-atoms", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    small = run / "weights" / "best-rd8"
    assert "atoms 16 -> 8" in printed and str(small) in printed
    assert read_config(small)["model_args"]["rd"]["num_atoms"] == 8
    assert main(["val", "--weights", str(small), "--data", str(digits[1])]) == 0
    assert set(dict(kv.split("=") for kv in capsys.readouterr().out.split())) >= {"AP", "AP50"}
    source = Path(digits[1]).parent / "val"
    out = tmp_path / "pred"
    argv = ["predict", "--weights", str(small), "--source", str(source), "--out", str(out)]
    assert main(argv) == 0
    assert (out / "predictions.json").is_file()
    pt2 = tmp_path / "small.pt2"
    argv = ["export", "--weights", str(small), "--format", "torch-export", "--out", str(pt2)]
    assert main(argv) == 0
    program = torch.export.load(str(pt2))
    images = torch.rand(1, 3, 64, 64)
    expected = _outputs(load_checkpoint(small), images)
    got = program.module()(images)
    assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-atoms", "16"], "num_atoms=16 is not valid; expected an integer in [2, 16)"),
        (["--num-atoms", "1"], "--num-atoms 1 is not valid"),
        (["--num-atoms", "4", "--lr", "0"], "--lr 0.0 is not valid"),
        (["--num-atoms", "4", "--epochs", "0"], "--epochs 0 is not valid"),
        (["--num-atoms", "4", "--usage-score", "most"], "usage_score='most' is not valid"),
        (["--num-atoms", "4", "--loss", "l2"], "loss='l2' is not valid"),
    ],
)
def test_compress_command_bad_values_are_one_line_and_exit_2(run, extra, message, capsys):
    assert main(["compress", str(run / "weights" / "best"), "--no-progress", *extra]) == 2
    # one error line (after the thread plan, when the check needs the weights)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("yolo-heads compress: error:") and message in last


def test_compress_needs_data_outside_a_run_and_an_rd(tiny, tmp_path, capsys):
    with_rd = save_checkpoint(YOLODetector(num_classes=2, rd=True, **tiny), tmp_path / "a")
    assert main(["compress", str(with_rd), "--num-atoms", "4"]) == 2
    assert "give the training data (--data)" in capsys.readouterr().err
    plain = save_checkpoint(YOLODetector(num_classes=2, **tiny), tmp_path / "b")
    assert main(["compress", str(plain), "--num-atoms", "4", "--data", "x.json"]) == 2
    assert "no Retriever-Dictionary to compress" in capsys.readouterr().err
    argv = ["compress", str(with_rd), "--num-atoms", "4", "--out", str(with_rd)]
    assert main([*argv, "--data", "x.json"]) == 2
    assert "is the source checkpoint" in capsys.readouterr().err
