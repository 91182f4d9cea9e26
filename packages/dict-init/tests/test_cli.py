from __future__ import annotations

import json
import os
import re
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
        "build", "--encoder", "timm:resnet18", "--at", "layer2", "--image-size", "32",
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
    args = ["--at", "nope", "--data", str(image_folder), "--out", str(out), "--quiet"]
    code = main(["build", "--encoder", "timm:resnet18", *args])
    assert code == 2
    assert "at='nope' is invalid" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def _build_args(image_folder, out, *extra):
    return ["build", "--encoder", "timm:resnet18", "--at", "layer2", "--image-size", "32",
            "--data", str(image_folder), "--num-atoms", "4", "--out", str(out), "--quiet",
            "--max-iter", "5", *extra]  # fmt: skip


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


USER_ERRORS = {
    "image-size-0": (
        lambda a, t: [*a, "--image-size", "0"],
        r"argument --image-size: 0 is invalid: expected an int >= 1",
    ),
    "not-an-int": (
        lambda a, t: [*a, "--num-atoms", "many"],
        r"argument --num-atoms: 'many' is not an integer",
    ),
    "unknown-flag": (
        lambda a, t: [*a, "--num-atom", "8"],
        r"unrecognized arguments: --num-atom 8 \(did you mean: --num-atom -> --num-atoms\?\)",
    ),
    "at-and-layer": (
        lambda a, t: [*a, "--layer", "layer2"],
        r"error: pass --at only \(--layer is its deprecated name\)",
    ),
    "missing-data": (
        lambda a, t: _set(a, "--data", str(t / "missing")),
        r"--data='.*missing': no such folder or file",
    ),
    "bad-suffix": (
        lambda a, t: _set(a, "--out", str(t / "atoms.pt")),
        r"--out='.*atoms.pt' is invalid: expected a file ending in .safetensors",
    ),
    "out-folder-is-a-file": (
        lambda a, t: _set(a, "--out", str(t / "a-file" / "x.safetensors")),
        r"--out='.*x.safetensors': cannot write into .*a-file \(it is a file, not a folder\)",
    ),
    "plot-folder-is-a-file": (
        lambda a, t: [*a, "--plot", str(t / "a-file" / "p.png")],
        r"--plot='.*p.png': cannot write into .*a-file",
    ),
}


@pytest.mark.parametrize(("change", "message"), USER_ERRORS.values(), ids=USER_ERRORS)
def test_user_errors_are_one_line_and_exit_2(image_folder, tmp_path, capsys, change, message):
    (tmp_path / "a-file").write_text("x")
    argv = change(_build_args(image_folder, tmp_path / "out" / "d.safetensors"), tmp_path)
    assert main(argv) == 2
    assert re.search(message, _one_line_error(capsys))
    assert not (tmp_path / "out" / "d.safetensors").exists()


def test_inspect_a_missing_or_corrupt_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in _one_line_error(capsys)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 3)
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 2
    assert "is not a readable safetensors file" in _one_line_error(capsys)
    assert main(["inspect"]) == 2
    assert "required: path" in _one_line_error(capsys)


def test_read_only_output_folder(image_folder, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: let the folder refuse as it would a user
        import dict_init.cli as cli

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(cli.tempfile, "TemporaryFile", refuse)
    try:
        assert main(_build_args(image_folder, folder / "d.safetensors")) == 2
    finally:
        folder.chmod(0o755)
    message = r"--out=.*cannot write into .*ro \(Permission denied\)"
    assert re.search(message, _one_line_error(capsys))


def test_deprecated_layer_flag_builds_the_same_dictionary(image_folder, tmp_path):
    torch.manual_seed(0)  # the same random resnet18 both times
    assert main(_build_args(image_folder, tmp_path / "new.safetensors")) == 0
    torch.manual_seed(0)
    argv = _build_args(image_folder, tmp_path / "old.safetensors")
    argv[argv.index("--at")] = "--layer"
    with pytest.warns(
        FutureWarning, match=r"^dict-init build: '--layer' is deprecated, use '--at'$"
    ):
        assert main(argv) == 0
    old, new = (Dictionary.load(tmp_path / f"{n}.safetensors") for n in ("old", "new"))
    assert torch.equal(old.atoms, new.atoms) and old.metadata["layer"] == "layer2"


def test_bad_images_fail_by_name_or_are_skipped(image_folder, tmp_path, capsys):
    (image_folder / "9.png").write_bytes(b"garbage")
    out = tmp_path / "out" / "d.safetensors"
    assert main(_build_args(image_folder, out)) == 2
    err = _one_line_error(capsys)
    assert "9.png is not a readable image" in err and "--skip-bad-images" in err
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert main(_build_args(image_folder, out, "--skip-bad-images")) == 0
    assert "skipped 1 unreadable image(s), first: " in capsys.readouterr().out
    assert Dictionary.load(out).metadata["num_skipped_images"] == 1


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
        "build", "--encoder", "timm:resnet18", "--at", "layer2", "--image-size", "32",
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


@pytest.mark.parametrize("argv", [["--bogus-flag"], ["--num-atom", "8", "build"]])
def test_unknown_flag_before_the_command_is_named(argv, capsys):
    # argparse alone says only "the following arguments are required: command"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {argv[0]}" in err and "required: command" not in err
    assert "expected a command first: build, inspect" in err
    if argv[0] == "--num-atom":
        assert "--num-atoms" in err
