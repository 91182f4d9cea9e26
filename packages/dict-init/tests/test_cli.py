from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dict_init import Dictionary
from dict_init.cli import main
from dict_init.plot import plot_atoms


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / f"{i}.png")
    return tmp_path


def test_build_then_inspect_with_plots(image_folder, tmp_path, capsys):
    out = tmp_path / "out" / "atoms.safetensors"
    code = main([
        "build", "--encoder", "timm:resnet18", "--layer", "layer2", "--image-size", "32",
        "--data", str(image_folder), "--num-atoms", "8", "--out", str(out),
        "--plot", str(tmp_path / "out" / "atoms.png"), "--quiet",
    ])  # fmt: skip
    assert code == 0
    d = Dictionary.load(out)
    assert d.atoms.shape == (8, 128) and d.metadata["num_items"] == 4
    assert (tmp_path / "out" / "atoms.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["inspect", str(out), "--plot", str(tmp_path / "again.svg")]) == 0
    report = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert report["num_atoms"] == 8 and report["dim"] == 128
    assert report["metadata"]["encoder"]["layer"] == "layer2"
    assert -1.0 <= report["statistics"]["nearest_cosine_max"] <= 1.0
    assert (tmp_path / "again.svg").read_text().lstrip().startswith("<?xml")


def test_build_from_class_names(tmp_path, monkeypatch, sentence_encoder):
    import dict_init.cli as cli

    seen = []

    def cached(spec, **options):
        seen.append(spec)
        return sentence_encoder

    monkeypatch.setattr(cli, "create_encoder", cached)
    out = tmp_path / "lang.safetensors"
    code = main(["build", "--encoder", "sentence", "--data", "coco-classes", "--num-atoms", "8",
                 "--feature-dim", "16", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    d = Dictionary.load(out)
    assert seen == ["sentence"]
    assert d.atoms.shape == (8, 16) and d.metadata["normalization"] == "standard"


def test_bad_layer_is_a_clear_error(image_folder, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    args = ["--layer", "nope", "--data", str(image_folder), "--out", str(out), "--quiet"]
    code = main(["build", "--encoder", "timm:resnet18", *args])
    assert code == 2
    assert "layer='nope' is invalid" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_plot_atoms_tensor(tmp_path):
    path = plot_atoms(torch.randn(20, 6), tmp_path / "p.png", features=torch.randn(100, 6))
    assert path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def _rank_main(rank: int, port: int, argv: list[str], log: str) -> None:
    import os
    import sys

    # what torchrun puts in each worker's environment (its launcher only sets these and
    # starts the processes; forking keeps the test from importing torch twice more)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    with open(f"{log}.{rank}", "w") as out:
        sys.stdout = out
        code = main(argv)
        out.flush()
    os._exit(code)


def test_under_torchrun_the_ranks_split_the_data_and_rank0_writes_once(image_folder, tmp_path):
    import multiprocessing
    import socket

    from safetensors import safe_open

    out, work = tmp_path / "out" / "atoms.safetensors", tmp_path / "work"
    argv = [
        "build", "--encoder", "timm:resnet18", "--layer", "layer2", "--image-size", "32",
        "--data", str(image_folder), "--num-atoms", "8", "--positions-per-image", "4",
        "--work-dir", str(work), "--out", str(out), "--quiet", "--max-iter", "5",
    ]  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import timm  # noqa: F401 - imported once here, the forked ranks inherit it (seconds each)

    context = multiprocessing.get_context("fork")
    log = str(tmp_path / "stdout")
    ranks = [context.Process(target=_rank_main, args=(r, port, argv, log)) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=300)
    assert [p.exitcode for p in ranks] == [0, 0]
    printed = [Path(f"{log}.{r}").read_text() for r in range(2)]
    assert printed[0].count("wrote ") == 1 and "wrote" not in printed[1]  # rank 0 alone writes
    d = Dictionary.load(out)
    assert d.atoms.shape == (8, 128) and d.metadata["num_items"] == 4
    assert d.metadata["num_vectors"] == 4 * 4
    rows = {}
    for shard in sorted((work / "features").glob("rank*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            rank = shard.name.split("-")[0]
            rows[rank] = rows.get(rank, 0) + f.get_slice("features").get_shape()[0]
    assert rows == {"rank0": 8, "rank1": 8}  # two images (4 positions each) per rank
    assert sorted(p.name for p in out.parent.iterdir()) == ["atoms.json", "atoms.safetensors"]
