"""Worker of test_distributed.py, in its own module so spawned processes can import it.

pytest's importlib import mode gives test files module names that a fresh process cannot
import; this file is imported by its plain name from the tests folder instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

WORLD = 2


class _SGD:
    """Plain SGD. torch.optim's constructor imports torch._dynamo (many seconds in each fresh
    process); the test is about agreement across ranks, not about the optimiser."""

    def __init__(self, params, lr=0.05):
        self.params, self.lr = list(params), lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def run(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/init", rank=rank, world_size=WORLD
    )
    try:
        from rd_core import RetrieverDictionary, atom_usage, compress

        torch.manual_seed(0)  # same teacher on every rank
        teacher = RetrieverDictionary(8, num_atoms=16, variant="authors")
        with torch.no_grad():
            for p in teacher.parameters():
                p.normal_()
        teacher.eval()
        torch.manual_seed(100 + rank)  # a different data shard per rank
        shard = [torch.randn(2, 8, 5, 5) for _ in range(3)]
        usage = atom_usage(teacher, shard)
        report = compress(
            None, teacher, 6, shard, epochs=3, optimizer=_SGD, max_positions=32, progress=False
        )
        result = {
            "positions": usage.num_positions,
            "mean_abs": usage.mean_abs,
            "kept": report.kept_atoms,
            "state": {k: v.clone() for k, v in report.student.state_dict().items()},
            "initial": report.initial_loss,
            "final": report.final_loss,
            "cosine": report.cosine_similarity,
            "shard": shard,
        }
        torch.save(result, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
