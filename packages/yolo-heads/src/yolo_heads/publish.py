"""The authors' checkpoint as a Hub folder: converted weights, timm's config and a model card.

:func:`convert_to_hub_folder` reads a checkpoint with :func:`yolo_heads.official.load`, writes it
with :func:`yolo_heads.save_checkpoint` (``config.json`` naming the architecture, e.g.
``yolov9_t``, and ``model.safetensors``) and adds ``README.md`` from
:func:`yolo_heads.official_card.official_model_card`: the paper, the source checkpoint and the
authors' COCO numbers, labelled as theirs. ``hub_knowledge.load(folder)`` and
``timm.create_model("local-dir:<folder>", pretrained=True)`` rebuild the model.

The folder is written as a whole (a sibling temporary folder is filled and swapped in), so a
failed conversion leaves an existing folder as it was.

    >>> import tempfile, torch
    >>> from yolo_heads import load_checkpoint, official
    >>> from yolo_heads.architectures import GraphDetector
    >>> theirs = {official.to_authors_key(k): v
    ...           for k, v in GraphDetector("yolov9_t").state_dict().items()}
    >>> model, folder = convert_to_hub_folder(theirs, "yolov9_t", tempfile.mkdtemp() + "/v9-t")
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'config.json', 'model.safetensors']
    >>> x = torch.rand(1, 3, 64, 64)
    >>> clone = load_checkpoint(folder).eval()
    >>> all(torch.equal(a, b) for a, b in zip(clone(x), model.eval()(x)))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._checks import check_bool, check_path
from ._files import write_folder_atomic
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_checkpoint
from .official_card import REPORTED, official_card, official_model_card

__all__ = ["CARD_NAME", "convert_to_hub_folder"]

CARD_NAME = "README.md"
_FN = "convert_to_hub_folder"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_to_hub_folder(
    source: str | os.PathLike | Mapping[str, Any],
    architecture: str,
    folder: str | os.PathLike,
    *,
    ema: bool = True,
    repo_id: str | None = None,
) -> tuple[Any, Path]:
    """Convert the authors' checkpoint ``source`` to a Hub folder; return ``(model, folder)``.

    Args:
        source: the authors' released ``.pt``, Lightning ``.ckpt`` or YOLO state dict (a path,
            read weights-only, or a mapping), as :func:`yolo_heads.official.load` reads.
        architecture: ``yolov9_t``, ``yolov9_s``, ``yolov9_m``, ``yolov9_c``, ``yolo_rd_9c`` or
            ``yolov7``.
        folder: the folder to (re)write, as a whole.
        ema: for a Lightning ``.ckpt``, take the EMA weights (the ones the authors validate).
        repo_id: the Hub repository the folder will be published as (shown in the card).

    The checkpoint must hold all of the model's weights for COCO's 80 classes: a checkpoint
    whose class outputs would be re-initialised is refused, since the card calls the weights
    the authors'. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an
    unknown architecture or a checkpoint of another model.
    """
    from . import official

    if not isinstance(architecture, str) or architecture not in REPORTED:
        raise ValueError(
            f"{_FN}: architecture={architecture!r} is not valid; expected one of {sorted(REPORTED)}"
        )
    folder = check_path("folder", folder, new=True, fn=_FN)
    check_bool("ema", ema, fn=_FN)
    if repo_id is not None and (not isinstance(repo_id, str) or repo_id.count("/") != 1):
        raise ValueError(f"{_FN}: repo_id={repo_id!r} is not valid; expected 'org/name'")
    converted_from = sha256 = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{_FN}: source={str(source)!r}: no such file")
        if path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents:
            raise ValueError(
                f"{_FN}: folder={str(folder)!r} holds source={str(source)!r}; writing the folder "
                "would replace the checkpoint being converted: choose another folder"
            )
        converted_from, sha256 = path.name, _sha256(path)

    model = official.load(source, model=architecture, ema=ema, strict_classes=True).eval()
    card = official_card(architecture)
    auxiliary = bool(model.config.get("auxiliary"))
    text = official_model_card(
        architecture,
        converted_from=converted_from,
        sha256=sha256,
        repo_id=repo_id,
        num_params=sum(p.numel() for p in model.parameters()),
        auxiliary=auxiliary,
    )
    lineage = {"file": converted_from, "sha256": sha256, "ema": ema}
    metadata = {
        "official": card,
        "converted_from": lineage,
    }

    def fill(tmp: Path) -> None:
        written = save_checkpoint(model, tmp / ".checkpoint", metadata=metadata)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            os.replace(written / name, tmp / name)
        shutil.rmtree(written)
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))
        # the weights are the authors', under their license, not this project's
        config["pretrained_cfg"]["license"] = card["license"]
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / CARD_NAME).write_text(text, encoding="utf-8")

    return model, write_folder_atomic(folder, fill)
