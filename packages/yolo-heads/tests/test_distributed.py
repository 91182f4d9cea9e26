from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(digits, tiny, out: Path, monkeypatch, nan_rank: int = -1) -> list[dict]:
    # Spawned processes re-import the worker by module name: make the tests folder importable.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    sys.modules.pop("_ddp_worker", None)
    import _ddp_worker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(
            _ddp_worker.run,
            args=(2, _free_port(), str(digits[0]), str(out), tiny, nan_rank),
            nprocs=2,
            join=True,
        )
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.distributed
def test_ddp_two_processes_gloo(digits, tiny, tmp_path, monkeypatch):
    for report in _spawn(digits, tiny, tmp_path, monkeypatch):
        assert report["equal"], "DDP keeps the replicas identical after training"
        assert report["epochs"] == 1 and report["skipped"] == 0
    # Only rank 0 writes the checkpoint folder; it is complete and nothing temporary is left.
    assert sorted(p.name for p in (tmp_path / "weights" / "last").iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer_state.pt",
    ]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.distributed
def test_ddp_non_finite_loss_on_one_rank_skips_on_every_rank(digits, tiny, tmp_path, monkeypatch):
    """Rank 1 alone sees a NaN loss at its second step: both ranks skip that step (a rank
    deciding alone would leave the other waiting in DDP's gradient all-reduce)."""
    reports = _spawn(digits, tiny, tmp_path, monkeypatch, nan_rank=1)
    assert [r["skipped"] for r in reports] == [1, 1]
    assert all(r["equal"] for r in reports)
