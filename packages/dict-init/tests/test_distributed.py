from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers import the worker module

import _distributed_worker as worker

from dict_init import VisionEncoder, build_dictionary, kmeans

# Same data, same seed: 2 ranks give the same atoms as 1 process up to float summation order.
TOLERANCE = 1e-4


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(worker.worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    images, x = worker.data()
    single = kmeans(x, 12, seed=0, init_sample_size=1000, progress=False)
    encoder = VisionEncoder(worker.small_cnn(), "2", image_size=32)
    d = build_dictionary(encoder, images, num_atoms=16, seed=0, positions_per_image=8,
                         progress=False)  # fmt: skip
    for out in ranks:  # every rank holds the full result
        torch.testing.assert_close(out["centers"], single.centers, atol=TOLERANCE, rtol=0)
        assert out["inertia"] == pytest.approx(single.inertia, rel=1e-6)
        assert out["num_vectors"] == 10 * 8
        torch.testing.assert_close(out["atoms"], d.atoms, atol=TOLERANCE, rtol=0)
    # The shards of both ranks are in one manifest, in rank order.
    manifest = (tmp_path / "work" / "features" / "manifest.json").read_text()
    assert '"rank0-00000.safetensors"' in manifest and '"rank1-00000.safetensors"' in manifest
