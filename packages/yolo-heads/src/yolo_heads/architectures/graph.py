"""A detector built from a layer table: the authors' YOLOv7 / YOLOv9 / rd-9c as data.

A table (``yolov9.yaml``, ``yolov7.yaml`` beside this file) lists layers in sections
``backbone``, ``neck``, ``head``, ``detection`` (layers feeding a segmenter's head, as the
authors' v9-c-seg has) and ``auxiliary``; each layer is ``[source, block, args, tag]``:

- ``source``: ``-1`` (the previous layer), ``input`` (the image), ``-k`` (k layers back), a tag
  of an earlier layer, or a list of those (the block then receives a list).
- ``block``: a name in :data:`~yolo_heads.architectures.blocks.BLOCKS` or a head (``Detect``:
  YOLOv9's head, ``IDetect``: YOLOv7's implicit head, ``Segment``: YOLOv9's head with mask
  coefficients and prototypes, :class:`~yolo_heads.heads.SegmentHead`).
- ``args``: keyword arguments of the block; its input channels are filled in from the sources.
- ``tag`` (optional): a name for later sources; ``B3``/``B4``/``B5`` in the backbone are its
  stride 8/16/32 features (timm's ``feature_info``), ``Main``/``AUX`` are the heads.

Layers are numbered in file order across the sections, as the authors' ``ModuleList`` is, so
their weights map one to one onto the model's ``layers.<i>``. The ``auxiliary`` section is PGI's
branch: it trains with the main head and is skipped (``auxiliary=False``: never built) at
inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .blocks import BLOCKS

SECTIONS = ("backbone", "neck", "head", "detection", "auxiliary")
TABLE_HEADS = ("Detect", "IDetect", "Segment")
HEAD_BLOCKS = (*TABLE_HEADS, "yolo")  # "yolo": the head of a darknet cfg (darknet.py)
INPUT = "input"


@dataclass(frozen=True)
class Layer:
    """One row of a table, with its sources resolved to layer indices (``-1``: the input)."""

    index: int
    block: str
    sources: tuple[int, ...]
    many: bool  # the block takes a list (several sources or a list in the table)
    args: dict[str, Any]
    tag: str | None
    section: str


def _resolve(name: str, index: int, source: Any, tags: dict[str, int]) -> int:
    if source == INPUT:
        return -1
    if isinstance(source, str):
        if source not in tags:
            raise ValueError(
                f"architecture {name!r}, layer {index}: source {source!r} is not a tag of an "
                f"earlier layer; known tags are {sorted(tags)}"
            )
        return tags[source]
    if isinstance(source, bool) or not isinstance(source, int) or source >= 0:
        raise ValueError(
            f"architecture {name!r}, layer {index}: source {source!r} is not valid; expected "
            f"{INPUT!r}, a negative offset (-1 is the previous layer) or a tag"
        )
    if index + source < 0:
        raise ValueError(
            f"architecture {name!r}, layer {index}: source {source} reaches before layer 0"
        )
    return index + source


def parse_table(name: str, table: dict[str, Any]) -> list[Layer]:
    """The layers of one architecture table, sources resolved, blocks checked."""
    unknown = set(table) - {*SECTIONS, "strides", "reg_max", "anchors", "loss", "paper", "source"}
    if unknown:
        raise ValueError(f"architecture {name!r}: unknown keys {sorted(unknown)}")
    layers: list[Layer] = []
    tags: dict[str, int] = {}
    for section in SECTIONS:
        for row in table.get(section) or []:
            index = len(layers)
            if not isinstance(row, list) or not 2 <= len(row) <= 4:
                raise ValueError(
                    f"architecture {name!r}, layer {index}: {row!r} is not "
                    "[source, block, args, tag]"
                )
            source, block, args, tag = [*row, {}, None][:4] if len(row) == 2 else [*row, None][:4]
            if block not in BLOCKS and block not in TABLE_HEADS:
                raise ValueError(
                    f"architecture {name!r}, layer {index}: unknown block {block!r}; known "
                    f"blocks are {sorted([*BLOCKS, *TABLE_HEADS])}"
                )
            many = isinstance(source, list)
            sources = tuple(_resolve(name, index, s, tags) for s in (source if many else [source]))
            layers.append(Layer(index, block, sources, many, dict(args or {}), tag, section))
            if tag is not None:
                if tag in tags:
                    raise ValueError(f"architecture {name!r}: tag {tag!r} is used twice")
                tags[tag] = index
    return layers


class LayerGraph:
    """Runs a table's modules (an ``nn.ModuleList`` owned by the model) along its edges.

    Only outputs that a later layer reads are kept, so memory stays that of a plain network.
    A plain object, not a module: the model's state dict is ``layers.<i>.*`` directly.
    """

    def __init__(self, specs: list[Layer]) -> None:
        self.specs = specs
        self._last_use = {s: layer.index for layer in specs for s in layer.sources}

    def truncated(self, count: int) -> LayerGraph:
        """The graph of the first ``count`` layers."""
        return LayerGraph(self.specs[:count])

    def run(
        self, layers: nn.ModuleList, images: torch.Tensor, stop: int, keep: tuple[int, ...] = ()
    ) -> dict[int, Any]:
        """Outputs of the layers in ``keep`` after running layers ``0 .. stop - 1``."""
        cache: dict[int, Any] = {-1: images}
        wanted = set(keep)
        for spec, module in zip(self.specs[:stop], layers[:stop]):
            inputs = [cache[s] for s in spec.sources]
            cache[spec.index] = module(inputs if spec.many else inputs[0])
            # Free what no later layer (and no caller) reads.
            for s in spec.sources:
                if self._last_use.get(s) == spec.index and s not in wanted:
                    cache.pop(s, None)
        return {i: cache[i] for i in keep}


class BackboneFeatures:
    """timm's feature selection over a layer table's backbone, for the modules built from one
    (``GraphDetector``, ``GraphClassifier``): they hold ``feature_info`` (one dict per backbone
    map, its layer ``index``), ``layers`` and ``graph``."""

    feature_info: list[dict[str, Any]]
    layers: nn.ModuleList
    graph: LayerGraph

    def _feature_picks(self, indices: int | Sequence[int]) -> list[int]:
        n = len(self.feature_info)
        picks = list(range(n - indices, n)) if isinstance(indices, int) else list(indices)
        if not picks or any(not -n <= i < n for i in picks):
            raise ValueError(f"indices={indices!r} is not valid; the backbone has {n} features")
        return [i % n for i in picks]

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 3, **_: Any) -> list[int]:
        """Keep only the layers up to the last backbone feature in ``indices`` (timm's
        ``features_only``); returns the indices, normalised."""
        picks = self._feature_picks(indices)
        last = max(self.feature_info[i]["index"] for i in picks)
        self.layers = self.layers[: last + 1]
        self.graph = self.graph.truncated(last + 1)
        return picks
