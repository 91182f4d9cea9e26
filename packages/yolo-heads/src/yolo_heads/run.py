"""A run from its config: build the datasets and the detector, train, keep the record.

``run_training(cfg)`` is what ``yolo-heads train`` does: it writes the resolved config into
the run folder (``config.yaml``) first, so the run can be repeated or resumed exactly
(``run_training(load_config(run_dir / "config.yaml"), resume=run_dir)``).

Example:
    >>> import tempfile
    >>> from yolo_heads.config import load_config
    >>> from yolo_heads.data import make_digits_detection
    >>> root = tempfile.mkdtemp()
    >>> train = make_digits_detection(root, num_images=8, image_size=64, progress=False)
    >>> cfg = load_config(overrides=[f"data.train={train}", f"out={root}/run", "schedule.epochs=1",
    ...     "model.neck_channels=16", "schedule.batch_size=4", "schedule.amp=false"])
    >>> result = run_training(cfg, progress=False, plots=False)
    >>> sorted(p.name for p in (result.last.parent.parent).iterdir())
    ['config.yaml', 'results.csv', 'weights']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ._checks import renamed_kwargs
from .architectures import GraphDetector
from .checkpoint import create_detector, load_checkpoint
from .config import ConfigError, detector_kwargs, load_config, save_config
from .data import create_dataset
from .registry import ARCHITECTURE
from .train import TrainResult, train

__all__ = ["build_datasets", "build_detector", "resume_config", "run_training"]


def _image_dir(path: str | None) -> dict[str, str]:
    return {} if path is None else {"image_dir": path}


def build_datasets(cfg: DictConfig):
    """The training set (augmented as ``cfg.augment`` says) and the validation set or None."""
    aug = cfg.augment
    masks = cfg.get("task", "detect") == "segment"  # instance masks in the targets
    train_set = create_dataset(
        cfg.data.train,
        split="train",
        image_size=cfg.data.image_size,
        augment=aug.enabled,
        scale_range=tuple(aug.scale),
        flip=aug.flip,
        seed=cfg.schedule.seed,
        mosaic=aug.mosaic,
        mosaic_epochs=max(cfg.schedule.epochs - aug.close_mosaic, 0),
        translate=aug.translate,
        affine_scale=aug.affine_scale,
        hsv=(aug.hsv_h, aug.hsv_s, aug.hsv_v),
        skip_bad_images=cfg.data.skip_bad_images,
        masks=masks,
        **_image_dir(cfg.data.train_images),
    )
    val_set = None
    if cfg.data.val is not None:
        val_set = create_dataset(
            cfg.data.val,
            split="val",
            image_size=cfg.data.image_size,
            masks=masks,
            **_image_dir(cfg.data.val_images),
        )
    if cfg.data.cache:
        train_set.cache_images()
        if val_set is not None:
            val_set.cache_images()
    return train_set, val_set


def build_detector(cfg: DictConfig, num_classes: int) -> nn.Module:
    """The detector ``cfg.model`` describes, initialised from ``cfg.schedule.seed`` and then
    from ``cfg.model.weights`` when set (an authors' checkpoint file through
    :func:`yolo_heads.official.load`, class outputs re-initialised for another class count; or a
    checkpoint folder of this project)."""
    torch.manual_seed(cfg.schedule.seed)
    kwargs = detector_kwargs(cfg, num_classes=num_classes)
    model = create_detector(kwargs.pop("architecture", ARCHITECTURE), **kwargs)
    weights = cfg.model.weights
    if weights is None:
        return model
    if Path(weights).is_dir():
        return load_checkpoint(weights, model)
    if not isinstance(model, GraphDetector):
        raise ConfigError(
            f"model.weights={weights!r} is a file: authors' checkpoints need model.architecture "
            "(e.g. model=yolov9_t); a yolo-heads checkpoint is a folder"
        )
    from . import official

    if not Path(weights).is_file():
        raise ConfigError(f"model.weights={weights!r} does not exist")
    model = official.load(weights, model)
    if model.skipped_keys:
        print(
            f"model.weights: {len(model.skipped_keys)} class-output tensors re-initialised for "
            f"{num_classes} classes: {', '.join(model.skipped_keys)}"
        )
    return model


def resume_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """The config a run folder was started with (``config.yaml``), plus ``overrides``."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"resume={str(run_dir)!r} is not a run folder (it has no config.yaml)")
    cfg = load_config(path, overrides)
    cfg.out = str(Path(run_dir))
    return cfg


@renamed_kwargs(show_progress="progress")
def run_training(
    cfg: DictConfig,
    *,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    plots: bool = True,
    callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
) -> TrainResult:
    """Train the detector ``cfg`` describes; the run folder is ``cfg.out``."""
    out = Path(cfg.out)
    if resume is None:
        rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        if rank0:
            out.mkdir(parents=True, exist_ok=True)
            if not os.access(out, os.W_OK):
                raise PermissionError(f"out={str(out)!r} is not writable")
            save_config(cfg, out / "config.yaml")
    train_set, val_set = build_datasets(cfg)
    model = build_detector(cfg, num_classes=len(train_set.class_names))
    schedule: dict[str, Any] = OmegaConf.to_container(cfg.schedule, resolve=True)
    return train(
        model,
        train_set,
        val_dataset=val_set,
        num_workers=cfg.data.num_workers,
        out_dir=out,
        resume=resume,
        plots=plots,
        progress=progress,
        callbacks=callbacks,
        **schedule,
    )
