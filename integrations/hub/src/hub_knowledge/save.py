"""Write what a Hub repository holds: ``model.safetensors``, ``config.json`` and ``README.md``.

Example:
    >>> import tempfile, timm
    >>> from hub_knowledge import save_for_hub
    >>> folder = save_for_hub(timm.create_model("resnet10t", num_classes=4), tempfile.mkdtemp(),
    ...                       model_name="me/resnet10t-digits", metrics={"top1": 97.1})
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'config.json', 'model.safetensors']
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ._checks import as_path, check_mapping, check_text
from ._files import atomic_folder, write_json_atomic, write_text_atomic
from .card import model_card
from .checkpoint import CheckpointError, check_state_dict, save_weights
from .config import CONFIG_NAME, build_config

__all__ = ["CARD_NAME", "WEIGHTS_NAME", "save_for_hub", "verify_rebuild"]

WEIGHTS_NAME = "model.safetensors"  # the name timm looks for first on the Hub
CARD_NAME = "README.md"


def verify_rebuild(model: nn.Module, config: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``config`` rebuilds a model that ``model``'s weights fit."""
    architecture = config["architecture"]
    with tempfile.TemporaryDirectory() as tmp:
        write_json_atomic(Path(tmp) / CONFIG_NAME, config)
        try:
            try:  # on the meta device: shapes only, no weight initialisation to pay for
                rebuilt = timm.create_model(f"local-dir:{tmp}", pretrained=False, device="meta")
            except (RuntimeError, NotImplementedError):  # an op without a meta kernel
                rebuilt = timm.create_model(f"local-dir:{tmp}", pretrained=False)
        except Exception as e:
            raise ValueError(
                f"config.json would not rebuild this model: timm.create_model({architecture!r}, "
                f"**{config.get('model_args', {})}) fails ({e.__class__.__name__}: {e}); is "
                "model.pretrained_cfg['architecture'] the name the model was built from?"
            ) from None
    try:
        check_state_dict(rebuilt, model.state_dict(), architecture=architecture, source="model")
    except CheckpointError as e:
        raise ValueError(
            f"config.json would rebuild a different model (was it changed after "
            f"timm.create_model, e.g. a module attached?): {e}"
        ) from None


def save_for_hub(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    model_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    lineage: Mapping[str, str] | None = None,
    description: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    data_config: Mapping[str, Any] | None = None,
    label_names: list[str] | None = None,
    verify: bool = True,
    task: str | None = None,
) -> Path:
    """Save ``model`` into ``folder`` as a Hub repository would hold it; returns the folder.

    Args:
        model: built by ``timm.create_model`` with a registered architecture; its factory
            arguments (e.g. a KernelWarehouse ``budget``) go into ``config.json`` so that
            ``timm.create_model("hf-hub:<repo>", pretrained=True)`` rebuilds it exactly.
        folder: created if missing; the files are written into a sibling temporary folder
            that then replaces ``folder`` in one step (other files already in ``folder`` are
            kept), so a killed writer never leaves new weights beside an old config.
        model_name: the repository id (``org/name``) or name shown in the card; defaults to
            the folder's name.
        metrics, datasets, license, tags, lineage, description: model card content
            (see :func:`hub_knowledge.card.model_card`); ``lineage`` also goes into the config.
        model_args: extra build arguments to record, JSON-serialisable.
        data_config: preprocessing to record (input_size, mean, std, crop_pct, ...).
        label_names: class names, index by index.
        task: the Hub pipeline tag; ``None`` infers it (``"object-detection"`` for detectors,
            see :func:`hub_knowledge.card.infer_task`).
        verify: rebuild the model from the config first (timm's factory, no weights) and check
            that the weights fit it key for key and shape for shape, so a repository that would
            not load is never written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={type(model).__name__} must be a torch.nn.Module")
    folder = as_path("folder", folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a directory")
    check_text("model_name", model_name, optional=True)
    check_mapping("metrics", metrics)
    config = build_config(
        model,
        model_args=model_args,
        data_config=data_config,
        label_names=label_names,
        lineage=lineage,
    )
    card = model_card(
        model,
        repo_id=model_name or folder.resolve().name,
        metrics=metrics,
        datasets=datasets,
        license=license,
        tags=tags,
        lineage=lineage,
        description=description,
        model_args=config.get("model_args"),
        task=task,
        architecture=config["architecture"],
    )
    if verify:
        verify_rebuild(model, config)
    # the three files go into a sibling temporary folder that replaces ``folder`` as a whole:
    # a writer killed part-way leaves the old folder as it was (and loadable)
    with atomic_folder(folder) as tmp:
        save_weights(model, tmp / WEIGHTS_NAME, architecture=config["architecture"])
        write_json_atomic(tmp / CONFIG_NAME, config)
        write_text_atomic(tmp / CARD_NAME, card)
    return folder
