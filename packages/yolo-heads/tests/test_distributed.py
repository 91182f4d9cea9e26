from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_ddp_two_processes_gloo(digits, tiny, tmp_path, monkeypatch):
    # Spawned processes re-import the worker by module name: make the tests folder importable.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    sys.modules.pop("_ddp_worker", None)
    import _ddp_worker

    mp.spawn(
        _ddp_worker.run,
        args=(2, _free_port(), str(digits[0]), str(tmp_path), tiny),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        report = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert report["equal"], "DDP keeps the replicas identical after training"
        assert report["epochs"] == 1
    # Only rank 0 writes the checkpoint; it exists and nothing half-written is left.
    assert (tmp_path / "last.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp"))
