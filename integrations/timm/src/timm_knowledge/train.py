"""Image classification training with timm's recipe pieces, for any registered model.

timm's data pipeline (``create_dataset`` on an image folder, ``create_loader``), optimiser
(``create_optimizer_v2``), schedule (``create_scheduler_v2``, stepped per update), mixup / cutmix
(``Mixup``) and label smoothing, ``ModelEmaV3``, autocast (bfloat16 on CPU), DistributedDataParallel
(gloo on CPU; started by ``torchrun``), resume, per-epoch top-1 / top-5 and checkpoints in the Hub
format (``config.json`` + ``model.safetensors`` by ``timm.models.save_for_hf``).

What timm's own ``train.py`` lacks is the KernelWarehouse temperature: a KW model's tau goes
linearly from ``temp_init`` to 0 over the first ``temp_epochs`` epochs, stepped every iteration
(the paper: 10 of 100 epochs with the traditional recipe, 20 of 300 with the advanced one), and is
logged. Before iteration ``i`` (counted from 0 over the whole run)
``tau = max(0, temp_init * (1 - i / (temp_epochs * iterations_per_epoch)))``.

Example:
    >>> from timm_knowledge.train import TrainConfig, train  # doctest: +SKIP
    >>> train(TrainConfig(model="kw_resnet18", model_kwargs={"budget": 0.5},
    ...                   data_dir="images/", output="runs/kw18", epochs=100))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
import torch.distributed as dist
from PIL import Image
from timm.data import ImageDataset, Mixup, create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import save_for_hf
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy
from torch import nn

import kernelwarehouse as kw

from ._train_config import AMP_DTYPES, TrainConfig
from .threads import choose as choose_cpu

__all__ = ["TrainConfig", "train"]


# ---------------------------------------------------------------------------- helpers
def _rank_world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _keep_epochs(path: Path, done: int) -> None:
    """Drop the rows of epochs after ``done`` (logged before a kill came ahead of their
    checkpoint), so a resumed run's log has each epoch once."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] <= done]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _save_hub_dir(model: nn.Module, target: Path, model_args: dict[str, Any]) -> None:
    """``config.json`` + ``model.safetensors`` written into a temporary folder, then swapped in.
    Files get the permissions the umask gives (safetensors writes its file 0600)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_for_hf(model, str(tmp), model_args=model_args or None, safe_serialization=True)
    for child in tmp.iterdir():
        os.chmod(child, _umask_mode(0o666))
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# last.pth layout: 2 counts "epoch" from 1 (the epochs done); 1 (no key) counted it from 0
_STATE_VERSION = 2


def _epochs_done(state: dict[str, Any]) -> int:
    done = int(state["epoch"])
    return done if state.get("state_version", 1) >= 2 else done + 1


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, _, gauss = random.getstate()
    random.setstate((version, tuple(int(v) for v in state["python"]), gauss))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _reduce(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def _evaluate(
    model: nn.Module, loader: Any, device: torch.device, amp: Any, num_classes: int
) -> dict[str, float]:
    model.eval()
    top5_k = min(5, num_classes)
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, top-1 hits, top-5 hits, samples
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with amp():
            logits = model(images)
        logits = logits.float()
        n = targets.shape[0]
        top1, top5 = accuracy(logits, targets, topk=(1, top5_k))
        sums[0] += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        sums[1] += top1.item() * n / 100
        sums[2] += top5.item() * n / 100
        sums[3] += n
    loss, hit1, hit5, count = _reduce(sums, device)
    count = max(count, 1)
    return {"loss": loss / count, "top1": 100 * hit1 / count, "top5": 100 * hit5 / count}


def _batches(loader: Any, epoch: int) -> Iterator[Any]:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    yield from loader


class _CheckedImages(ImageDataset):
    """timm's ``ImageDataset`` that names an unreadable image instead of skipping it silently
    (timm logs it and takes the next one); with ``skip_bad_images`` it warns and skips as timm
    does. The default matches dict-init's and yolo-heads': fail, naming the file."""

    skip_bad_images = False

    def __getitem__(self, index: int):
        for _ in range(self._max_retries):
            image, target = self.reader[index][:2]
            try:
                image = Image.open(image)
                image = image.convert(self.input_img_mode or "RGB")  # decodes the pixels
                break
            except Exception as err:  # PIL: OSError (truncated), UnidentifiedImageError, ...
                path = self.reader.filename(index, absolute=True)
                reason = f"{type(err).__name__}: {err}"
                if not self.skip_bad_images:
                    raise ValueError(
                        f"image {str(path)!r} cannot be read ({reason}); pass skip_bad_images=True "
                        "(command line: --skip-bad-images) to leave such files out"
                    ) from None
                warnings.warn(f"skipped unreadable image {str(path)!r} ({reason})", stacklevel=2)
                index = (index + 1) % len(self.reader)
        else:
            raise ValueError(f"{self._max_retries} consecutive images cannot be read")
        if self.transform is not None:
            image = self.transform(image)
        return image, -1 if target is None else target


# ---------------------------------------------------------------------------- training
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on the image folder ``cfg.data_dir`` (``train/`` and ``val/``
    subfolders of class folders); returns the last epoch's metrics.

    Written to ``cfg.output``: ``last.pth`` (resume state, loaded with
    ``torch.load(weights_only=True)``), ``model/`` and, with EMA, ``model_ema/`` (Hub format;
    ``timm.create_model("local-dir:<output>/model", pretrained=True)`` rebuilds it),
    ``metrics.jsonl`` (one line per epoch: losses, top-1 / top-5, lr, tau) and
    ``iterations.jsonl`` (one line per iteration: step, lr, tau, loss).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg={type(cfg).__name__} must be a TrainConfig")
    cfg.check()
    rank, world = _rank_world()
    device = torch.device(cfg.device)
    threads, workers, plan = choose_cpu(cfg.threads, cfg.workers, ranks=world)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if rank == 0:
        print(plan, flush=True)
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)

    train_set = create_dataset("", root=cfg.data_dir, split=cfg.train_split, is_training=True)
    val_set = create_dataset("", root=cfg.data_dir, split=cfg.val_split)
    if len(train_set) == 0:
        raise ValueError(f"data_dir={cfg.data_dir!r} has no training images")
    num_classes = len(train_set.reader.class_to_idx)
    if num_classes < 2:
        raise ValueError(
            f"data_dir={cfg.data_dir!r}: the {cfg.train_split} split has {num_classes} class "
            f"({sorted(train_set.reader.class_to_idx)}); a classifier needs at least 2 class "
            "folders (with one, the loss is 0 and nothing is learnt)"
        )
    for dataset in (train_set, val_set):
        if type(dataset) is ImageDataset:  # an image folder (always, from create_dataset(""))
            dataset.__class__ = _CheckedImages
            dataset.skip_bad_images = cfg.skip_bad_images
    model = timm.create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_cfg = resolve_data_config(model=model)
    # the saved config.json says the trained resolution, so resolve_data_config on the saved
    # model evaluates at it (not at the base architecture's 224)
    trained = {
        k: v for k, v in getattr(model, "pretrained_cfg", {}).items() if k != "test_input_size"
    }
    model.pretrained_cfg = {**trained, "input_size": (3, *cfg.image_hw)}
    data_cfg["input_size"] = (3, *cfg.image_hw)
    common = dict(
        input_size=data_cfg["input_size"],
        batch_size=cfg.batch_size,
        mean=data_cfg["mean"],
        std=data_cfg["std"],
        interpolation=data_cfg["interpolation"],
        crop_pct=data_cfg["crop_pct"],
        num_workers=workers,
        distributed=world > 1,
        use_prefetcher=False,
        persistent_workers=False,
        device=device,
    )
    train_loader = create_loader(train_set, is_training=True, no_aug=cfg.no_aug, **common)
    val_loader = create_loader(val_set, is_training=False, **common)
    updates_per_epoch = len(train_loader)

    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
        criterion: nn.Module = SoftTargetCrossEntropy()  # smoothing is in the mixed targets
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    optimizer = create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    scheduler, num_epochs = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay) if cfg.model_ema else None
    has_kw = kw.get_temperature(model) is not None
    anneal_steps = cfg.temp_epochs * updates_per_epoch

    def tau_at(i: int) -> float:
        # the schedule as a function of the global iteration, so a resumed run continues it
        if anneal_steps <= 0:
            return 0.0
        return max(0.0, cfg.temp_init * (1.0 - i / anneal_steps))

    start_epoch, step = 0, 0
    if cfg.resume is not None:
        try:
            state = torch.load(cfg.resume, map_location=device, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"resume={cfg.resume!r} cannot be read ({first}); it is not a complete last.pth "
                "(truncated or not a checkpoint): resume from another copy or start again"
            ) from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        start_epoch, step = _epochs_done(state), int(state["step"])
        _set_rng_state(state["rng"])
        if rank == 0 and state.get("state_version", 1) >= 2:
            for log in ("metrics.jsonl", "iterations.jsonl"):
                _keep_epochs(out / log, start_epoch)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    amp_dtype = AMP_DTYPES[cfg.amp_dtype]

    def amp():
        if not cfg.amp:
            return nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    model_args = dict(cfg.model_kwargs)  # build arguments, so "local-dir:" rebuilds the model
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, num_epochs):
        net.train()
        began, loss_sum, rows = time.perf_counter(), 0.0, []
        for images, targets in _batches(train_loader, epoch):
            images, targets = images.to(device), targets.to(device)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if mixup is not None:
                images, targets = mixup(images, targets)
            tau = None
            if has_kw:
                tau = tau_at(step)
                kw.set_temperature(model, tau)
                if ema is not None:  # tau is a buffer: the EMA copy follows, not an average
                    kw.set_temperature(ema.module, tau)
            with amp():
                loss = criterion(net(images), targets)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {step} (epoch {epoch + 1})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]  # the rate this update uses
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(model, step=step)
                if has_kw:
                    kw.set_temperature(ema.module, tau)
            loss_sum += loss.item()
            rows.append(
                {"epoch": epoch + 1, "step": step - 1, "lr": lr, "tau": tau, "loss": loss.item()}
            )
        scheduler.step(epoch + 1)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": _reduce([loss_sum / max(len(rows), 1)], device)[0] / world,
            "lr": rows[-1]["lr"] if rows else optimizer.param_groups[0]["lr"],  # its last update's
            "tau": kw.get_temperature(model),
            "seconds": time.perf_counter() - began,
            **{
                f"val_{k}": v
                for k, v in _evaluate(net, val_loader, device, amp, num_classes).items()
            },
        }
        if ema is not None:
            ema_metrics = _evaluate(ema.module, val_loader, device, amp, num_classes)
            metrics.update({f"ema_val_{k}": v for k, v in ema_metrics.items()})
        if rank == 0:
            _append_jsonl(out / "iterations.jsonl", rows)
            _append_jsonl(out / "metrics.jsonl", [metrics])
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,  # epochs done; numbered from 1 as in the logs
                "state_version": _STATE_VERSION,
                "step": step,
                "rng": _rng_state(),
                "config": json.dumps(dataclasses.asdict(cfg)),
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            tmp = out / "last.pth.tmp"
            torch.save(state, tmp)
            os.replace(tmp, out / "last.pth")
            _save_hub_dir(model, out / "model", model_args)
            if ema is not None:
                _save_hub_dir(ema.module, out / "model_ema", model_args)
            print(json.dumps(metrics), flush=True)
    if rank == 0:
        _write_json_atomic(out / "summary.json", metrics)
    return metrics
