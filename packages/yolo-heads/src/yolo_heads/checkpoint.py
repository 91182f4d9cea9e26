"""Safetensors checkpoints, written atomically, with the model configuration in the metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def save_checkpoint(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors), via a temporary file and rename.

    ``metadata`` (JSON-serialisable) and ``model.config`` (when the model has one) are stored in
    the file's header, so :func:`load_checkpoint` can rebuild the model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model
    # Tied or shared storages are not allowed in safetensors: store independent copies.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    header = {"format": "pt", "yolo_heads": json.dumps(metadata or {})}
    config = getattr(module, "config", None)
    if config is not None:
        header["config"] = json.dumps(config)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``config`` and ``metadata`` stored by :func:`save_checkpoint`."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    return {
        "config": json.loads(header["config"]) if "config" in header else None,
        "metadata": json.loads(header.get("yolo_heads", "{}")),
    }


def load_checkpoint(path: str | Path, model: nn.Module | None = None, strict: bool = True):
    """Load a checkpoint into ``model``, or rebuild a :class:`YOLODetector` from its config.

    >>> import tempfile, pathlib
    >>> from yolo_heads import YOLODetector
    >>> model = YOLODetector("resnet18", num_classes=2, neck_channels=16)
    >>> path = save_checkpoint(model, pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
    >>> type(load_checkpoint(path)).__name__
    'YOLODetector'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    state = load_file(str(path))
    if model is None:
        from .detector import YOLODetector

        config = read_metadata(path)["config"]
        if config is None:
            raise ValueError(
                f"path={str(path)!r} stores no model config; pass the model to load it into"
            )
        model = YOLODetector(**config)
    target = model.module if hasattr(model, "module") else model
    own = target.state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    if mismatched:
        raise ValueError(
            f"checkpoint {str(path)!r} is for another architecture: {len(mismatched)} tensors "
            f"differ in shape, e.g. {mismatched[0]!r} {tuple(state[mismatched[0]].shape)} vs "
            f"{tuple(own[mismatched[0]].shape)} in the model"
        )
    result = target.load_state_dict(state, strict=strict)
    if strict and (result.missing_keys or result.unexpected_keys):  # pragma: no cover
        raise ValueError(f"checkpoint mismatch: {result}")
    return model
