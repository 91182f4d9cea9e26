"""dict-init k-means against scikit-learn's KMeans and faiss on the same data, in one run.

The data imitate backbone features: 4096 clusters in a 32-d latent space, mapped to ``d``
dimensions by a random linear layer and a ReLU, plus a little noise (non-negative, low
intrinsic dimension, many modes). Every method gets the same float32 matrix and its inertia
is recomputed with the same function from its centres. "peak RSS" is the growth of the
process' resident memory during the call (Linux ``VmHWM`` after resetting it), i.e. what the
method allocates beyond the data; the ``N x M`` distance matrix is shown for comparison.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dict_init import inertia, kmeans


def feature_like(n: int, d: int, seed: int = 0, modes: int = 4096, latent: int = 32):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(modes, latent, generator=g) * 2
    z = centers[torch.randint(modes, (n,), generator=g)] + torch.randn(n, latent, generator=g)
    w = torch.randn(latent, d, generator=g) / latent**0.5
    return (torch.relu(z @ w) + 0.1 * torch.randn(n, d, generator=g)).float().contiguous()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def measure(fn):
    """(seconds, centres, peak resident memory growth in MiB or None off Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        before = _rss_kib("VmRSS:")
    except OSError:
        before = None
    start = time.perf_counter()
    centers = fn()
    seconds = time.perf_counter() - start
    peak = None if before is None else max(_rss_kib("VmHWM:") - before, 0) / 1024
    return seconds, centers, peak


def main(quick: bool = False) -> str:
    n, d, k = (20_000, 128, 128) if quick else (200_000, 512, 512)
    x = feature_like(n, d)
    runs = {}

    runs["dict-init torch (lloyd)"] = measure(lambda: kmeans(x, k, seed=0, progress=False).centers)
    runs["dict-init torch (lloyd, chunk 1024)"] = measure(
        lambda: kmeans(x, k, seed=0, chunk_size=1024, progress=False).centers
    )
    runs["dict-init torch (minibatch)"] = measure(
        lambda: kmeans(x, k, seed=0, algorithm="minibatch", max_iter=10, progress=False).centers
    )
    try:
        from sklearn.cluster import KMeans

        runs["scikit-learn KMeans (k-means++, n_init=1)"] = measure(
            lambda: torch.from_numpy(
                KMeans(k, random_state=0, n_init=1).fit(x.numpy()).cluster_centers_
            ).float()
        )
    except ImportError:
        pass
    try:
        import faiss

        runs["dict-init faiss backend"] = measure(
            lambda: kmeans(x, k, seed=0, backend="faiss", progress=False).centers
        )

        def plain_faiss():
            model = faiss.Kmeans(d, k, niter=25, seed=0)  # faiss defaults: random init
            model.train(x.numpy())
            return torch.from_numpy(model.centroids.copy())

        runs["faiss.Kmeans (defaults, niter=25)"] = measure(plain_faiss)
    except ImportError:
        pass

    baseline = "scikit-learn KMeans (k-means++, n_init=1)"
    ref_time, ref_centers, _ = runs.get(baseline, next(iter(runs.values())))
    ref_inertia = inertia(x, ref_centers)
    lines = [
        f"k-means of {n:,} x {d} features into {k} centres (seed 0), float32, CPU. "
        f"Distance matrix N x M would be {n * k * 4 / 2**20:.0f} MiB; "
        f"dict-init holds chunk_size x M (4096 x {k}: {4096 * k * 4 / 2**20:.0f} MiB).",
        "",
        "| method | time (s) | speed-up vs scikit-learn | inertia | inertia vs scikit-learn "
        "| peak RSS growth (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (seconds, centers, peak) in runs.items():
        value = inertia(x, centers)
        peak_text = "n/a" if peak is None else f"{peak:.0f}"
        lines.append(
            f"| {name} | {seconds:.1f} | {ref_time / seconds:.2f}x | {value:.6g} | "
            f"{100 * (value / ref_inertia - 1):+.2f}% | {peak_text} |"
        )
    lines += [
        "",
        "Goal (issue 5): inertia within 1% of scikit-learn's, at least 3x faster, memory "
        "bounded by the chunk size. Timings are noisy: the 2 cores are shared.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(quick=True))
