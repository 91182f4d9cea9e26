from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, ann: str, out: str, tiny: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from yolo_heads import YOLODetector
        from yolo_heads.data import CocoDetection
        from yolo_heads.train import train

        torch.manual_seed(0)  # same initial weights on every rank
        model = YOLODetector(num_classes=10, **tiny)
        result = train(
            model,
            CocoDetection(ann, image_size=64, augment=True, seed=rank),
            epochs=1,
            batch_size=2,
            out_dir=out,
            ema=False,
            show_progress=False,
        )
        flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        torch.save(
            {"equal": torch.equal(gathered[0], gathered[1]), "steps": len(result.history)},
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_ddp_two_processes_gloo(digits, tiny, tmp_path):
    mp.spawn(
        _worker, args=(2, _free_port(), str(digits[0]), str(tmp_path), tiny), nprocs=2, join=True
    )
    for rank in range(2):
        report = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert report["equal"], "DDP keeps the replicas identical after training"
    # Only rank 0 writes the checkpoint; it exists and nothing half-written is left.
    assert (tmp_path / "last.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp"))
