"""compress() and atom_usage() under real torch.distributed (gloo, 2 CPU processes)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


@pytest.mark.distributed
def test_compress_agrees_across_ranks(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path
    worker = importlib.import_module("_rd_dist_worker")
    mp.spawn(worker.run, args=(str(tmp_path),), nprocs=worker.WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
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
