"""The authors' detectors as data: YOLOv9 t/s/m/c, YOLO-RD's rd-9c, YOLOv7 and YOLOR.

Each YOLO-RD-repo family is one layer table (``yolov9.yaml``, ``yolov7.yaml``) built by
:class:`GraphDetector` from the blocks in :mod:`yolo_heads.architectures.blocks`; YOLOR's
detectors (``yolor.yaml``) are the authors' darknet cfg files (``cfg/``) read by
:mod:`yolo_heads.architectures.darknet`, and ``yolo_cfg`` builds any cfg file of the user's.
The classifier tables (v9-c-cls, :func:`list_classifiers`) build a :class:`GraphClassifier`.

    >>> sorted(list_architectures())  # doctest: +NORMALIZE_WHITESPACE
    ['yolo_cfg', 'yolo_rd_9c', 'yolor_csp', 'yolor_csp_x', 'yolor_p6', 'yolor_w6', 'yolov7',
     'yolov9_c', 'yolov9_c_seg', 'yolov9_m', 'yolov9_s', 'yolov9_t']
    >>> list_classifiers()
    ['yolov9_c_cls', 'yolo_rd_9c_cls']
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

from .blocks import BLOCKS
from .classifier import GraphClassifier, is_classifier_table
from .detector import GraphDetector

__all__ = [
    "BLOCKS",
    "GraphClassifier",
    "GraphDetector",
    "architecture_for",
    "build_architecture",
    "get_architecture",
    "get_cfg",
    "list_architectures",
    "list_classifiers",
]

FAMILIES = ("yolov9.yaml", "yolov7.yaml", "yolor.yaml")
#: the architecture that builds a user's darknet cfg (``cfg=`` path or text)
CFG_ARCHITECTURE = "yolo_cfg"


@cache
def _tables() -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        text = resources.files(__name__).joinpath(family).read_text(encoding="utf-8")
        tables.update(yaml.safe_load(text))
    return tables


def list_architectures() -> list[str]:
    """Names of the built-in detector tables (:class:`GraphDetector`)."""
    return [name for name, table in _tables().items() if not is_classifier_table(table)]


def list_classifiers() -> list[str]:
    """Names of the built-in classifier tables (:class:`GraphClassifier`)."""
    return [name for name, table in _tables().items() if is_classifier_table(table)]


def build_architecture(name: str, **kwargs: Any) -> GraphDetector | GraphClassifier:
    """The model of the table ``name``: a :class:`GraphClassifier` for a classifier table, a
    :class:`GraphDetector` otherwise; ``kwargs`` go to its constructor."""
    if name in list_classifiers():
        return GraphClassifier(name, **kwargs)
    return GraphDetector(name, **kwargs)


def get_architecture(name: str) -> dict[str, Any]:
    """A copy of the layer table called ``name``."""
    tables = _tables()
    if name not in tables:
        raise ValueError(
            f"architecture={name!r} is not a known architecture; valid names are {sorted(tables)}"
        )
    return copy.deepcopy(tables[name])


def get_cfg(name: str) -> str:
    """The darknet cfg text shipped for the architecture ``name`` (``yolor_csp`` ...)."""
    table = get_architecture(name)
    if not table.get("cfg"):
        with_cfg = sorted(k for k, t in _tables().items() if t.get("cfg"))
        raise ValueError(f"architecture={name!r} has no cfg file; these do: {with_cfg}")
    return resources.files(__name__).joinpath("cfg", table["cfg"]).read_text(encoding="utf-8")


def architecture_for(authors_name: str) -> str:
    """Our name for the authors' model name (their yaml's ``name``: ``"v9-t"`` -> ``"yolov9_t"``).

    >>> architecture_for("rd-9c")
    'yolo_rd_9c'
    """
    found = {table.get("source"): name for name, table in _tables().items()}
    if authors_name not in found:
        raise ValueError(
            f"authors_name={authors_name!r} is not one of the authors' models built here; "
            f"valid names are {sorted(k for k in found if k)}"
        )
    return found[authors_name]
