"""Shared pieces of the registrations: the Hub organisation and pretrained configs.

Every paper configuration gets a ``pretrained_cfg`` whose ``hf_hub_id`` names the repository the
project publishes it under, ``<HUB_ORG>/<model name>.<tag>``; the rest (input size, pooling,
classifier name) comes from timm's own configuration of the base architecture, with the
preprocessing of the authors' training recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm

__all__ = ["HUB_ORG", "PAPER_MODELS", "PaperModel", "base_cfg", "hub_id"]

HUB_ORG = "knowledge-vision"

# timm's pretrained_cfg fields describing the architecture's input and head, kept from the base
_BASE_FIELDS = (
    "input_size",
    "pool_size",
    "first_conv",
    "classifier",
    "fixed_input_size",
    "mean",
    "std",
    "num_classes",
)


@dataclass(frozen=True)
class PaperModel:
    """One named configuration: what it is built from and what the paper reports."""

    name: str
    base: str  # timm architecture it is built from
    method: str  # "kernelwarehouse" | "yolo-rd"
    build_args: dict[str, Any] = field(default_factory=dict)
    paper_params_m: float | None = None  # parameter count the paper reports, in millions
    source: str = ""  # where the configuration comes from (paper table)


PAPER_MODELS: dict[str, PaperModel] = {}


def hub_id(name: str, tag: str) -> str:
    """The Hub repository of ``name`` with pretrained tag ``tag``.

    Example:
        >>> hub_id("kw_resnet18_1x", "in1k")
        'knowledge-vision/kw_resnet18_1x.in1k'
    """
    return f"{HUB_ORG}/{name}.{tag}"


def base_cfg(base: str, **overrides: Any) -> dict[str, Any]:
    cfg = timm.models.get_pretrained_cfg(base).to_dict()
    out = {k: cfg[k] for k in _BASE_FIELDS if k in cfg}
    out["license"] = "apache-2.0"  # the project's published weights
    out.update(overrides)
    return out
