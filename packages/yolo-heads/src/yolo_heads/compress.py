"""Dictionary compression of a trained detector's checkpoint (YOLO-RD section 3.3, Algorithm 1).

After training (Algorithm 1, lines 6-13), the Retriever-Dictionary keeps ``N`` atoms; lines
15-22 distil it into a smaller one with ``n`` atoms on the training images, backbone and teacher
frozen (:func:`rd_core.compress`), and the final model is the backbone, the small RD and the head.
:func:`compress_checkpoint` does this for a checkpoint folder and writes a new one, whose
``config.json`` records the new atom count, so ``yolo-heads val / predict / export``,
:func:`~yolo_heads.load_checkpoint` and ``hub_knowledge.load`` rebuild the compressed detector.
The command line is ``yolo-heads compress RUN/weights/best --num-atoms N``.

Example:
    >>> import tempfile
    >>> from yolo_heads import YOLODetector, load_checkpoint, save_checkpoint
    >>> from yolo_heads.data import make_digits_detection
    >>> root = tempfile.mkdtemp()
    >>> data = make_digits_detection(root, num_images=4, image_size=64, progress=False)
    >>> model = YOLODetector("resnet18", num_classes=10, neck_channels=16,
    ...                      rd={"num_atoms": 16})
    >>> best = save_checkpoint(model, f"{root}/best", image_size=64)
    >>> result = compress_checkpoint(best, 8, data=data, progress=False)
    >>> result.folder.name, result.report.student_atoms
    ('best-rd8', 8)
    >>> load_checkpoint(result.folder).backbone.body.layer2.rd.num_atoms
    8
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rd_core.compression import CompressedFolder

from ._checks import check_bool, check_device, check_int, check_number, check_path
from .checkpoint import load_checkpoint, read_config, save_checkpoint

__all__ = ["CompressedCheckpoint", "compress_checkpoint", "retriever_dictionaries", "run_data"]


@dataclass
class CompressedCheckpoint(CompressedFolder):
    """What :func:`compress_checkpoint` wrote: the new folder, the compressed detector (as
    saved), :func:`rd_core.compress`'s report per Retriever-Dictionary (``report``: the first)
    and the data it distilled on."""

    kind: ClassVar[str] = "checkpoint"

    data: str = ""


def retriever_dictionaries(model: nn.Module) -> dict[str, nn.Module]:
    """Every :class:`rd_core.RetrieverDictionary` in ``model`` by module name.

    >>> from yolo_heads import YOLODetector
    >>> list(retriever_dictionaries(YOLODetector("resnet18", num_classes=2, rd=True)))
    ['backbone.body.layer2.rd']
    """
    from rd_core import RetrieverDictionary

    return {n: m for n, m in model.named_modules() if isinstance(m, RetrieverDictionary)}


def run_data(weights: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(data, image folder)`` a run trained on, for a checkpoint inside its run folder
    (``RUN/weights/best`` beside ``RUN/config.yaml``); ``None`` when there is no run config."""
    from omegaconf import OmegaConf

    path = Path(weights).resolve().parent.parent / "config.yaml"
    if not path.is_file():
        return None
    data = OmegaConf.load(path).get("data", {})
    train = data.get("train")
    if not isinstance(train, str) or train == "???":
        return None
    return train, data.get("train_images")


def _check_out(weights: Path, out: Any, num_atoms: int) -> Path:
    if out is None:
        return weights.with_name(f"{weights.name}-rd{num_atoms}")
    out = check_path("out", out, new=True, fn="compress_checkpoint")
    if out.resolve() == weights.resolve():
        raise ValueError(
            f"compress_checkpoint: out={str(out)!r} is the source checkpoint; write the "
            "compressed detector to another folder (the default is "
            f"{weights.name}-rd{num_atoms} beside it)"
        )
    return out


def _teacher_atoms(config: dict[str, Any]) -> list[int]:
    """Atom counts a checkpoint's config records (the attached RD and built-in RD blocks)."""
    args = config.get("model_args", {})
    counts = []
    rd = args.get("rd")
    if isinstance(rd, dict) and isinstance(rd.get("num_atoms"), int):
        counts.append(rd["num_atoms"])
    counts += [v["num_atoms"] for v in args.values() if isinstance(v, dict) and "num_atoms" in v]
    return counts


def compress_checkpoint(
    weights: str | os.PathLike,
    num_atoms: int,
    *,
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    split: str = "train",
    image_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    batch_size: int = 16,
    epochs: int = 1,
    lr: float = 1e-3,
    temperature: float = 0.1,
    max_positions: int | None = 4096,
    usage_score: str = "mean_abs",
    max_batches: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    loss: str = "cosine",
) -> CompressedCheckpoint:
    """Distil every Retriever-Dictionary of the detector in ``weights`` to ``num_atoms`` atoms
    and save the result as a new checkpoint folder.

    Args:
        weights: a checkpoint folder (``config.json`` + ``model.safetensors``), e.g. a run's
            ``weights/best``.
        num_atoms: the compressed dictionary's atom count, ``2 <= num_atoms <`` the trained
            one (the paper removes at least half).
        out: the folder to write; default ``<weights>-rd<num_atoms>`` beside ``weights``.
        data: the images to distil on (COCO JSON or YOLO data YAML); default the training
            data of the run ``weights`` belongs to (``RUN/config.yaml``), as Algorithm 1 uses
            the training set.
        split: the split of a YOLO data YAML.
        image_dir: a COCO JSON's image folder (default: beside it, or the run's).
        image_size: canvas side (multiple of 32); default the checkpoint's training size.
        batch_size: images per distillation step.
        epochs, lr, temperature, max_positions, usage_score, max_batches, seed, loss: as
            :func:`rd_core.compress` (one epoch, as the paper), except ``loss``: ``"cosine"``
            (Algorithm 1 line 21) by default here, because equation 8's ``"contrastive"``
            (rd_core's default, as SPEC fixes it) took a digits detector from AP 0.080 to 0.010
            where cosine kept 0.066.
        device: where the distillation runs.
        progress: show a progress bar.
    """
    from torch.utils.data import DataLoader

    import rd_core

    from .data import create_dataset
    from .data.base import collate

    fn = "compress_checkpoint"
    weights = check_path("weights", weights, fn=fn)
    config = read_config(weights)  # a checkpoint folder, before anything heavy
    check_int("num_atoms", num_atoms, low=2, fn=fn)
    if "yolo-rd" not in (config.get("knowledge") or {}).get("methods", ["yolo-rd"]):
        raise ValueError(
            f"{fn}: weights={str(weights)!r} has no Retriever-Dictionary to compress (train "
            "with model.rd.enabled=true, or model=yolo_rd_9c)"
        )
    teacher = _teacher_atoms(config)
    if teacher and num_atoms >= min(teacher):
        raise ValueError(
            f"{fn}: num_atoms={num_atoms} is not valid; expected an integer in [2, "
            f"{min(teacher)}), fewer than the trained dictionary's {min(teacher)} atoms"
        )
    out = _check_out(weights, out, num_atoms)
    check_int("batch_size", batch_size, fn=fn)
    check_int("epochs", epochs, fn=fn)
    check_number("lr", lr, positive=True, fn=fn)
    check_number("temperature", temperature, positive=True, fn=fn)
    if max_positions is not None:
        check_int("max_positions", max_positions, low=2, fn=fn)
    if max_batches is not None:
        check_int("max_batches", max_batches, fn=fn)
    check_int("seed", seed, low=0, fn=fn)
    check_bool("progress", progress, fn=fn)
    if usage_score not in rd_core.USAGE_SCORES:
        raise ValueError(
            f"{fn}: usage_score={usage_score!r} is not valid; expected one of "
            f"{sorted(rd_core.USAGE_SCORES)}"
        )
    from rd_core.compression import COMPRESSION_LOSSES

    if loss not in COMPRESSION_LOSSES:
        raise ValueError(
            f"{fn}: loss={loss!r} is not valid; expected one of {sorted(COMPRESSION_LOSSES)}"
        )
    device = check_device("device", device, fn=fn)
    for name, value in (("data", data), ("image_dir", image_dir)):
        if value is not None:
            check_path(name, value, fn=fn)
    if not isinstance(split, str):
        raise TypeError(f"{fn}: split={split!r} is not valid; expected a split name (str)")
    if image_size is not None:
        check_int("image_size", image_size, low=32, high=16384, fn=fn)
    source = "data"
    if data is None:
        source = "the run's data.train"
        found = run_data(weights)
        if found is None:
            raise ValueError(
                f"{fn}: data is not given and weights={str(weights)!r} is not in a run folder "
                "whose config.yaml names data.train; give the training data (--data)"
            )
        data, run_images = found
        image_dir = image_dir if image_dir is not None else run_images
    if not Path(data).is_file():
        raise FileNotFoundError(f"{fn}: {source} {str(data)!r} does not exist")
    if image_size is None:
        image_size = int(config["pretrained_cfg"].get("input_size", (3, 640, 640))[-1])
    dataset = create_dataset(
        data,
        split=split,
        image_size=image_size,
        **({} if image_dir is None else {"image_dir": image_dir}),
    )
    if len(dataset) == 0:
        raise ValueError(f"{fn}: data={str(data)!r} ({split}) holds no images")
    # Algorithm 1 line 17 visits the data set in its order; a seeded shuffle keeps each batch
    # varied when --max-batches takes only part of it, and the run repeatable.
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    model = load_checkpoint(weights, device=device).eval()
    rds = retriever_dictionaries(model)
    if not rds:
        raise ValueError(f"{fn}: weights={str(weights)!r} holds no Retriever-Dictionary")
    smallest = min(rd.num_atoms for rd in rds.values())
    if num_atoms >= smallest:
        raise ValueError(
            f"{fn}: num_atoms={num_atoms} is not valid; expected an integer in [2, {smallest}), "
            f"fewer than the trained dictionary's {smallest} atoms"
        )
    reports = {}
    for name, rd in rds.items():
        torch.manual_seed(seed)  # the student's fresh parts (if any) start the same every run
        reports[name] = rd_core.compress(
            model,
            rd,
            num_atoms,
            loader,
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
    first = next(iter(reports.values()))
    metadata = {
        "compression": {
            "source": str(weights),
            "data": str(data),
            "teacher_atoms": first.teacher_atoms,
            "student_atoms": num_atoms,
            "epochs": epochs,
            "loss": loss,
            # JSON has no NaN: a report without a finite value records None
            "cosine_similarity": _finite(first.cosine_similarity),
            "relative_error": _finite(first.relative_error),
        }
    }
    folder = save_checkpoint(model.cpu(), out, image_size=int(image_size), metadata=metadata)
    return CompressedCheckpoint(folder=folder, model=model, data=str(data), reports=reports)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
