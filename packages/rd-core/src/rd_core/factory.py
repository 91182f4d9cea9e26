"""Any timm model with Retriever-Dictionaries, as one architecture in timm's factory.

``with_rd`` builds ``base_architecture`` with timm, inserts the RDs described by
``rd_attachments`` (entries of :func:`~rd_core.attachments`, or short ones such as
``{"at": "layer3", "num_atoms": 64}`` whose channel count is found by a probing forward pass)
and then does what timm's factory does for any model: pretrained weights (``hf-hub:`` /
``local-dir:`` sources included), ``features_only`` / ``out_indices`` through the base
architecture's own feature wrapper, with the RDs in it.

:func:`export_config` is how a model that got its RDs from :func:`~rd_core.attach` after
``timm.create_model`` is published: it turns the model's timm ``config.json`` into one naming
``with_rd`` with the base architecture and the attachments as build arguments, so
``timm.create_model("hf-hub:<repo>", pretrained=True)`` (after ``import rd_core``) rebuilds
the attachment before it loads the weights. hub-knowledge calls it through
:data:`rd_core.HUB_METADATA`.

Example:
    >>> import timm, torch
    >>> import rd_core  # registers with_rd
    >>> model = timm.create_model("with_rd", base_architecture="resnet18",
    ...                           rd_attachments=[{"at": "layer3", "num_atoms": 32}])
    >>> list(rd_core.attached(model)), model(torch.randn(1, 3, 64, 64)).shape
    (['layer3'], torch.Size([1, 1000]))
    >>> features = timm.create_model("with_rd", base_architecture="resnet18",
    ...     rd_attachments=[{"at": "layer3", "num_atoms": 32}], features_only=True,
    ...     out_indices=(2, 3))
    >>> [f.shape[1] for f in features(torch.randn(1, 3, 64, 64))]
    [128, 256]
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .attach import _resolve, attach, attachments, reattach

__all__ = ["ARCHITECTURE", "export_config", "with_rd"]

ARCHITECTURE = "with_rd"
# arguments of timm's feature wrappers, not of the base model
_FEATURE_ARGS = ("out_indices", "feature_cls", "feature_cfg", "out_map")
# channels do not depend on resolution: a short entry's probing pass runs at this size
_PROBE_SIZE = 64

default_cfgs = generate_default_cfgs(
    {
        ARCHITECTURE: {
            "license": "apache-2.0",
            "paper_ids": "arXiv:2410.15346",
            "notes": ("any timm architecture with Retriever-Dictionaries (YOLO-RD)",),
        }
    }
)


def _check_entries(rd_attachments: Any) -> list[dict[str, Any]]:
    if isinstance(rd_attachments, Mapping) or not isinstance(rd_attachments, Sequence):
        raise ValueError(
            f"rd_attachments={rd_attachments!r} must be a list of dicts with an 'at' key "
            "(the output of rd_core.attachments(model), or e.g. [{'at': 'layer3'}])"
        )
    entries = []
    for entry in rd_attachments:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("at"), str):
            raise ValueError(
                f"rd_attachments: entry {entry!r} must be a dict with an 'at' module name"
            )
        entries.append(dict(entry))
    return entries


def _insert(model: nn.Module, entries: list[dict[str, Any]], in_chans: int) -> None:
    """Insert ``entries`` into ``model``; those already there (the architecture adds them) stay."""
    present = {a["at"]: a for a in attachments(model)}
    for entry in entries:
        at = entry["at"]
        if at in present:
            theirs = {k: present[at][k] for k in entry if k in present[at]}
            if theirs != entry:
                raise ValueError(
                    f"rd_attachments: {at!r} already carries an RD {present[at]} that differs "
                    f"from {entry}"
                )
            continue
        if "in_channels" in entry:
            reattach(model, [entry])
        else:  # a short entry: the channels come from one probing pass
            options = {k: v for k, v in entry.items() if k != "at"}
            for key in ("layout", "num_prefix_tokens", "grid_size"):
                if options.get(key) is None:
                    options.pop(key, None)
            # fixed-size models (ViTs) are probed at their own size, the rest at a small one
            owner = getattr(model, "model", model)  # timm's FeatureGetterNet nests the ViT
            embed = getattr(model, "patch_embed", None) or getattr(owner, "patch_embed", None)
            size = getattr(embed, "img_size", None)
            size = (_PROBE_SIZE, _PROBE_SIZE) if size is None else tuple(size)
            attach(model, at=at, image_size=size, in_chans=in_chans, **options)


def _build(base_architecture: str, entries: list[dict[str, Any]], **kwargs: Any) -> nn.Module:
    model = timm.create_model(base_architecture, pretrained=False, **kwargs)
    _insert(model, entries, kwargs.get("in_chans", 3))
    return model


def _resolvable(model: nn.Module, at: str) -> bool:
    try:
        _resolve(model, at)
    except ValueError:
        return False
    return True


def _features_state(source: Mapping[str, torch.Tensor], target: Mapping[str, Any]) -> dict:
    """``source`` (a whole model's state dict) under the key names of its feature wrapper.

    timm's wrappers keep the wrapped modules but rename them: ``FeatureListNet`` flattens the
    first level of sequential containers (``stages.2.x`` -> ``stages_2.x``), ``FeatureGetterNet``
    nests the model under ``model.``; what the wrapper dropped (the head) is left out.
    """
    out = {}
    for key, value in source.items():
        head, dot, rest = key.partition(".")
        child, dot2, deeper = rest.partition(".")
        flat = f"{head}_{child}" + (f".{deeper}" if dot2 else "") if dot else key
        for candidate in (key, flat, f"model.{key}"):
            if candidate in target:
                out[candidate] = value
                break
    return out


@register_model
def with_rd(
    pretrained: bool = False,
    *,
    base_architecture: str | None = None,
    rd_attachments: Sequence[Mapping[str, Any]] = (),
    **kwargs: Any,
) -> nn.Module:
    """timm's ``base_architecture`` with the Retriever-Dictionaries in ``rd_attachments``.

    Args:
        pretrained: load the weights named by ``pretrained_cfg`` (a Hub repo or local folder
            written from a model with the same attachments).
        base_architecture: any architecture registered in timm's factory.
        rd_attachments: where and which RDs: :func:`rd_core.attachments` entries, or dicts
            with ``at`` plus any :class:`~rd_core.RetrieverDictionary` arguments.
        **kwargs: the base architecture's arguments, and timm's ``features_only`` /
            ``out_indices`` / ``feature_cls``.
    """
    if not isinstance(base_architecture, str) or not timm.is_model(base_architecture):
        raise ValueError(
            f"with_rd: base_architecture={base_architecture!r} is not an architecture in "
            "timm's factory (timm.list_models() lists them; import the package that registers "
            "it first)"
        )
    entries = _check_entries(rd_attachments)
    if kwargs.get("pretrained_cfg") is None:
        # the base's preprocessing (mean, std, input size), without its weights' location:
        # those weights have no RDs
        base = timm.models.get_pretrained_cfg(base_architecture)
        base = {} if base is None else base.to_dict()
        for key in ("url", "file", "hf_hub_id", "hf_hub_filename", "state_dict", "tag"):
            base.pop(key, None)
        kwargs["pretrained_cfg"] = {
            **base,
            **default_cfgs[ARCHITECTURE].default.to_dict(),
            **{k: v for k, v in base.items() if k not in ("license", "notes", "paper_ids")},
            "architecture": ARCHITECTURE,
        }
    features_only = kwargs.pop("features_only", False)
    feature_args = {k: kwargs.pop(k) for k in _FEATURE_ARGS if k in kwargs}
    if features_only and not pretrained:
        # timm's own feature wrapper for the base, then the RDs under its module names
        features = timm.create_model(
            base_architecture, pretrained=False, features_only=True, **feature_args, **kwargs
        )
        keep = [e for e in entries if _resolvable(features, e["at"])]
        _insert(features, keep, kwargs.get("in_chans", 3))
        return features
    model = build_model_with_cfg(
        partial(_build, base_architecture, entries), ARCHITECTURE, pretrained, **kwargs
    )
    if not features_only:
        return model
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    features = timm.create_model(
        base_architecture, pretrained=False, features_only=True, **feature_args, **kwargs
    )
    # the RDs in the part of the network the wrapper keeps (one after its last output is moot)
    keep = [a for a in attachments(model) if _resolvable(features, a["at"])]
    _insert(features, keep, kwargs.get("in_chans", 3))
    wanted = features.state_dict()
    state = _features_state(model.state_dict(), wanted)
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise RuntimeError(
            f"with_rd: features_only=True: the wrapper's {missing[:5]} have no counterpart "
            "in the pretrained model"
        )
    features.load_state_dict(state)
    features.pretrained_cfg = getattr(model, "pretrained_cfg", {})
    return features


def _rebuilds_them(architecture: str, model_args: Mapping[str, Any], found: list) -> bool:
    """Whether timm's ``architecture`` with ``model_args`` already inserts exactly ``found``."""
    for device in ("meta", "cpu"):
        try:
            rebuilt = timm.create_model(
                architecture, pretrained=False, device=device, **dict(model_args)
            )
        except (RuntimeError, NotImplementedError):  # an op without a meta kernel
            continue
        return attachments(rebuilt) == found
    return False


def export_config(model: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (timm's ``config.json`` for ``model``) rewritten so it rebuilds the RDs.

    A model whose architecture already builds its RDs (``with_rd``, or e.g. a registered
    ``rd_resnet18``) keeps its config; one that got them from :func:`~rd_core.attach` after
    ``timm.create_model`` becomes ``with_rd`` with ``base_architecture`` and
    ``rd_attachments`` among its ``model_args``.

    Example:
        >>> import timm
        >>> from rd_core import attach
        >>> model = timm.create_model("resnet18")
        >>> _ = attach(model, at="layer3", num_atoms=16, image_size=32)
        >>> config = export_config(model, {"architecture": "resnet18", "model_args": {}})
        >>> config["architecture"], config["model_args"]["base_architecture"]
        ('with_rd', 'resnet18')
        >>> [a["at"] for a in config["model_args"]["rd_attachments"]]
        ['layer3']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_config: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(
            f"export_config: config={config!r} is invalid: expected timm's config.json as a "
            "dict with an 'architecture' name"
        )
    found = attachments(model)
    if not found:
        return config
    config = copy.deepcopy(config)
    architecture = config["architecture"]
    model_args = dict(config.get("model_args") or {})
    if architecture == ARCHITECTURE:
        model_args["rd_attachments"] = found
    elif not _rebuilds_them(architecture, model_args, found):
        model_args = {"base_architecture": architecture, "rd_attachments": found, **model_args}
        config["architecture"] = ARCHITECTURE
    config["model_args"] = model_args
    return config
