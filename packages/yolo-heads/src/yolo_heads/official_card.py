"""What a Hub model card says about the authors' converted checkpoints (MultimediaTechLab/YOLO).

yolo-heads converts the authors' released weights (:mod:`yolo_heads.official`); this module
holds what their card states: the paper, the released checkpoint and the COCO val2017 numbers
**as the authors report them** (not measured here), per architecture of
:mod:`yolo_heads.architectures`. :func:`official_card` gives them as data (also written into
``config.json`` under ``knowledge.official``), :func:`official_model_card` as the README text.

Where the numbers come from (each entry names its source again):

- ``yolov9_t/s/m/c``: the Performance table of the YOLOv9 authors' repository (WongKinYiu/yolov9,
  README.md, "MS COCO", columns AP^val and AP50^val at test size 640).
- ``yolov7``: the "Testing" section of WongKinYiu/yolov7's README.md, the pycocotools summary for
  ``yolov7.pt`` on val2017 at 640 (AP 0.51206, AP50 0.69730). The Performance table of the same
  README gives 51.4 / 69.7 on test-dev, which is another split.
- ``yolo_rd_9c``: the YOLO-RD paper (arXiv 2410.15346), Table 3 "RD (ours)", which is Table 1's
  YOLOv9 row with a CLIP-initialised dictionary (VLM), COCO 2017 val. The authors released no
  rd-9c checkpoint.

The weights the authors released in MultimediaTechLab/YOLO (tag ``v1.0-alpha``) are their own
re-release in that code base's layout; they are reported here with the numbers of the model they
correspond to and were not re-evaluated.

    >>> card = official_card("yolov9_t")
    >>> card["authors_name"], card["reported"]["AP"], card["reported"]["AP50"]
    ('v9-t', 38.3, 53.1)
    >>> card["release_url"]
    'https://github.com/MultimediaTechLab/YOLO/releases/download/v1.0-alpha/v9-t.pt'
    >>> official_card("yolo_rd_9c")["release_url"] is None
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from .architectures import get_architecture, list_architectures

__all__ = [
    "AUTHORS_CODE",
    "LICENSE",
    "PAPERS",
    "RELEASE_URL",
    "REPORTED",
    "official_card",
    "official_model_card",
]

AUTHORS_CODE = "https://github.com/MultimediaTechLab/YOLO"
#: the authors' released checkpoints, by their model name (``v9-t`` ...)
RELEASE_URL = "https://github.com/MultimediaTechLab/YOLO/releases/download/v1.0-alpha/{name}.pt"
#: MultimediaTechLab/YOLO's README: "the official YOLO model implementation with an MIT License"
LICENSE = "mit"
NOT_MEASURED = "COCO val2017 numbers as reported by the authors, not measured here"


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str
    venue: str
    arxiv: str
    citation: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


#: keyed by the ``paper`` field of the layer tables (yolov9.yaml, yolov7.yaml)
PAPERS: dict[str, Paper] = {
    paper.title: paper
    for paper in (
        Paper(
            title="YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information",
            authors="Chien-Yao Wang, I-Hau Yeh, Hong-Yuan Mark Liao",
            venue="ECCV 2024",
            arxiv="2402.13616",
            citation="""@inproceedings{wang2024yolov9,
  title={{YOLOv9}: Learning What You Want to Learn Using Programmable Gradient Information},
  author={Wang, Chien-Yao and Yeh, I-Hau and Liao, Hong-Yuan Mark},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2024}
}""",
        ),
        Paper(
            title="YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time "
            "object detectors",
            authors="Chien-Yao Wang, Alexey Bochkovskiy, Hong-Yuan Mark Liao",
            venue="CVPR 2023",
            arxiv="2207.02696",
            citation="""@inproceedings{wang2023yolov7,
  title={{YOLOv7}: Trainable Bag-of-Freebies Sets New State-of-the-Art for Real-Time Object
         Detectors},
  author={Wang, Chien-Yao and Bochkovskiy, Alexey and Liao, Hong-Yuan Mark},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2023}
}""",
        ),
        Paper(
            title="YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO by "
            "Retriever-Dictionary",
            authors="Hao-Tang Tsui, Chien-Yao Wang, Hong-Yuan Mark Liao",
            venue="ICLR 2025",
            arxiv="2410.15346",
            citation="""@inproceedings{tsui2025yolord,
  title={{YOLO-RD}: Introducing Relevant and Compact Explicit Knowledge to {YOLO} by
         Retriever-Dictionary},
  author={Tsui, Hao-Tang and Wang, Chien-Yao and Liao, Hong-Yuan Mark},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2025}
}""",
        ),
    )
}

_V9_README = (
    "WongKinYiu/yolov9 README.md, Performance table (MS COCO, test size 640, AP^val / AP50^val)",
    "https://github.com/WongKinYiu/yolov9#performance",
)

#: architecture -> the authors' COCO val2017 box AP and AP50 (%), where they are printed, and a
#: note when the number needs one. Transcribed by hand from the sources named in each entry.
REPORTED: dict[str, dict[str, Any]] = {
    "yolov9_t": {"AP": 38.3, "AP50": 53.1, "source": _V9_README[0], "source_url": _V9_README[1]},
    "yolov9_s": {"AP": 46.8, "AP50": 63.4, "source": _V9_README[0], "source_url": _V9_README[1]},
    "yolov9_m": {"AP": 51.4, "AP50": 68.1, "source": _V9_README[0], "source_url": _V9_README[1]},
    "yolov9_c": {"AP": 53.0, "AP50": 70.2, "source": _V9_README[0], "source_url": _V9_README[1]},
    "yolo_rd_9c": {
        "AP": 53.36,
        "AP50": 70.55,
        "source": "YOLO-RD paper (arXiv 2410.15346), Table 3 'RD (ours)' = Table 1 'YOLOv9 VLM' "
        "(COCO 2017 val)",
        "source_url": "https://arxiv.org/abs/2410.15346",
        "note": "dictionary initialised from CLIP (their VLM row); initialised from a vision "
        "model (VM) they report 53.41 / 70.57. Their re-trained YOLOv9-C baseline: 52.64 / 69.56",
    },
    "yolov7": {
        "AP": 51.2,
        "AP50": 69.7,
        "source": "WongKinYiu/yolov7 README.md, Testing section (pycocotools on val2017 at 640 "
        "for yolov7.pt: AP 0.51206, AP50 0.69730)",
        "source_url": "https://github.com/WongKinYiu/yolov7#testing",
        "note": "the README's Performance table (51.4 / 69.7) is COCO test-dev",
    },
}


def _check_architecture(architecture: Any) -> str:
    valid = list_architectures()
    if not isinstance(architecture, str) or architecture not in REPORTED:
        raise ValueError(
            f"architecture={architecture!r} is not one of the authors' models with published "
            f"numbers; valid names are {sorted(valid)}"
        )
    return architecture


def official_card(architecture: str) -> dict[str, Any]:
    """The card metadata for the authors' ``architecture`` (``"yolov9_t"`` ... ``"yolov7"``).

    Keys: ``architecture``, ``authors_name`` (their model name, ``v9-t``), ``paper`` (title,
    authors, venue, arxiv, url, citation), ``authors_code``, ``release_url`` (``None`` where they
    released no checkpoint), ``license`` and ``reported`` (``AP``, ``AP50`` in %, ``dataset``,
    ``source``, ``source_url``, ``note``, ``measured_here: False``, ``statement``). Plain JSON
    types.
    """
    name = _check_architecture(architecture)
    table = get_architecture(name)
    authors_name = table["source"]
    paper = PAPERS[table["paper"]]
    reported = copy.deepcopy(REPORTED[name])
    reported.setdefault("note", "")
    reported.update(dataset="COCO val2017", measured_here=False, statement=NOT_MEASURED)
    return {
        "architecture": name,
        "authors_name": authors_name,
        "paper": {
            "title": paper.title,
            "authors": paper.authors,
            "venue": paper.venue,
            "arxiv": paper.arxiv,
            "url": paper.url,
            "citation": paper.citation,
        },
        "authors_code": AUTHORS_CODE,
        # rd-9c has a table in their repository but no released weights
        "release_url": None if name == "yolo_rd_9c" else RELEASE_URL.format(name=authors_name),
        "license": LICENSE,
        "reported": reported,
    }


def _front_matter(card: dict[str, Any], name: str) -> str:
    reported = card["reported"]
    family = "yolo-rd" if card["architecture"] == "yolo_rd_9c" else card["architecture"][:6]
    data: dict[str, Any] = {
        "library_name": "timm",
        "license": card["license"],
        "pipeline_tag": "object-detection",
        "tags": ["object-detection", "timm", "yolo-heads", family, "converted-checkpoint"],
    }
    if card["release_url"] is None:
        # no released weights: the paper's numbers are not this folder's results, so they stay
        # out of the model-index the Hub shows as the model's evaluation
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    data["model-index"] = [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "object-detection", "name": "Object Detection"},
                    "dataset": {"name": "COCO val2017", "type": "coco", "split": "validation"},
                    "metrics": [
                        {
                            "type": "mAP",
                            "name": "AP@[.5:.95] (reported by the authors)",
                            "value": reported["AP"],
                        },
                        {
                            "type": "mAP@0.5",
                            "name": "AP50 (reported by the authors)",
                            "value": reported["AP50"],
                        },
                    ],
                    "source": {"name": reported["source"], "url": reported["source_url"]},
                }
            ],
        }
    ]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def official_model_card(
    architecture: str,
    *,
    converted_from: str | None = None,
    sha256: str | None = None,
    repo_id: str | None = None,
    num_params: int | None = None,
    auxiliary: bool | None = None,
) -> str:
    """The README.md (Hub metadata plus body) for the authors' ``architecture`` converted here.

    Args:
        converted_from: the file that was converted (its name is shown), if any.
        sha256: that file's SHA-256, shown so a reader can check it against the release.
        repo_id: the Hub repository the folder is published as (used in the usage snippet).
        num_params: parameter count of the converted model.
        auxiliary: whether the folder keeps PGI's auxiliary branch (YOLOv9 training only).
    """
    card = official_card(architecture)
    paper, reported = card["paper"], card["reported"]
    name = repo_id.split("/")[-1] if repo_id else card["architecture"]
    where = f"hf-hub:{repo_id}" if repo_id else "local-dir:<this folder>"
    source = (
        f"[`{card['authors_name']}.pt`]({card['release_url']}) from the authors' release "
        f"({card['authors_code']}, tag v1.0-alpha)"
        if card["release_url"]
        else f"none (the authors published the `{card['authors_name']}` layer table in "
        f"{card['authors_code']} but no weights)"
    )
    released = card["release_url"] is not None
    origin = (
        "The weights are the authors', trained and released by them; only their names and "
        "layout were converted, no value was changed."
        if released
        else "The authors released no weights for this model: the weights here are a "
        "checkpoint in their layout converted to this one, and the numbers below are the "
        "paper's for the authors' own model, not results of these weights."
    )
    lines = [
        f"# {name}",
        "",
        f"The authors' **{card['authors_name']}** detector from *{paper['title']}* "
        f"({paper['authors']}; {paper['venue']}; [arXiv:{paper['arxiv']}]({paper['url']})), "
        f"as yolo-heads' `{card['architecture']}` (a timm model). {origin}",
        "",
        "## Source checkpoint",
        "",
        f"- released checkpoint: {source}",
    ]
    if converted_from:
        lines.append(f"- converted file: `{converted_from}`")
    if sha256:
        lines.append(f"- SHA-256 of the converted file: `{sha256}`")
    lines += [
        f"- authors' code: {card['authors_code']} (license: {card['license'].upper()})",
        "",
        "## COCO results (the authors')",
        "",
        f"{NOT_MEASURED}.",
        "",
        "| metric | value (%) |",
        "|---|---|",
        f"| AP@[.5:.95] | {reported['AP']} |",
        f"| AP50 | {reported['AP50']} |",
        "",
        f"Source: {reported['source']} ({reported['source_url']}).",
    ]
    if reported["note"]:
        lines += ["", f"Note: {reported['note']}."]
    lines += ["", "## Model details", "", "| | |", "|---|---|"]
    lines.append(f"| architecture | `{card['architecture']}` (authors: `{card['authors_name']}`) |")
    if num_params is not None:
        lines.append(f"| parameters | {num_params / 1e6:.2f} M |")
    if auxiliary is not None:
        lines.append(f"| PGI auxiliary branch | {'kept' if auxiliary else 'not included'} |")
    lines.append(
        "| input | RGB in [0, 1], not normalised; sides multiples of 32 (640 in the paper) |"
    )
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import timm",
        "import yolo_heads  # registers the authors' architectures in timm's factory",
        "",
        f'model = timm.create_model("{where}", pretrained=True).eval()',
        "# or, with every check on the weights: hub_knowledge.load(...)",
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        paper["citation"],
        "```",
    ]
    return f"---\n{_front_matter(card, name)}---\n\n" + "\n".join(lines) + "\n"
