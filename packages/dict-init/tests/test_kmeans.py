from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dict_init import FeatureShards, ShardWriter, assign, inertia, kmeans


@pytest.mark.parametrize(("n", "d", "k", "centers"), [(3000, 16, 20, 40), (4000, 32, 64, 64)])
def test_inertia_within_2_percent_of_sklearn(make_blobs, n, d, k, centers):
    x = make_blobs(n, d, centers)
    ours = kmeans(x, k, seed=0, progress=False)
    sk = KMeans(k, random_state=0, n_init=1).fit(x.numpy())
    assert ours.centers.shape == (k, d)
    assert ours.inertia <= sk.inertia_ * 1.02
    # The reported inertia is the inertia of the returned centres.
    assert ours.inertia == pytest.approx(inertia(x, ours.centers), rel=1e-5)
    assert int(ours.counts.sum()) == n


def test_same_seed_same_centres_other_seed_differs(make_blobs):
    x = make_blobs(2000, 8, 30)
    a = kmeans(x, 10, seed=1, progress=False).centers
    b = kmeans(x, 10, seed=1, progress=False).centers
    c = kmeans(x, 10, seed=2, progress=False).centers
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_chunk_size_does_not_change_the_result(make_blobs):
    x = make_blobs(1500, 8, 12)
    a = kmeans(x, 12, seed=0, chunk_size=4096, progress=False)
    b = kmeans(x, 12, seed=0, chunk_size=100, progress=False)
    torch.testing.assert_close(a.centers, b.centers, atol=1e-4, rtol=1e-4)


def test_streaming_from_shards_matches_memory(make_blobs, tmp_path):
    x = make_blobs(2500, 8, 20)
    writer = ShardWriter(tmp_path, shard_size=700)
    for start in range(0, len(x), 333):
        writer.add(x[start : start + 333], torch.arange(start, min(start + 333, len(x))))
    shards = FeatureShards.from_parts(tmp_path, [writer.close()])
    assert len(shards.shards) == 4 and shards.num_vectors == 2500
    torch.testing.assert_close(shards.load(), x)
    torch.testing.assert_close(shards.gather(torch.tensor([2499, 0, 701])), x[[2499, 0, 701]])
    a = kmeans(x, 16, seed=0, init_sample_size=1000, progress=False)
    b = kmeans(shards, 16, seed=0, init_sample_size=1000, chunk_size=256, progress=False)
    torch.testing.assert_close(a.centers, b.centers, atol=1e-4, rtol=1e-4)


def test_minibatch_is_close_to_lloyd(make_blobs):
    x = make_blobs(6000, 16, 24)
    lloyd = kmeans(x, 24, seed=0, progress=False)
    mini = kmeans(x, 24, seed=0, algorithm="minibatch", batch_size=512, progress=False)
    assert mini.inertia <= lloyd.inertia * 1.05


def test_faiss_backend(make_blobs):
    pytest.importorskip("faiss")
    x = make_blobs(3000, 16, 20)
    result = kmeans(x, 20, seed=0, backend="faiss", progress=False)
    sk = KMeans(20, random_state=0, n_init=1).fit(x.numpy())
    assert result.centers.shape == (20, 16)
    assert result.inertia <= sk.inertia_ * 1.05


def test_empty_clusters_are_relocated():
    # Two far groups; initial centres all in one group leave clusters empty at first.
    x = torch.cat([torch.randn(200, 2) * 0.1, torch.randn(200, 2) * 0.1 + 50.0])
    result = kmeans(x, 6, seed=0, progress=False)
    assert int((result.counts == 0).sum()) == 0
    labels, _ = assign(x, result.centers)
    assert len(set(labels[:200].tolist()) & set(labels[200:].tolist())) == 0


def test_duplicate_rows_fewer_distinct_than_k():
    x = torch.tensor([[0.0, 0.0]] * 10 + [[1.0, 1.0]] * 10)
    result = kmeans(x, 4, seed=0, progress=False)
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_numpy_input(make_blobs):
    x = make_blobs(500, 4, 5).numpy().astype(np.float64)
    assert kmeans(x, 5, seed=0, progress=False).centers.dtype == torch.float32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_rejected(bad):
    x = torch.randn(50, 3)
    x[7, 1] = bad
    with pytest.raises(ValueError, match=r"non-finite.*\(7, 1\)"):
        kmeans(x, 4, progress=False)


def test_non_finite_in_shards_rejected(tmp_path):
    writer = ShardWriter(tmp_path, shard_size=10)
    x = torch.randn(30, 3)
    x[25, 0] = float("nan")
    writer.add(x, torch.arange(30))
    shards = FeatureShards.from_parts(tmp_path, [writer.close()])
    with pytest.raises(ValueError, match="non-finite"):
        kmeans(shards, 4, progress=False)


def test_k_larger_than_rows():
    with pytest.raises(ValueError, match=r"k=11 is invalid.*at most the number of rows \(10\)"):
        kmeans(torch.randn(10, 3), 11, progress=False)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        kmeans(torch.zeros(0, 3), 2, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k=0"),
        ({"k": 2, "backend": "sklearn"}, "backend='sklearn'.*faiss.*torch"),
        ({"k": 2, "algorithm": "elkan"}, "algorithm='elkan'"),
        ({"k": 2, "chunk_size": 0}, "chunk_size=0"),
        ({"k": 4, "init_sample_size": 2}, "init_sample_size=2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans(torch.randn(20, 3), progress=False, **kwargs)


def test_not_a_matrix():
    with pytest.raises(ValueError, match=r"x.shape=\(2, 3, 4\)"):
        kmeans(torch.randn(2, 3, 4), 2, progress=False)


class _LargestNewTensor(TorchDispatchMode):
    """Records the largest tensor any torch op creates (views and in-place results excluded)."""

    def __init__(self):
        super().__init__()
        self.numel, self.where = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.layout == torch.strided
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                continue
            if t.untyped_storage().data_ptr() not in inputs and t.numel() > self.numel:
                self.numel, self.where = t.numel(), (str(func), tuple(t.shape))
        return out


@pytest.mark.parametrize("init_sample_size", [5000, None])
@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_memory_is_bounded_by_the_chunk_not_by_n_times_k(init_sample_size, algorithm):
    # Every tensor k-means creates must be at most chunk x max(k, d), the seeding sample
    # (SEED_ROWS_PER_CENTER k x d), or n long (the row permutation); never n x k (2M here)
    # nor a copy of x.
    # Seeding on all rows (init_sample_size=None) holds n x (2 + ln k) candidate distances.
    from dict_init.kmeans import SEED_ROWS_PER_CENTER

    n, d, k, chunk = 40_000, 16, 50, 1000
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    trials = 2 + int(math.log(k))
    bound = max(chunk * max(k, d), SEED_ROWS_PER_CENTER * k * d, n)
    if init_sample_size is None:
        bound = max(bound, n * trials)
    assert bound * 5 < n * k and bound < n * d
    mode = _LargestNewTensor()
    with mode:
        result = kmeans(
            x, k, seed=0, chunk_size=chunk, batch_size=chunk, init_sample_size=init_sample_size,
            max_iter=2, sample_iter=2, algorithm=algorithm, progress=False,
        )  # fmt: skip
    assert result.centers.shape == (k, d)
    assert mode.numel > 0
    assert mode.numel <= bound, mode.where


def test_largest_new_tensor_sees_an_n_by_k_product():
    # The check above would catch the unchunked product (guards the test itself).
    x, c = torch.randn(2000, 8), torch.randn(50, 8)
    mode = _LargestNewTensor()
    with mode:
        torch.cdist(x, c).min(dim=1)
    assert mode.numel == 2000 * 50
