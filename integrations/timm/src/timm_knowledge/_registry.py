"""Shared pieces of the registrations: the Hub organisation and pretrained configs.

Every paper configuration gets a ``pretrained_cfg`` whose ``hf_hub_id`` names the repository the
project publishes it under, ``<HUB_ORG>/<model name>.<tag>``; the rest (input size, pooling,
classifier name) comes from timm's own configuration of the base architecture, with the
preprocessing of the authors' training recipe.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import timm

__all__ = ["HUB_ORG", "PAPER_MODELS", "PaperModel", "base_cfg", "hub_id", "weights_hint"]

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


def _hub_id(name: str, tag: str) -> str:
    """``hub_id`` without the checks: the registrations call it before the name exists."""
    return f"{HUB_ORG}/{name}.{tag}"


def hub_id(name: str, tag: str) -> str:
    """The Hub repository of the registered ``name`` with pretrained tag ``tag``.

    Raises ``ValueError`` naming the name or tag when this package registers no such model or
    tag (a repository id for a model that does not exist would only fail later, at download).

    Example:
        >>> hub_id("kw_resnet18_1x", "in1k")
        'knowledge-vision/kw_resnet18_1x.in1k'
    """
    if name not in PAPER_MODELS:
        close = difflib.get_close_matches(str(name), list(PAPER_MODELS), n=3)
        raise ValueError(
            f"hub_id: name={name!r} is not a model of this package; expected a name of "
            f"timm_knowledge.list_paper_models(), e.g. {close or list(PAPER_MODELS)[:3]}"
        )
    tags = [
        n.split(".", 1)[1] for n in timm.list_pretrained(f"{name}.*") if n.split(".")[0] == name
    ]
    if tag not in tags:
        raise ValueError(f"hub_id: tag={tag!r} is not a pretrained tag of {name!r}; it has {tags}")
    return _hub_id(name, tag)


def weights_hint(entrypoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a model entrypoint so that ``pretrained=True`` without the weights (offline and not
    in the cache, or a repository that is not there) names the repository and says how to get
    the weights, instead of huggingface_hub's error that names neither."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    name = entrypoint.__name__

    @functools.wraps(entrypoint)
    def wrapped(pretrained: bool = False, **kwargs: Any) -> Any:
        try:
            return entrypoint(pretrained=pretrained, **kwargs)
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError) as err:
            if not pretrained:
                raise
            cfg = kwargs.get("pretrained_cfg")
            if isinstance(cfg, str):
                cfg = timm.models.get_pretrained_cfg(f"{name}.{cfg}")
            elif cfg is None:
                cfg = timm.models.get_pretrained_cfg(name)
            repo = (
                cfg.get("hf_hub_id") if isinstance(cfg, dict) else getattr(cfg, "hf_hub_id", None)
            )
            raise FileNotFoundError(
                f"{name}(pretrained=True): the weights are the Hub repository {repo!r}, which is "
                f"neither in the local Hugging Face cache nor reachable ({type(err).__name__}; "
                "HF_HUB_OFFLINE=1 or no network). Download it once while online "
                f"(huggingface_hub.snapshot_download({repo!r})), put a local copy in the cache "
                "(hub-knowledge add-to-cache FOLDER REPO_ID), or pass pretrained=False"
            ) from err

    return wrapped


def base_cfg(base: str, **overrides: Any) -> dict[str, Any]:
    cfg = timm.models.get_pretrained_cfg(base).to_dict()
    out = {k: cfg[k] for k in _BASE_FIELDS if k in cfg}
    out["license"] = "apache-2.0"  # the project's published weights
    out.update(overrides)
    return out
