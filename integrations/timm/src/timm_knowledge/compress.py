"""Dictionary compression of a trained ``rd_*`` classifier (YOLO-RD section 3.3, Algorithm 1).

``timm-knowledge train`` writes ``OUT/model`` (timm's ``config.json`` + ``model.safetensors``);
``timm-knowledge compress OUT/model --num-atoms N --data-dir IMAGES`` distils every
Retriever-Dictionary in it into one with ``N`` atoms on the training images (backbone and
teacher frozen, :func:`rd_core.compress`) and writes ``OUT/model-rdN`` in the same format. Its
``config.json`` records the new atom count, so ``timm.create_model("local-dir:OUT/model-rdN",
pretrained=True)`` and ``hub_knowledge.load`` rebuild the compressed model, and
``hub_knowledge.save_for_hub`` publishes it.

Example:
    >>> import tempfile, timm, torch, timm_knowledge
    >>> from timm.models import save_for_hf
    >>> from timm_knowledge.compress import compress_model
    >>> root = tempfile.mkdtemp()
    >>> model = timm.create_model("rd_resnet18", num_classes=2, num_atoms=16)
    >>> save_for_hf(model, f"{root}/model", safe_serialization=True)
    >>> images = torch.rand(4, 3, 32, 32)
    >>> result = compress_model(f"{root}/model", 8, data=[images], progress=False)
    >>> result.folder.name, result.report.student_atoms
    ('model-rd8', 8)
    >>> timm.create_model(f"local-dir:{result.folder}").layer3.rd.num_atoms
    8
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rd_core.compression import CompressedFolder

__all__ = ["CompressedModel", "add_arguments", "compress_model", "image_loader", "run"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"  # timm's save_for_hf without safe_serialization


class CompressedModel(CompressedFolder):
    """What :func:`compress_model` wrote, the compressed model (as saved, on the CPU) and
    :func:`rd_core.compress`'s report per RD (``report``: the first)."""


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} is not valid; expected an integer {bounds}")
    return value


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name}={value!r} is not valid; expected a finite number > 0")
    return float(value)


def _model_folder(folder: str | os.PathLike) -> Path:
    if isinstance(folder, bytes) or not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"model={folder!r} is not valid; expected a folder path (str or PathLike)")
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model={str(folder)!r} is not a folder; give a saved model folder such as a "
            f"timm-knowledge run's OUT/model ({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    missing = [name for name in (CONFIG_NAME,) if not (path / name).is_file()]
    if not any((path / name).is_file() for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME)):
        missing.append(f"{WEIGHTS_NAME} (nor {LEGACY_WEIGHTS_NAME})")
    if missing:
        raise FileNotFoundError(f"model={str(folder)!r} has no {' and no '.join(missing)}")
    return path


def image_loader(
    model: torch.nn.Module,
    data_dir: str | os.PathLike,
    *,
    split: str = "train",
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """Batches ``(images, labels)`` of an image folder (``DATA_DIR/SPLIT/<class>/...``), with
    ``model``'s evaluation preprocessing (timm's ``resolve_data_config``; ``image_size``
    replaces its input size), shuffled with ``seed`` so that a part of it is still varied."""
    from timm.data import create_dataset, create_transform, resolve_data_config

    root = Path(data_dir)
    if not (root / split).is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else None
        where = f"its folders are {found}" if found is not None else "it does not exist"
        raise FileNotFoundError(
            f"data_dir={str(data_dir)!r} has no {split!r} folder of class folders ({where})"
        )
    data_cfg = resolve_data_config(model=model)
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        data_cfg["input_size"] = (data_cfg["input_size"][0], h, w)
    dataset = create_dataset("", root=str(root), split=split)
    if len(dataset) == 0:
        raise ValueError(f"data_dir={str(data_dir)!r}: the {split!r} split holds no images")
    dataset.transform = create_transform(**data_cfg, is_training=False)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def compress_model(
    model: str | os.PathLike,
    num_atoms: int,
    *,
    data: Iterable[Any] | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    out: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    epochs: int = 1,
    lr: float = 1e-3,
    temperature: float = 0.1,
    max_positions: int | None = 4096,
    usage_score: str = "mean_abs",
    max_batches: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    loss: str = "cosine",
) -> CompressedModel:
    """Distil every Retriever-Dictionary of the saved model in ``model`` (a folder with timm's
    ``config.json`` + ``model.safetensors``) to ``num_atoms`` atoms; write the result to ``out``
    (default ``<model>-rd<num_atoms>`` beside it) in the same format.

    Args:
        model: the folder ``timm-knowledge train`` writes as ``OUT/model``.
        num_atoms: atoms to keep, ``2 <= num_atoms <`` the trained dictionary's count.
        data: batches of images (tensors or ``(images, labels)``) to distil on; or
        data_dir, split: the training image folder (``DATA_DIR/SPLIT/<class>/...``), read with
            the model's evaluation preprocessing (see :func:`image_loader`).
        image_size: input size for ``data_dir`` (default: the model's ``input_size``).
        batch_size: images per step for ``data_dir``.
        epochs, lr, temperature, max_positions, usage_score, max_batches, seed, loss: as
            :func:`rd_core.compress` (one epoch, as the paper), except ``loss``: ``"cosine"``
            (Algorithm 1 line 21) by default, as ``yolo-heads compress``; ``"contrastive"`` is
            equation 8 (rd_core's default), which lost most of a digits detector's AP.
        device: where the distillation runs.
        progress: show a progress bar.
    """
    import timm

    import rd_core

    from .train import _save_hub_dir  # (importing this package registered the rd_* names)

    folder = _model_folder(model)
    _check_int("num_atoms", num_atoms, 2)
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("epochs", epochs, 1),
        ("seed", seed, 0),
    ):
        _check_int(name, value, low)
    if max_batches is not None:
        _check_int("max_batches", max_batches, 1)
    if max_positions is not None:
        _check_int("max_positions", max_positions, 2)
    _check_positive("lr", lr)
    _check_positive("temperature", temperature)
    from rd_core.compression import COMPRESSION_LOSSES

    if loss not in COMPRESSION_LOSSES:
        raise ValueError(
            f"loss={loss!r} is not valid; expected one of {sorted(COMPRESSION_LOSSES)}"
        )
    if usage_score not in rd_core.USAGE_SCORES:
        raise ValueError(
            f"usage_score={usage_score!r} is not valid; expected one of "
            f"{sorted(rd_core.USAGE_SCORES)}"
        )
    for name, value in (("out", out), ("data_dir", data_dir)):
        if value is not None and (
            isinstance(value, bytes) or not isinstance(value, (str, os.PathLike))
        ):
            raise TypeError(f"{name}={value!r} is not valid; expected a path (str or os.PathLike)")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split={split!r} is not valid; expected a split folder name (str)")
    if image_size is not None:
        sizes = image_size if isinstance(image_size, (tuple, list)) else (image_size,)
        if len(sizes) not in (1, 2):
            raise ValueError(f"image_size={image_size!r} is not valid; expected SIZE or (H, W)")
        for size in sizes:
            _check_int("image_size", size, 1, 16384)
    if not isinstance(progress, bool):
        raise TypeError(f"progress={progress!r} is not valid; expected True or False")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not valid; expected e.g. 'cpu' ({e})") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={str(device)!r} is not valid: this machine has "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    if (data is None) == (data_dir is None):
        raise ValueError("give the images to distil on: data (batches) or data_dir (a folder)")
    if out is not None and Path(out).name in ("", ".."):
        raise ValueError(f"out={str(out)!r} is not valid; expected a path naming the new folder")
    target = Path(out) if out is not None else folder.with_name(f"{folder.name}-rd{num_atoms}")
    if target.resolve() == folder.resolve():
        raise ValueError(
            f"out={str(out)!r} is the source model; write the compressed one to another folder"
        )
    net = timm.create_model(f"local-dir:{folder}", pretrained=True).to(device).eval()
    insertions = rd_core.attached(net)
    if not insertions:
        raise ValueError(
            f"model={str(model)!r} ({net.pretrained_cfg.get('architecture')}) holds no "
            "Retriever-Dictionary to compress (an rd_* or with_rd model has one)"
        )
    smallest = min(insertion.rd.num_atoms for insertion in insertions.values())
    if num_atoms >= smallest:
        raise ValueError(
            f"num_atoms={num_atoms} is not valid; expected an integer in [2, {smallest}), "
            f"fewer than the trained dictionary's {smallest} atoms"
        )
    if data is None:
        data = image_loader(
            net, data_dir, split=split, image_size=image_size, batch_size=batch_size, seed=seed
        )
    reports = {}
    for at, insertion in insertions.items():
        torch.manual_seed(seed)
        reports[at] = rd_core.compress(
            net,
            insertion.rd,
            num_atoms,
            data,
            epochs=epochs,
            lr=lr,
            temperature=temperature,
            max_positions=max_positions,
            usage_score=usage_score,
            max_batches=max_batches,
            seed=seed,
            progress=progress,
            loss=loss,
        )
    # rd_core.compress updated the model's recorded build arguments (num_atoms), which
    # timm's save_for_hf writes as config.json's model_args
    net = net.cpu()
    _save_hub_dir(net, target, {})
    return CompressedModel(folder=target, model=net, reports=reports)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``timm-knowledge compress`` arguments."""
    parser.add_argument("model", help="saved model folder, e.g. a run's OUT/model")
    parser.add_argument("--num-atoms", type=int, required=True, help="atoms to keep")
    parser.add_argument(
        "--data-dir", required=True, help="the training image folder (SPLIT/<class>/...)"
    )
    parser.add_argument("--split", default="train", help="(default: train)")
    parser.add_argument("--out", help="folder to write (default: MODEL-rdN beside MODEL)")
    parser.add_argument("--image-size", type=int, help="(default: the model's input size)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    parser.add_argument("--epochs", type=int, default=1, help="(default: 1, as the paper)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr (default: 0.001)")
    parser.add_argument("--temperature", type=float, default=0.1, help="tau (default: 0.1)")
    parser.add_argument(
        "--max-positions", type=int, default=4096, help="loss positions per batch; 0: all"
    )
    parser.add_argument(
        "--usage-score", default="mean_abs", help="mean_abs, top1 or top1_then_mean_abs"
    )
    parser.add_argument("--max-batches", type=int, help="batches per epoch (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--device", default="cpu", help="(default: cpu)")
    parser.add_argument(
        "--loss", default="cosine", help="cosine (Algorithm 1 line 21) or contrastive (equation 8)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: dict[str, Any]) -> int:
    """Run ``timm-knowledge compress`` with parsed ``args``; 2 for a bad argument."""
    if args["max_positions"] == 0:
        args["max_positions"] = None
    progress = not args.pop("no_progress")
    model, data_dir = args.pop("model"), args.pop("data_dir")
    try:
        result = compress_model(model, data_dir=data_dir, progress=progress, **args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"timm-knowledge compress: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0
