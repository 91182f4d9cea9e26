"""The authors' detectors as data: YOLOv9 t/s/m/c, YOLO-RD's rd-9c and YOLOv7.

Each family is one layer table (``yolov9.yaml``, ``yolov7.yaml``) built by
:class:`GraphDetector` from the blocks in :mod:`yolo_heads.architectures.blocks`.

    >>> sorted(list_architectures())
    ['yolo_rd_9c', 'yolov7', 'yolov9_c', 'yolov9_m', 'yolov9_s', 'yolov9_t']
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

from .blocks import BLOCKS
from .detector import GraphDetector

__all__ = [
    "BLOCKS",
    "GraphDetector",
    "architecture_for",
    "get_architecture",
    "list_architectures",
]

FAMILIES = ("yolov9.yaml", "yolov7.yaml")


@cache
def _tables() -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        text = resources.files(__name__).joinpath(family).read_text(encoding="utf-8")
        tables.update(yaml.safe_load(text))
    return tables


def list_architectures() -> list[str]:
    """Names of the built-in layer tables."""
    return list(_tables())


def get_architecture(name: str) -> dict[str, Any]:
    """A copy of the layer table called ``name``."""
    tables = _tables()
    if name not in tables:
        raise ValueError(
            f"architecture={name!r} is not a known architecture; valid names are {sorted(tables)}"
        )
    return copy.deepcopy(tables[name])


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
