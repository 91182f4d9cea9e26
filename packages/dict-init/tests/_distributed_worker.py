"""Worker for test_distributed.py (spawned processes import it by name, hence its own file)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 32, 32, generator=g)
    means = torch.randn(30, 8, generator=g) * 4
    x = means[torch.randint(30, (3001,), generator=g)] + torch.randn(3001, 8, generator=g)
    return images, x


def small_cnn() -> torch.nn.Module:
    """A small random CNN (no timm import in the spawned workers keeps them quick to start)."""
    torch.manual_seed(0)  # the same weights in every process
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, stride=2, padding=1),
    )  # fmt: skip


def worker(rank: int, world: int, folder: str) -> None:
    from dict_init import VisionEncoder, build_dictionary, kmeans

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{os.path.join(folder, 'rendezvous')}", rank=rank,
        world_size=world,
    )  # fmt: skip
    try:
        images, x = data()
        start, stop = len(x) * rank // world, len(x) * (rank + 1) // world
        result = kmeans(x[start:stop], 12, seed=0, init_sample_size=1000, progress=False)
        encoder = VisionEncoder(small_cnn(), "2", image_size=32)
        d = build_dictionary(
            encoder, images, num_atoms=16, seed=0, positions_per_image=8,
            work_dir=os.path.join(folder, "work"), progress=False,
        )  # fmt: skip
        torch.save(
            {"centers": result.centers, "inertia": result.inertia, "atoms": d.atoms,
             "num_vectors": d.metadata["num_vectors"]},
            os.path.join(folder, f"rank{rank}.pt"),
        )  # fmt: skip
    finally:
        dist.destroy_process_group()
