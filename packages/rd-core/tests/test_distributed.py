"""compress() and atom_usage() under real torch.distributed (gloo, 2 CPU processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def _worker(rank: int, folder: str) -> None:
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


@pytest.mark.distributed
def test_compress_agrees_across_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    # Usage is summed over both shards: it equals the single-process usage of all the data.
    from rd_core import RetrieverDictionary, atom_usage

    torch.manual_seed(0)
    teacher = RetrieverDictionary(8, num_atoms=16, variant="authors")
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()
    teacher.eval()
    everything = atom_usage(teacher, r0["shard"] + r1["shard"])
    assert r0["positions"] == r1["positions"] == everything.num_positions == 2 * 3 * 2 * 25
    torch.testing.assert_close(r0["mean_abs"], everything.mean_abs)
    torch.testing.assert_close(r1["mean_abs"], everything.mean_abs)
    # Both ranks keep the same atoms and end with the same student and report.
    assert torch.equal(r0["kept"], r1["kept"])
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        torch.testing.assert_close(r0["state"][key], r1["state"][key], msg=key)
    assert r0["final"] == pytest.approx(r1["final"]) and r0["cosine"] == pytest.approx(r1["cosine"])
    assert r0["final"] < r0["initial"]
