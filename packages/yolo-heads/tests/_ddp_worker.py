"""The per-process body of the DDP tests (a module of its own so spawned processes import it)."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def _nan_on_step(model, step: int) -> None:
    """Make ``model.loss`` return NaN on its ``step``-th call (1-based), on this rank only."""
    original, calls = model.loss, [0]

    def loss(*args, **kwargs):
        total, parts = original(*args, **kwargs)
        calls[0] += 1
        return (total * float("nan"), parts) if calls[0] == step else (total, parts)

    model.loss = loss


def run(
    rank: int, world: int, port: int, ann: str, out: str, tiny: dict, nan_rank: int = -1
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A short timeout: ranks that disagree on a step fail the test instead of hanging it.
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        from yolo_heads import YOLODetector
        from yolo_heads.data import CocoDetection
        from yolo_heads.train import train

        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        model = YOLODetector(num_classes=10, **tiny)
        if rank == nan_rank:
            _nan_on_step(model, 2)
        dataset = CocoDetection(ann, image_size=64, augment=True, seed=rank)
        result = train(
            model,
            dataset,
            epochs=1,
            batch_size=2,
            out_dir=out,
            ema=False,
            progress=False,
            plots=False,
        )
        flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        report = {
            "equal": torch.equal(gathered[0], gathered[1]),
            "epochs": len(result.history),
            "skipped": result.skipped_steps,
        }
        torch.save(report, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
