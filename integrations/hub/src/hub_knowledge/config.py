"""``config.json`` in timm's format, plus a ``knowledge`` section describing lineage.

timm reads ``architecture``, ``num_classes``, ``model_args`` and ``pretrained_cfg`` (see
``timm.models._hub``), so ``timm.create_model("hf-hub:<repo>", pretrained=True)`` rebuilds the model
with the same build arguments (a KernelWarehouse budget, a dictionary size...) before loading the
weights. The extra ``knowledge`` key is ignored by timm and read by :func:`hub_knowledge.load`.

Example:
    >>> import timm
    >>> config = build_config(timm.create_model("resnet10t", num_classes=5))
    >>> config["architecture"], config["num_classes"], config["model_args"]["num_classes"]
    ('resnet10t', 5, 5)
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from timm.models import model_entrypoint
from timm.models._hub import save_config_for_hf
from torch import nn

from ._checks import check_mapping, check_module, check_names
from .methods import detect_methods

__all__ = ["CONFIG_NAME", "architecture_of", "build_config"]

CONFIG_NAME = "config.json"


def architecture_of(model: nn.Module) -> str:
    """The timm registry name ``model`` was built from; a clear error if it has none."""
    cfg = getattr(model, "pretrained_cfg", None)
    architecture = (cfg or {}).get("architecture")
    if not architecture:
        raise ValueError(
            f"model={model.__class__.__name__} carries no pretrained_cfg['architecture']; "
            "build it with timm.create_model(<registered name>, ...) so it can be rebuilt from "
            "config.json"
        )
    if not timm.is_model(architecture):
        raise ValueError(
            f"model architecture={architecture!r} is not registered in timm's factory, so "
            "timm.create_model could not rebuild it; register it (e.g. import timm_knowledge)"
        )
    return architecture


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def build_config(
    model: nn.Module,
    *,
    model_args: Mapping[str, Any] | None = None,
    data_config: Mapping[str, Any] | None = None,
    label_names: list[str] | None = None,
    lineage: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content for ``model``.

    Args:
        model: a model built by ``timm.create_model`` (any registered architecture).
        model_args: build arguments to record in addition to those timm's factory recorded
            (JSON-serialisable), e.g. ``{"budget": 0.5}`` for a model built another way.
        data_config: preprocessing to record (input_size, mean, std, crop_pct...).
        label_names: class names, index by index.
        lineage: where the model came from, e.g. ``{"base_model": "timm/resnet18.a1_in1k",
            "dictionary": "knowledge-vision/rd-dict-..."}``; stored under ``knowledge``.
    """
    from . import __version__

    architecture = architecture_of(model)
    model_config: dict[str, Any] = {}
    check_module("model", model)
    check_mapping("model_args", model_args)
    check_mapping("data_config", data_config)
    check_mapping("lineage", lineage)
    check_names("label_names", label_names)
    if label_names is not None:
        if len(label_names) != getattr(model, "num_classes", len(label_names)):
            raise ValueError(
                f"label_names has {len(label_names)} entries; the model has "
                f"{model.num_classes} classes"
            )
        model_config["label_names"] = list(label_names)
    # Build arguments that cannot go into JSON (initial dictionary atoms, a tensor) only
    # initialise parameters; the saved weights hold their values, so they are left out.
    recorded = getattr(model, "_model_args", {}) or {}
    held_by_weights = sorted(k for k, v in recorded.items() if not _json_ready(v))
    model_args = {**dict.fromkeys(held_by_weights), **dict(model_args or {})}
    # timm's exporter reads model.num_features (information only); detectors have none
    lacks_num_features = not hasattr(model, "num_features")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CONFIG_NAME
        if lacks_num_features:
            model.num_features = None
        try:
            save_config_for_hf(
                model,
                str(path),
                model_config=model_config,
                model_args=dict(model_args or {}),
                data_config=dict(data_config or {}) or None,
            )
        finally:
            if lacks_num_features:
                del model.num_features
        config = json.loads(path.read_text())
    for key in held_by_weights:
        if config.get("model_args", {}).get(key) is None:
            config["model_args"].pop(key, None)
    if config["architecture"] != architecture:  # timm took it from the same field
        raise AssertionError("timm wrote a different architecture than the model carries")
    methods = detect_methods(model)
    # A method package may rewrite the config so timm's factory rebuilds what it added to the
    # model after timm.create_model (rd-core: RDs attached later become ``with_rd``).
    for method in methods:
        if method.export_config is not None:
            config = method.export_config(model, config)
    config["knowledge"] = {
        "producer": f"hub-knowledge {__version__}",
        "methods": list(dict.fromkeys(m.tag for m in methods)),
        "requires": list(dict.fromkeys(m.package for m in methods)),
        # the module whose import registers the architecture (timm's own, or a project package)
        "entrypoint_module": model_entrypoint(config["architecture"]).__module__,
        "lineage": dict(lineage or {}),
    }
    if held_by_weights:
        config["knowledge"]["build_args_held_by_weights"] = held_by_weights
    return config
