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

__all__ = [
    "HUB_ORG",
    "PAPER_MODELS",
    "PUBLISHED_WEIGHTS",
    "PaperModel",
    "base_cfg",
    "hub_id",
    "unlist_unpublished",
    "weights_hint",
]

HUB_ORG = "knowledge-vision"

# ``name.tag`` of the configurations whose Hub repository holds uploaded weights. None yet: the
# development machines cannot reach the Hub. Only these are listed by
# ``timm.list_models(pretrained=True)`` and downloaded; the others load from a copy in the local
# Hugging Face cache (``hub-knowledge add-to-cache``) or fail at once, naming the repository.
PUBLISHED_WEIGHTS: frozenset[str] = frozenset()

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
    tags = [cfg.tag for cfg in timm.models.get_arch_pretrained_cfgs(name).values() if cfg.tag]
    if tag not in tags:
        raise ValueError(f"hub_id: tag={tag!r} is not a pretrained tag of {name!r}; it has {tags}")
    return _hub_id(name, tag)


def unlist_unpublished(names: list[str]) -> None:
    """Leave the tags of ``names`` that are not in :data:`PUBLISHED_WEIGHTS` out of
    ``timm.list_models(pretrained=True)`` (timm lists every tag with a Hub id, uploaded or not).

    >>> import timm, timm_knowledge
    >>> timm.list_models("kw_resnet18_*", pretrained=True)
    []
    """
    from timm.models import _registry as timm_registry

    listed = getattr(timm_registry, "_model_has_pretrained", None)
    if not isinstance(listed, set):  # timm's internals changed: its listing stays as it is
        return
    for name in names:
        tagged = list(timm.models.get_arch_pretrained_cfgs(name))
        listed.difference_update(t for t in tagged if t not in PUBLISHED_WEIGHTS)
        if not any(t in PUBLISHED_WEIGHTS for t in tagged):
            listed.discard(name)


def _field(cfg: Any, key: str) -> Any:
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def _resolved_cfg(name: str, cfg: Any) -> Any:
    """The pretrained cfg an entrypoint gets as a tag, a cfg or None (the default tag)."""
    if isinstance(cfg, str):
        return timm.models.get_pretrained_cfg(f"{name}.{cfg}")
    return timm.models.get_pretrained_cfg(name) if cfg is None else cfg


def _cached_weights(repo: str, cache_dir: Any) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(path, str):
            return path
    return None


def _unpublished_source(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` that load unpublished weights from the local cache without touching the
    network (which would only fail, after huggingface_hub's retries); raises at once naming the
    repository when there is no local copy."""
    cfg = _resolved_cfg(name, kwargs.get("pretrained_cfg"))
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    explicit = any(_field(cfg, k) or overlay.get(k) for k in ("file", "url", "state_dict"))
    repo, tag = _field(cfg, "hf_hub_id"), _field(cfg, "tag")
    if explicit or _field(cfg, "source") or not repo or f"{name}.{tag}" in PUBLISHED_WEIGHTS:
        return kwargs  # weights the caller names, an hf-hub: name, or a published repository
    path = _cached_weights(repo, kwargs.get("cache_dir"))
    if path is None:
        raise FileNotFoundError(
            f"{name}(pretrained=True): no weights are published for it yet; they would be the "
            f"Hub repository {repo!r}, which is not in the local Hugging Face cache either. Put "
            f"a local copy in the cache (hub-knowledge add-to-cache FOLDER {repo}), load a "
            "checkpoint folder (timm.create_model('local-dir:FOLDER', pretrained=True)), or pass "
            "pretrained=False"
        )
    return {**kwargs, "pretrained_cfg_overlay": {**overlay, "file": path}}


def weights_hint(entrypoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a model entrypoint so that ``pretrained=True`` without the weights names the
    repository and says how to get the weights, instead of huggingface_hub's error that names
    neither: at once for weights that are not published (:data:`PUBLISHED_WEIGHTS`) and not in
    the local cache; for published ones when offline and not in the cache."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    name = entrypoint.__name__

    @functools.wraps(entrypoint)
    def wrapped(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            kwargs = _unpublished_source(name, kwargs)
        try:
            return entrypoint(pretrained=pretrained, **kwargs)
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError) as err:
            if not pretrained:
                raise
            repo = _field(_resolved_cfg(name, kwargs.get("pretrained_cfg")), "hf_hub_id")
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
