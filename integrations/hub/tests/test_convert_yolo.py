"""convert-yolo: the YOLOv9 / YOLO-RD / YOLOv7 authors' checkpoints as Hub folders with a card.

The authors' released files (hundreds of MB, on GitHub) cannot be downloaded here, so each test
writes a checkpoint in their layout: a seeded GraphDetector's weights under the authors' keys
(``yolo_heads.official.to_authors_key``, the inverse of the key map the loader uses; YOLOv7's
implicit vectors as their [1, C, 1, 1]), saved flat with ``torch.save`` as their ``.pt`` is.
The reference is ``yolo_heads.official.load`` of the same file; the published numbers are
transcribed by hand from the authors' READMEs and the YOLO-RD paper.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
import yaml

pytest.importorskip("yolo_heads", reason="convert-yolo needs the yolo-heads package")

from hub_knowledge import CheckpointError, load
from hub_knowledge.cli import main
from hub_knowledge.converters.yolo import convert_yolo
from yolo_heads import official
from yolo_heads.architectures import GraphDetector, list_architectures
from yolo_heads.official_card import official_card, official_model_card

SIZE = 64

# (AP, AP50) on COCO val2017 as the authors print them, and where:
# WongKinYiu/yolov9 README "Performance"; WongKinYiu/yolov7 README "Testing" (0.51206, 0.69730);
# YOLO-RD paper (arXiv 2410.15346) Table 3 "RD (ours)".
PUBLISHED = {
    "yolov9_t": (38.3, 53.1, "v9-t", "WongKinYiu/yolov9"),
    "yolov9_s": (46.8, 63.4, "v9-s", "WongKinYiu/yolov9"),
    "yolov9_m": (51.4, 68.1, "v9-m", "WongKinYiu/yolov9"),
    "yolov9_c": (53.0, 70.2, "v9-c", "WongKinYiu/yolov9"),
    "yolo_rd_9c": (53.36, 70.55, "rd-9c", "2410.15346"),
    "yolov7": (51.2, 69.7, "v7", "WongKinYiu/yolov7"),
}
RELEASE = "https://github.com/MultimediaTechLab/YOLO/releases/download/v1.0-alpha/"


def _authors_state(name: str, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = GraphDetector(name, **kwargs)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".anchors"):  # a buffer here, an entry of their model table there
            continue
        if key.endswith("running_mean"):  # varied, so that a misplaced statistic shows
            value = 0.1 * torch.randn_like(value)
        elif key.endswith("running_var"):
            value = 1 + 0.1 * torch.rand_like(value)
        theirs = official.to_authors_key(key)
        if theirs.endswith(".implicit"):  # their ImplicitA / ImplicitM hold [1, C, 1, 1]
            value = value.reshape(1, -1, 1, 1)
        state[theirs] = value.clone()
    return state


def _save(state: dict[str, torch.Tensor], path) -> str:
    torch.save(state, path)
    return str(path)


def _image() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every raw output (main and auxiliary heads) and the model's own forward, in eval mode."""
    x = _image()
    out = official.authors_outputs(model.eval(), x)
    with torch.no_grad():
        out.update({f"forward.{i}": y for i, y in enumerate(model(x))})
    return out


def _assert_same_outputs(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    ours = _outputs(model)
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key


@pytest.fixture(scope="module")
def v9t(tmp_path_factory):
    """The authors' v9-t layout on disk, official.load of it (the reference) and its outputs."""
    path = _save(_authors_state("yolov9_t"), tmp_path_factory.mktemp("authors") / "v9-t.pt")
    reference = official.load(path, model="yolov9_t").eval()
    return path, reference, _outputs(reference)


def _rebuilds(folder) -> list[torch.nn.Module]:
    return [load(folder), timm.create_model(f"local-dir:{folder}", pretrained=True)]


def test_cli_and_python_folders_rebuild_the_authors_model_identically(v9t, tmp_path, capsys):
    path, reference, expected = v9t
    assert main(["convert-yolo", path, "--model", "yolov9_t", "--out", str(tmp_path / "cli")]) == 0
    assert "yolov9_t" in capsys.readouterr().out
    model, report = convert_yolo(path, "yolov9_t", tmp_path / "py")
    assert report.max_abs_diff == 0.0 and report.architecture == "yolov9_t"
    assert report.num_params == sum(p.numel() for p in reference.parameters())
    _assert_same_outputs(model, expected)
    for folder in (tmp_path / "cli", tmp_path / "py"):
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.md",
            "config.json",
            "model.safetensors",
        ]
        for rebuilt in _rebuilds(folder):
            assert type(rebuilt).__name__ == "GraphDetector"
            assert rebuilt.aux_head is not None  # the released .pt keeps PGI's auxiliary branch
            _assert_same_outputs(rebuilt, expected)


def test_the_reference_is_the_model_the_checkpoint_was_written_from(v9t):
    # official.load of the authors' layout gives back the seeded model that file was made from
    _, reference, _ = v9t
    torch.manual_seed(0)
    original = GraphDetector("yolov9_t")
    state = {
        k: v for k, v in reference.state_dict().items() if "running_" not in k
    }  # statistics were varied on the way out
    own = {k: v for k, v in original.state_dict().items() if "running_" not in k}
    assert state.keys() == own.keys()
    assert all(torch.equal(state[k], own[k]) for k in own)


def test_yolov7_with_implicit_vectors_round_trips(tmp_path):
    path = _save(_authors_state("yolov7"), tmp_path / "v7.pt")
    expected = _outputs(official.load(path, model="yolov7"))
    model, report = convert_yolo(path, "yolov7", tmp_path / "v7")
    assert report.max_abs_diff == 0.0
    for rebuilt in [model, *_rebuilds(tmp_path / "v7")]:
        _assert_same_outputs(rebuilt, expected)
    card = (tmp_path / "v7" / "README.md").read_text()
    assert "YOLOv7: Trainable bag-of-freebies" in card and "arXiv:2207.02696" in card
    assert f"{RELEASE}v7.pt" in card


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_names_the_paper_the_source_and_the_authors_numbers(v9t, tmp_path):
    path = v9t[0]
    out = tmp_path / "card"
    argv = ["convert-yolo", path, "--model", "yolov9_t", "--out", str(out)]
    assert main([*argv, "--model-name", "me/yolov9-t"]) == 0
    text = (out / "README.md").read_text()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for expected in (
        "YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information",
        "arXiv:2402.13616",
        f"{RELEASE}v9-t.pt",
        "COCO val2017 numbers as reported by the authors, not measured here",
        "| AP@[.5:.95] | 38.3 |",
        "| AP50 | 53.1 |",
        "WongKinYiu/yolov9",
        "`v9-t.pt`",
        digest,
        'timm.create_model("hf-hub:me/yolov9-t", pretrained=True)',
        "@inproceedings{wang2024yolov9",
    ):
        assert expected in text, expected
    meta = _front_matter(text)
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "object-detection"
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["name"] == "COCO val2017"
    assert [m["value"] for m in result["metrics"]] == [38.3, 53.1]
    assert all("reported by the authors" in m["name"] for m in result["metrics"])
    assert "WongKinYiu/yolov9" in result["source"]["url"]

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "yolov9_t"
    assert config["knowledge"]["entrypoint_module"] == "yolo_heads.registry"
    assert config["pretrained_cfg"]["license"] == "mit"  # the authors' weights, their license
    official_meta = config["knowledge"]["official"]
    assert official_meta["reported"]["AP"] == 38.3 and official_meta["reported"]["AP50"] == 53.1
    assert official_meta["reported"]["measured_here"] is False
    assert official_meta["paper"]["arxiv"] == "2402.13616"
    assert config["knowledge"]["converted_from"] == {
        "file": "v9-t.pt",
        "sha256": digest,
        "ema": True,
    }


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_architecture_has_the_authors_published_numbers(name):
    ap, ap50, authors_name, source = PUBLISHED[name]
    card = official_card(name)
    assert card["authors_name"] == authors_name
    assert (card["reported"]["AP"], card["reported"]["AP50"]) == (ap, ap50)
    assert source in card["reported"]["source"] + card["reported"]["source_url"]
    assert card["reported"]["dataset"] == "COCO val2017"
    text = official_model_card(name)
    assert f"| AP@[.5:.95] | {ap} |" in text and f"| AP50 | {ap50} |" in text
    assert card["paper"]["title"] in text and card["paper"]["arxiv"] in text
    if name == "yolo_rd_9c":
        # no released weights: the paper's numbers are stated, but not as this model's results
        assert card["release_url"] is None and "model-index" not in _front_matter(text)
        assert "released no weights" in text
    else:
        assert card["release_url"] == f"{RELEASE}{authors_name}.pt"
        assert _front_matter(text)["model-index"][0]["results"][0]["metrics"][0]["value"] == ap


def test_every_architecture_is_covered():
    """Every detector of the YOLO-RD authors' repository (a layer table); YOLOR's cfg models and
    v9-c-seg have no card yet (MultimediaTechLab printed no numbers for their v9-c-seg, and
    WongKinYiu/yolov9's YOLOv9-C-SEG 53.3 / 43.5 is another build with no AP50)."""
    from yolo_heads.architectures import get_architecture

    tables = [n for n in list_architectures() if n not in ("yolo_cfg", "yolov9_c_seg")]
    assert set(PUBLISHED) == {n for n in tables if "backbone" in get_architecture(n)}


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["convert-yolo", *map(str, argv)])
    return code, capsys.readouterr().err


def test_bad_input_is_reported_in_one_line_and_writes_nothing(v9t, tmp_path, capsys):
    path = v9t[0]
    out = tmp_path / "out"

    code, err = _run(capsys, tmp_path / "missing.pt", "--model", "yolov9_t", "--out", out)
    assert code == 2 and "missing.pt" in err and "does not exist" in err

    code, err = _run(capsys, path, "--model", "yolov9_x", "--out", out)
    assert code == 2 and "model='yolov9_x' is invalid" in err and "'yolov9_t'" in err

    # a checkpoint of another model
    code, err = _run(capsys, path, "--model", "yolov9_s", "--out", out)
    assert code == 2 and "cannot be read as 'yolov9_s'" in err and "does not fit" in err

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    code, err = _run(capsys, tmp_path / "notes.pt", "--model", "yolov9_t", "--out", out)
    assert code == 2 and "weights_only=True" in err
    assert not out.exists() and err.count("\n") == 1

    with pytest.raises(CheckpointError, match=r"cannot be read as 'yolov9_s'"):
        convert_yolo(path, "yolov9_s", out)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        convert_yolo(tmp_path / "missing.pt", "yolov9_t", out)
    with pytest.raises(ValueError, match=r"model='v9-t' is invalid"):
        convert_yolo(path, "v9-t", out)
    assert not out.exists()


def test_other_class_counts_are_refused_rather_than_reinitialised(tmp_path):
    # the card calls every weight the authors': class outputs re-initialised for 80 classes
    # would make that false
    path = _save(_authors_state("yolov9_t", num_classes=3), tmp_path / "three.pt")
    with pytest.raises(CheckpointError, match=r"has shape"):
        convert_yolo(path, "yolov9_t", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_conversion_leaves_an_existing_folder_as_it_was(v9t, tmp_path):
    path, _, expected = v9t
    out = tmp_path / "out"
    convert_yolo(path, "yolov9_t", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CheckpointError):
        convert_yolo(path, "yolov9_s", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _assert_same_outputs(load(out), expected)


def test_the_folder_may_not_hold_the_checkpoint(v9t, tmp_path):
    path = _save(torch.load(v9t[0], weights_only=True), tmp_path / "v9-t.pt")
    with pytest.raises(CheckpointError, match=r"would replace the checkpoint"):
        convert_yolo(path, "yolov9_t", tmp_path)
    assert (tmp_path / "v9-t.pt").is_file()
