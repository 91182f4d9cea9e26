"""Training loop: AdamW, warm-up + cosine schedule, EMA, tqdm, safetensors checkpoints, DDP.

Single process: ``train(model, dataset, epochs=...)``. Several processes: start with
``torchrun --nproc_per_node=2 -m yolo_heads.train --data train.json ...`` (or initialise
``torch.distributed`` yourself); the loop then wraps the model in DistributedDataParallel, shards
the data with a DistributedSampler, and only rank 0 shows progress and writes checkpoints.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ._checks import check_positive
from .checkpoint import save_checkpoint
from .data.coco import collate


class ModelEMA:
    """Exponential moving average of a model's weights (YOLOv5 style, warm-up on the decay).

    ``decay_t = decay * (1 - exp(-t / tau))`` so early updates follow the model closely.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 200.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained (EMA) model, per-epoch mean losses, checkpoint."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    skipped_steps: int = 0


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)  # no decay on norms, biases, implicit vectors
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(
    model: nn.Module,
    dataset: Dataset,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    warmup_steps: int = 50,
    grad_clip: float = 10.0,
    ema: bool = True,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    show_progress: bool = True,
    max_bad_steps: int = 10,
) -> TrainResult:
    """Train a :class:`~yolo_heads.YOLODetector` (anything with ``forward`` and ``loss``).

    ``dataset`` yields ``(image, target)`` pairs (e.g. :class:`~yolo_heads.data.CocoDetection`).
    A step whose loss is not finite is skipped with a warning (``max_bad_steps`` in a row stop
    training with an error). Checkpoints (``out_dir/last.safetensors``, the EMA weights when
    ``ema``) are written atomically by rank 0 after every epoch. Returns a :class:`TrainResult`.

    >>> import tempfile, torch
    >>> from yolo_heads import YOLODetector
    >>> from yolo_heads.data import CocoDetection, make_digits_detection
    >>> ann = make_digits_detection(tempfile.mkdtemp(), num_images=4, image_size=64,
    ...                             digit_size=(16, 24), show_progress=False)
    >>> model = YOLODetector("resnet18", num_classes=10, neck_channels=16)
    >>> result = train(model, CocoDetection(ann, image_size=64), epochs=1, batch_size=4,
    ...                show_progress=False)
    >>> len(result.history)
    1
    """
    check_positive("epochs", epochs, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("lr", lr)
    if len(dataset) == 0:
        raise ValueError("dataset is empty; training needs at least one image")
    torch.manual_seed(seed)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    device = torch.device(device)
    model.to(device).train()
    net: nn.Module = (
        DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [device])
        if distributed
        else model
    )
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=len(dataset) >= 2 * batch_size * (dist.get_world_size() if distributed else 1),
        generator=generator if sampler is None else None,
    )
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    total_steps = epochs * len(loader)
    warmup = min(warmup_steps, max(total_steps // 4, 1))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    averaged = ModelEMA(model, tau=max(10.0, total_steps / 10)) if ema else None
    result = TrainResult(model=model)
    out_dir = Path(out_dir) if out_dir is not None else None
    bad_in_row = 0
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show_progress or rank)
        for images, targets in bar:
            images = images.to(device)
            targets = [
                {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
            ]
            outputs = net(images)
            loss, parts = model.loss(outputs, targets, image_size=tuple(images.shape[-2:]))
            if not torch.isfinite(loss):
                bad_in_row += 1
                result.skipped_steps += 1
                warnings.warn(
                    f"non-finite loss {float(loss.detach())} at epoch {epoch + 1}; step skipped",
                    RuntimeWarning,
                    stacklevel=2,
                )
                if bad_in_row >= max_bad_steps:
                    raise FloatingPointError(
                        f"{bad_in_row} non-finite losses in a row; lower lr={lr} or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                continue
            bad_in_row = 0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update(model)
            count += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.set_postfix(loss=f"{sums['loss'] / count:.3f}")
        result.history.append({k: v / max(count, 1) for k, v in sums.items()})
        final = averaged.module if averaged is not None else model
        if out_dir is not None and rank == 0:
            result.checkpoint = save_checkpoint(
                final, out_dir / "last.safetensors", {"epoch": epoch + 1, **result.history[-1]}
            )
    result.model = averaged.module if averaged is not None else model
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: ``[torchrun --nproc_per_node=N] python -m yolo_heads.train --data ...``."""
    from .data.coco import CocoDetection
    from .detector import YOLODetector
    from .evaluate import evaluate_detector

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="COCO annotation JSON for training")
    parser.add_argument("--val", help="COCO annotation JSON for evaluation (rank 0)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--head", default="anchor_free")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--neck-channels", type=int, default=64)
    parser.add_argument("--out", default="runs/yolo")
    args = parser.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    try:
        train_set = CocoDetection(args.data, image_size=args.image_size, augment=True)
        model = YOLODetector(
            args.backbone,
            num_classes=len(train_set.label_to_category),
            head=args.head,
            neck_channels=args.neck_channels,
        )
        result = train(
            model,
            train_set,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            out_dir=args.out,
        )
        if args.val and (not dist.is_initialized() or dist.get_rank() == 0):
            val_set = CocoDetection(args.val, image_size=args.image_size)
            metrics = evaluate_detector(result.model, val_set)
            print(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
