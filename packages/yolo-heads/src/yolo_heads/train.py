"""The training loop: timm's optimiser, schedule and EMA, per-epoch COCO validation, resume, DDP.

``train(model, dataset, val_dataset=..., out_dir=...)`` trains a detector and, each epoch,
scores the EMA weights with pycocotools, writes ``results.csv`` and the ``weights/last`` and
``weights/best`` checkpoint folders (Hub layout, see :mod:`yolo_heads.checkpoint`), then plots.
``train(..., resume=out_dir)`` continues from ``weights/last`` with the model, EMA, optimiser,
scheduler, grad scaler, epoch and RNG state, so an interrupted run ends with the same weights as
an uninterrupted one. Under ``torch.distributed`` (``torchrun``) the model runs in
DistributedDataParallel, the data is sharded, a non-finite loss on any rank skips the step on
every rank, and rank 0 validates and writes.

From timm: ``create_optimizer_v2`` (no weight decay on biases, norms and implicit vectors),
``CosineLRScheduler`` (linear warm-up, then cosine to ``lr * min_lr_ratio``, per update) and
``ModelEmaV3`` with the YOLO decay ramp (the one formula kept here).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from ._checks import check_positive, renamed_kwargs
from ._files import clean_temporaries, existing_folder
from ._resume import restore_best
from .checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from .data.coco import collate
from .results import Results
from .threads import plan_cpu

__all__ = ["TrainResult", "YoloEMA", "train"]


log = logging.getLogger(__name__)


class YoloEMA(ModelEmaV3):
    """timm's ``ModelEmaV3`` with the YOLOv5 decay ramp: ``decay * (1 - exp(-updates / tau))``,
    so the average follows the model closely while it changes fast in the first updates."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 200.0) -> None:
        super().__init__(model, decay=decay)
        self.tau = tau

    def get_decay(self, step: int | None = None) -> float:
        return self.decay * (1 - math.exp(-(step or 0) / self.tau))


class _EpochShuffle(Sampler[int]):
    """A permutation drawn from ``(seed, epoch)`` alone: resuming at epoch ``e`` sees the order
    an uninterrupted run saw."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained (EMA) model, one row per epoch, the checkpoints."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    last: Path | None = None
    best: Path | None = None
    best_epoch: int | None = None
    best_fitness: float | None = None
    skipped_steps: int = 0


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def _as_float(outputs: Any) -> Any:
    """Head outputs (a list per level, or PGI's (main, auxiliary) pair) in float32 for the loss."""
    if isinstance(outputs, tuple):
        return tuple(_as_float(o) for o in outputs)
    return [o.float() for o in outputs] if isinstance(outputs, list) else outputs


def epoch_line(row: dict[str, float], epochs: int) -> str:
    """One epoch's console line: its number, the mean loss parts, AP and AP50 (and the mask
    ones) when it was validated, and its seconds (training and validation).

    >>> epoch_line({"epoch": 3, "loss": 2.5, "box": 1.25, "AP": 0.1234, "AP50": 0.5, "APs": 0.1,
    ...             "lr": 0.004, "seconds": 12.34}, 30)
    'epoch 3/30  loss 2.500  box 1.250  AP 0.1234  AP50 0.5000  12.3 s'
    """
    metrics = [k for k in row if k.startswith(("AP", "mask_AP"))]
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    skip = {"epoch", "lr", "seconds", *metrics}
    parts += [f"{k} {v:.3f}" for k, v in row.items() if k not in skip]
    parts += [f"{k} {row[k]:.4f}" for k in ("AP", "AP50", "mask_AP", "mask_AP50") if k in row]
    parts.append(f"{row.get('seconds', 0.0):.1f} s")
    return "  ".join(parts)


def _agree_on_skip(loss: torch.Tensor, distributed: bool) -> bool:
    """True when the loss is not finite on this rank or any other (all ranks skip together,
    so DistributedDataParallel's gradient all-reduce never waits for a rank that skipped)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=loss.device)
    if distributed:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item())


@renamed_kwargs(show_progress="progress")
def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    val_dataset: Dataset | None = None,
    epochs: int = 10,
    batch_size: int = 16,
    optimizer: str = "adamw",
    lr: float = 4e-3,
    weight_decay: float = 5e-4,
    warmup_steps: int = 50,
    min_lr_ratio: float = 0.05,
    grad_clip: float = 10.0,
    ema: bool = True,
    ema_decay: float = 0.999,
    amp: bool = False,
    val_interval: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    threads: int | None = None,
    max_bad_steps: int = 10,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    plots: bool = True,
    progress: bool = True,
    callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
) -> TrainResult:
    """Train a :class:`~yolo_heads.YOLODetector` (anything with ``forward`` and ``loss``).

    Args:
        model: the detector (built and seeded by the caller).
        dataset: yields ``(image, target)`` (e.g. :func:`yolo_heads.data.create_dataset`);
            its ``set_epoch(epoch)``, when it has one, keys the augmentation draws.
        val_dataset: scored with pycocotools every ``val_interval`` epochs and after the last
            (rank 0, EMA weights); ``weights/best`` keeps the best AP.
        epochs, batch_size, optimizer, lr, weight_decay: the schedule; ``optimizer`` is any
            ``timm.optim`` name.
        warmup_steps, min_lr_ratio: linear warm-up over that many updates, then cosine to
            ``lr * min_lr_ratio``.
        grad_clip: max gradient norm (0: off). ema, ema_decay: weight averaging.
        amp: bf16 autocast on CPU, fp16 autocast and a grad scaler on CUDA.
        num_workers, threads: DataLoader workers and torch intra-op threads; ``None`` chooses
            them from the usable cores and the load at the start
            (:func:`yolo_heads.threads.plan_cpu`; ``OMP_NUM_THREADS`` wins for threads); the
            choice is printed (logged without ``progress``). Pin ``threads`` for runs that
            repeat bit for bit on any machine state.
        max_bad_steps: a step with a non-finite loss is skipped with a warning; this many in a
            row stop training with an error.
        out_dir: the run folder (``results.csv``, ``weights/``, plots); ``None`` writes nothing.
        resume: a run folder (or its ``weights/last``) to continue from.
        callbacks: called with each epoch's row (rank 0) after its checkpoints are written.

    >>> import tempfile, torch
    >>> from yolo_heads import YOLODetector
    >>> from yolo_heads.data import CocoDetection, make_digits_detection
    >>> ann = make_digits_detection(tempfile.mkdtemp(), num_images=4, image_size=64,
    ...                             digit_size=(16, 24), progress=False)
    >>> model = YOLODetector("resnet18", num_classes=10, neck_channels=16)
    >>> result = train(model, CocoDetection(ann, image_size=64), epochs=1, batch_size=4,
    ...                progress=False)
    >>> sorted(result.history[0])[:4]
    ['box', 'cls', 'dfl', 'epoch']
    """
    check_positive("epochs", epochs, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("val_interval", val_interval, integer=True)
    check_positive("max_bad_steps", max_bad_steps, integer=True)
    for name, value in (("lr", lr), ("ema_decay", ema_decay)):
        check_positive(name, value)
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is not valid; expected a finite number > 0")
    if len(dataset) == 0:
        raise ValueError("dataset is empty; training needs at least one image")
    torch.manual_seed(seed)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(device)
    plan = plan_cpu(threads, num_workers, ranks=world)
    if device.type == "cpu":
        plan.apply()
    if rank == 0:
        (print if progress else log.info)(plan.describe())
    model.to(device).train()
    net: nn.Module = (
        DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [device])
        if distributed
        else model
    )
    sampler = (
        DistributedSampler(dataset, shuffle=True, seed=seed)
        if distributed
        else _EpochShuffle(len(dataset), seed)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=plan.workers,
        drop_last=len(dataset) >= 2 * batch_size * world,
    )
    opt = create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay)
    total = epochs * len(loader)
    warmup = min(warmup_steps, max(total // 4, 1))
    scheduler = CosineLRScheduler(
        opt,
        t_initial=max(total - warmup, 1),
        lr_min=lr * min_lr_ratio,
        warmup_t=warmup,
        warmup_lr_init=lr / max(warmup, 1),
        warmup_prefix=True,
        t_in_epochs=False,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    averaged = YoloEMA(model, decay=ema_decay, tau=max(10.0, total / 10)) if ema else None
    out = Path(out_dir) if out_dir is not None else None
    results = Results(out if rank == 0 else None)
    result = TrainResult(model=model)
    start_epoch, updates, best_fitness = 0, 0, -math.inf

    if resume is not None and _nothing_saved_yet(Path(resume)):
        warnings.warn(
            f"resume: {str(resume)!r} has no saved epoch yet (stopped during epoch 1); "
            "training from epoch 1",
            stacklevel=2,
        )
        resume = None
    if resume is not None:
        last = Path(resume)
        last = last / "weights" / "last" if (last / "weights").is_dir() else last
        state = load_trainer_state(last)
        model.load_state_dict(state["model"])
        if averaged is not None:
            load_checkpoint(last, averaged.module)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, updates = state["epoch"], state["updates"]
        best_fitness, result.skipped_steps = state["best_fitness"], state["skipped_steps"]
        result.history = list(state["history"])
        _set_rng_state(state["rng"])
        # The best checkpoint of the run so far stays the run's best until an epoch beats it
        # (rewritten from last when a kill came between the two writes of its epoch).
        result.last = last
        result.best, result.best_epoch = restore_best(last, state, write=rank == 0)
        if result.best is not None:
            result.best_fitness = best_fitness
        if start_epoch >= epochs:
            # no epoch left to rewrite the record: a kill may have come before its last write
            results.write(result.history, None, plots=plots)
            warnings.warn(
                f"resume: {last} already trained {start_epoch} of {epochs} epochs", stacklevel=2
            )
    scheduler.step_update(updates)

    bad_in_row = 0
    final = averaged.module if averaged is not None else model
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sums: dict[str, float] = {}
        count = 0
        # leave=False: the epoch's summary line below takes the bar's place
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank, leave=False
        )
        for images, targets in bar:
            images = images.to(device)
            # boxes, labels and, for instance segmentation, masks
            targets = [
                {k: t[k].to(device) for k in ("boxes", "labels", "masks") if k in t}
                for t in targets
            ]
            with _autocast(device, amp):
                outputs = net(images)
            outputs = _as_float(outputs)
            loss, parts = model.loss(outputs, targets, image_size=tuple(images.shape[-2:]))
            opt.zero_grad(set_to_none=True)
            if _agree_on_skip(loss, distributed):
                bad_in_row += 1
                result.skipped_steps += 1
                warnings.warn(
                    f"non-finite loss at epoch {epoch + 1} (this rank: {float(loss.detach())}); "
                    "step skipped on every rank",
                    RuntimeWarning,
                    stacklevel=2,
                )
                if bad_in_row >= max_bad_steps:
                    raise FloatingPointError(
                        f"{bad_in_row} non-finite losses in a row; lower lr={lr} or check the data"
                    )
                continue
            bad_in_row = 0
            used_lr = opt.param_groups[0]["lr"]  # the scheduler moves it on after the step
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            updates += 1
            scheduler.step_update(updates)
            if averaged is not None:
                averaged.update(model, step=updates)
            count += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.set_postfix({k: f"{v / count:.3f}" for k, v in sums.items()})
        row: dict[str, float] = {
            "epoch": epoch + 1,
            **{k: v / max(count, 1) for k, v in sums.items()},
        }
        validate = val_dataset is not None and rank == 0
        validate = validate and ((epoch + 1) % val_interval == 0 or epoch + 1 == epochs)
        evaluation = results.validate(final, val_dataset) if validate else None
        if evaluation is not None:
            row.update(evaluation.metrics)
        # the rate the epoch's last update used (the optimiser already holds the next one)
        row["lr"] = used_lr if count else opt.param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - began
        result.history.append(row)
        fitness = row.get("AP", -math.inf if val_dataset is not None else float(epoch))
        improved = fitness > best_fitness
        best_fitness = max(best_fitness, fitness)
        if improved:
            result.best_epoch, result.best_fitness = epoch + 1, fitness
        if out is not None and rank == 0:
            state = {
                "epoch": epoch + 1,
                "updates": updates,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "best_fitness": best_fitness,
                "best_epoch": result.best_epoch,
                "skipped_steps": result.skipped_steps,
                "history": result.history,
                "rng": _rng_state(),
            }
            meta = {"epoch": epoch + 1, "metrics": {k: row[k] for k in row if k[:2] == "AP"}}
            labels = {
                "label_names": getattr(dataset, "class_names", None),
                "category_ids": getattr(dataset, "label_to_category", None),
                "image_size": getattr(dataset, "image_size", None),
                "metadata": meta,
            }
            result.last = save_checkpoint(
                final, out / "weights" / "last", trainer_state=state, **labels
            )
            if improved:
                result.best = save_checkpoint(final, out / "weights" / "best", **labels)
            # results.png costs about 0.6 CPU s per drawing (a tenth of a small digits epoch):
            # drawn when the epoch was validated and at the end, as Ultralytics draws it.
            last_epoch = epoch + 1 == epochs
            results.write(
                result.history, evaluation, plots=plots and (evaluation is not None or last_epoch)
            )
        if rank == 0:
            (print if progress else log.info)(epoch_line(row, epochs))
            for callback in callbacks:
                callback(row)
    if out is not None and rank == 0:  # temporaries of killed writes no later write repeats
        for folder in (out, out / "weights"):
            clean_temporaries(folder)
    result.model = final
    return result


def _nothing_saved_yet(run: Path) -> bool:
    """True for a run folder stopped before its first ``weights/last`` was complete."""
    if not run.is_dir() or (run / "config.json").is_file() or run.name == "last":
        return False
    return not existing_folder(run / "weights" / "last").is_dir()
