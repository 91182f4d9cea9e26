"""The YOLOv9 / YOLO-RD / YOLOv7 authors' checkpoints (MultimediaTechLab/YOLO) as Hub folders.

Converting and describing the checkpoints is yolo-heads' business:
``yolo_heads.publish.convert_to_hub_folder`` reads the authors' file with
``yolo_heads.official.load`` and writes ``config.json`` (architecture ``yolov9_t`` ...),
``model.safetensors`` and the model card from ``yolo_heads.official_card``. This module only
wires it into hub-knowledge: it calls that function, then rebuilds the folder the way a user
would, with :func:`hub_knowledge.load` (timm's ``local-dir:`` source and the checks on every
tensor), and runs both models on the same input. The conversion succeeds only if the outputs,
the auxiliary head's included, agree within ``atol`` (0: identical).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError
from .kernelwarehouse import ConversionReport

__all__ = ["convert_yolo"]


def _yolo_heads():
    try:
        return (
            importlib.import_module("yolo_heads.publish"),
            importlib.import_module("yolo_heads.official"),
            importlib.import_module("yolo_heads.official_card"),
        )
    except ImportError:
        raise ImportError(
            "converting the YOLO authors' checkpoints needs the yolo-heads package "
            "(from a checkout: pip install ./packages/yolo-heads)"
        ) from None


def convert_yolo(
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    model: str,
    out: str | os.PathLike,
    *,
    repo_id: str | None = None,
    ema: bool = True,
    check_input_size: int = 64,
    atol: float = 0.0,
) -> tuple[nn.Module, ConversionReport]:
    """Convert an authors' YOLO checkpoint into the Hub folder ``out``; return
    ``(model, report)`` where ``model`` is the folder rebuilt by :func:`hub_knowledge.load`.

    Args:
        checkpoint: their released ``.pt``, Lightning ``.ckpt`` or YOLO state dict (a path,
            read weights-only, or a state dict).
        model: ``yolov9_t``, ``yolov9_s``, ``yolov9_m``, ``yolov9_c``, ``yolo_rd_9c`` or
            ``yolov7`` (``yolo_heads.architectures.list_architectures()``).
        out: the folder to write (``config.json``, ``model.safetensors``, ``README.md``).
        repo_id: the Hub repository it will be pushed to, shown in the card.
        ema: for a Lightning ``.ckpt``, take the EMA weights.
        check_input_size: side of the seeded random image both models run on (multiple of 32).
        atol: largest output difference accepted.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: an unknown ``model``; :class:`CheckpointError` (a ``ValueError``) for a
            checkpoint of another model, or a folder that does not rebuild the same model.
    """
    publish, official, card = _yolo_heads()
    valid = sorted(card.REPORTED)
    if model not in valid:
        raise ValueError(f"model={model!r} is invalid; valid: {valid}")
    if not isinstance(check_input_size, int) or check_input_size < 32 or check_input_size % 32:
        raise ValueError(
            f"check_input_size={check_input_size!r} is invalid: a multiple of 32 (the stride)"
        )
    source = "state_dict" if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
    if not isinstance(checkpoint, Mapping) and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={source!r} does not exist")
    try:
        reference, folder = publish.convert_to_hub_folder(
            checkpoint, model, out, ema=ema, repo_id=repo_id
        )
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint={source!r} cannot be read as {model!r}: {e}") from None

    from ..load import load  # the user's way back: timm's factory plus the per-tensor checks

    rebuilt = load(folder).eval()
    reference.eval()
    seeded = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, check_input_size, check_input_size, generator=seeded)
    theirs, ours = official.authors_outputs(reference, x), official.authors_outputs(rebuilt, x)
    if theirs.keys() != ours.keys():
        raise CheckpointError(
            f"{str(folder)!r} rebuilds {model!r} with outputs {sorted(ours)}, the conversion "
            f"gives {sorted(theirs)}"
        )
    diff = max(float((theirs[k] - ours[k]).abs().max()) for k in theirs)
    if not diff <= atol:
        raise CheckpointError(
            f"{str(folder)!r} rebuilt by hub_knowledge.load differs from the converted "
            f"{model!r} by {diff:.3g} (> atol={atol})"
        )
    config: dict[str, Any] = dict(getattr(rebuilt, "config", {}))
    report = ConversionReport(
        architecture=model,
        model_args=config,
        max_abs_diff=diff,
        num_params=sum(p.numel() for p in rebuilt.parameters()),
        source=source,
        notes=[
            f"authors' {card.official_card(model)['authors_name']}; weights "
            f"{'EMA' if ema else 'raw'} for a Lightning checkpoint",
            f"PGI auxiliary branch {'kept' if config.get('auxiliary') else 'not included'}",
        ],
    )
    return rebuilt, report
