"""DistributedDataParallel on gloo: 2 CPU processes train a few steps and stay identical."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


@pytest.mark.distributed
def test_ddp_gloo_two_processes_stay_identical(tmp_path):
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)  # spawned children inherit sys.path
    worker = importlib.import_module("_kw_ddp_worker")
    out = tmp_path / "result.pt"
    mp.spawn(worker.worker, args=(str(tmp_path / "init"), str(out)), nprocs=worker.WORLD, join=True)
    result = torch.load(out, weights_only=True)
    params = result["params"]
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    assert not torch.allclose(params[0], result["init"])  # it did train
    assert result["tau"] == 0.0
