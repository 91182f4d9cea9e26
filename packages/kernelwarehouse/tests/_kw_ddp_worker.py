"""Worker of test_distributed.py, in a plain module so that spawned processes can import it
(pytest's importlib mode gives test modules names that child processes cannot import)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

import kernelwarehouse as kw

WORLD = 2


def build_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    # one warehouse shared by the three convolutions: the non-owner layers hold references
    kw.convert(
        model, budget=0.5, groups=lambda m, n, mod: "convs" if n != "9" else "head", exclude=[]
    )
    return model


def worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    model = build_model()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    sched = kw.TemperatureScheduler(model, total=3)
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    losses = []
    for _ in range(3):
        x = torch.randn(4, 3, 12, 12, generator=gen)
        y = torch.randint(0, 5, (4,), generator=gen)
        loss = nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(
            {
                "params": torch.stack(gathered),
                "init": torch.cat([p.detach().flatten() for p in build_model().parameters()]),
                "losses": losses,
                "tau": kw.get_temperature(model),
            },
            out_file,
        )
    dist.destroy_process_group()
