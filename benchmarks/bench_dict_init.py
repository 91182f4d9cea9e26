"""dict-init k-means against scikit-learn's KMeans and faiss on the same data, in one run.

The data imitate backbone features: 4096 clusters in a 32-d latent space, mapped to ``d``
dimensions by a random linear layer and a ReLU, plus a little noise (non-negative, low
intrinsic dimension, many modes). The data are generated once and saved; every method then runs
in a fresh Python process (``--worker``) that loads the same float32 matrix, limits torch and
the BLAS / OpenMP pools to 2 threads (``torch.set_num_threads(2)``,
``threadpoolctl.threadpool_limits(2)``), and times only the clustering call. Every method's
inertia is recomputed here with the same function (``dict_init.inertia``) from its centres.

Besides wall time, each worker reports its CPU time (user + system, all threads) and the 1-minute
load average when it started: the 2 cores are shared, and another process' load lengthens wall
time far more than CPU time. dict-init's default and faiss.Kmeans (the peer the default must
beat: issue 15) run ``ROUNDS`` times each, interleaved (default, faiss, default, faiss, ...; the
order flips every round), so both see the same load; medians are reported with the range, and
the goal is judged on the median of the per-round time ratios.

"peak RSS growth" is the growth of the worker's resident memory during the call: Linux ``VmHWM``
(reset through ``/proc/self/clear_refs`` just before the call) minus ``VmRSS`` just before it,
i.e. what the method allocates beyond the loaded data. A fresh process per method keeps one
method's freed memory (kept by the allocator) out of the next one's number.

``DICT_INIT_BENCH_PREFIX`` (e.g. ``"flock /tmp/cpu.lock"``) is put in front of every worker
command, so on a shared machine each method can wait for the CPU alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dict_init import inertia

THREADS = 2
REPEATS = {"lloyd": 3}  # worker key -> runs for ``_measure`` (default 1), as bench_speed uses it
ROUNDS = 3  # interleaved rounds of the default and faiss in ``main`` (2 at the large size)
SKLEARN = "scikit-learn KMeans (k-means++, n_init=1)"
DEFAULT = "dict-init torch (lloyd, defaults)"
FAISS = "faiss.Kmeans (defaults, niter=25)"


def feature_like(n: int, d: int, seed: int = 0, modes: int = 4096, latent: int = 32):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(modes, latent, generator=g) * 2
    z = centers[torch.randint(modes, (n,), generator=g)] + torch.randn(n, latent, generator=g)
    w = torch.randn(latent, d, generator=g) / latent**0.5
    return (torch.relu(z @ w) + 0.1 * torch.randn(n, d, generator=g)).float().contiguous()


def unequal_blobs(n: int, d: int, blobs: int, seed: int) -> np.ndarray:
    """Clustered data: ``blobs`` Gaussian blobs with Dirichlet(1) sizes (a few dozen rows to
    thousands), centres uniform in [-10, 10]^d, widths uniform in [0.5, 2]. A centre seeded in
    the wrong blob stays there, so seeding shows here (on ``feature_like`` data every local
    optimum is alike)."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(blobs)))
    centres = rng.uniform(-10, 10, (blobs, d))
    widths = rng.uniform(0.5, 2.0, blobs)
    parts = [c + w * rng.standard_normal((m, d)) for c, w, m in zip(centres, widths, sizes)]
    return np.concatenate(parts).astype(np.float32)


def methods(k: int, large: bool = False) -> dict[str, str]:
    """Method name -> worker key (the worker builds the call, see ``_run``).

    At the large size only the default, faiss and the chunk-1024 default run: on 2 shared
    cores scikit-learn alone took 256 s there (dict_init.md of 2026-11-23: inertia
    1.133797e+08 on the same data, seed 0).
    """
    names = {
        DEFAULT: "lloyd",
        FAISS: "faiss",
        "dict-init torch (plain Lloyd: overrelax=1)": "lloyd_plain",
        "dict-init torch (lloyd, chunk 1024)": "lloyd_chunk1024",
        "dict-init torch (minibatch, 10 epochs)": "minibatch",
        SKLEARN: "sklearn",
        "dict-init faiss backend": "faiss_backend",
    }
    if large:
        keep = (DEFAULT, FAISS, "dict-init torch (lloyd, chunk 1024)")
        names = {name: key for name, key in names.items() if name in keep}
    return names


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(key: str, x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The clustering call for ``key`` (seeded by ``seed``): centres and extra facts."""
    from dict_init import kmeans

    if key.startswith("lloyd") or key in ("minibatch", "faiss_backend"):
        kwargs = {
            "lloyd": {},
            "lloyd_plain": {"overrelax": 1.0},
            "lloyd_chunk1024": {"chunk_size": 1024},
            "minibatch": {"algorithm": "minibatch", "max_iter": 10},
            "faiss_backend": {"backend": "faiss"},
        }[key]
        result = kmeans(torch.from_numpy(x), k, seed=seed, progress=False, **kwargs)
        extra = {"n_iter": result.n_iter, "sample_iter": result.info.get("sample_iter")}
        extra["phases"] = result.info.get("seconds")
        return result.centers.numpy(), extra
    if key == "sklearn":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
        return model.cluster_centers_.astype(np.float32), {"n_iter": int(model.n_iter_)}
    if key == "faiss":
        import faiss

        model = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed)  # faiss defaults: random init
        model.train(x)
        return model.centroids.copy(), {"n_iter": 25}
    raise ValueError(f"key={key!r} is invalid: expected one of {sorted(methods(k).values())}.")


def worker(key: str, data: str, k: int, out: str, seed: int = 0) -> None:
    """Run one method in this (fresh) process and print its measurements as JSON."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(THREADS)
    x = np.load(data)  # read into memory before measuring
    with threadpool_limits(THREADS):
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
            before = _rss_mib("VmRSS:")
        except OSError:
            before = None
        load = float(Path("/proc/loadavg").read_text().split()[0])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        centers, extra = _run(key, x, k, seed)
        seconds = time.perf_counter() - start
        end = resource.getrusage(resource.RUSAGE_SELF)
        peak = None if before is None else max(_rss_mib("VmHWM:") - before, 0.0)
    cpu = end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime
    np.save(out, np.ascontiguousarray(centers, dtype=np.float32))
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "load": load, "peak_mib": peak, **extra}
        )
    )


def _measure(key: str, data: Path, k: int, tmp: Path, repeats: int | None = None) -> dict | None:
    """Median (by wall time) of ``repeats`` (default ``REPEATS[key]``) fresh-process runs."""
    runs = [_measure_once(key, data, k, tmp) for _ in range(repeats or REPEATS.get(key, 1))]
    return _median(runs)


def _median(runs: list[dict | None]) -> dict | None:
    runs = sorted((r for r in runs if r is not None), key=lambda r: r["seconds"])
    if not runs:
        return None
    median = dict(runs[(len(runs) - 1) // 2])
    median["all_seconds"] = [r["seconds"] for r in runs]
    median["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    median["load"] = max(r["load"] for r in runs)
    median["all_loads"] = [r["load"] for r in runs]
    return median


def _measure_once(key: str, data: Path, k: int, tmp: Path, seed: int = 0) -> dict | None:
    out = tmp / f"{key}.npy"
    prefix = shlex.split(os.environ.get("DICT_INIT_BENCH_PREFIX", ""))
    command = [*prefix, sys.executable, str(Path(__file__).resolve()), "--worker", key]
    command += ["--data", str(data), "--k", str(k), "--out", str(out), "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        print(f"{key}: failed ({' '.join(tail)})", flush=True)
        return None
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    facts["centers"] = torch.from_numpy(np.load(out))
    print(f"{key}: {facts['seconds']:.1f} s", flush=True)
    return facts


def _interleaved(
    data: Path, k: int, tmp: Path, rounds: int = ROUNDS
) -> tuple[dict, list[float], list[float]]:
    """``rounds`` rounds of the default and faiss, alternating which goes first.

    Returns both medians and, per round, default time / faiss time (wall and CPU).
    """
    runs: dict[str, list] = {"lloyd": [], "faiss": []}
    for r in range(rounds):
        for key in ("lloyd", "faiss") if r % 2 == 0 else ("faiss", "lloyd"):
            runs[key].append(_measure_once(key, data, k, tmp))
    pairs = [(a, b) for a, b in zip(runs["lloyd"], runs["faiss"]) if a and b]
    wall = [a["seconds"] / b["seconds"] for a, b in pairs]
    cpu = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in pairs]
    return {key: _median(v) for key, v in runs.items()}, wall, cpu


def _section(n: int, d: int, k: int) -> list[str]:
    x = feature_like(n, d)
    names = methods(k, large=n > 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, x.numpy())
        medians, wall, cpu = _interleaved(data, k, Path(tmp), 2 if n > 100_000 else ROUNDS)
        runs = {}
        for name, key in names.items():
            facts = medians[key] if key in medians else _measure(key, data, k, Path(tmp), 1)
            if facts is not None:
                runs[name] = facts
    lines = [f"## {n:,} x {d} into {k} centres", ""]
    if not runs:
        return [*lines, "No method ran.", ""]
    values = {name: inertia(x, facts["centers"]) for name, facts in runs.items()}
    base = SKLEARN if SKLEARN in runs else next(iter(runs))
    ref_time, ref_cpu, ref_inertia = runs[base]["seconds"], runs[base]["cpu_seconds"], values[base]
    label = "scikit-learn" if base == SKLEARN else "the default"
    lines += [
        f"k-means of {n:,} x {d} float32 features into {k} centres (seed 0). The data are "
        f"{x.nbytes / 2**20:.0f} MiB; an N x k distance matrix would be "
        f"{n * k * 4 / 2**20:.0f} MiB; dict-init's distance block is chunk_size x k "
        f"(4096 x {k}: {4096 * k * 4 / 2**20:.0f} MiB).",
        "",
        f"| method | time (s) | speed-up vs {label} | CPU time (s) | CPU speed-up "
        f"| iterations | inertia | inertia vs {label} | peak RSS growth (MiB) | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, facts in runs.items():
        peak = facts.get("peak_mib")
        iters = str(facts.get("n_iter", ""))
        if facts.get("sample_iter"):
            iters = f"{facts['sample_iter']} on the sample + {iters}"
        time_text = f"{facts['seconds']:.1f}"
        if len(facts["all_seconds"]) > 1:
            spread = facts["all_seconds"]
            time_text += f" (median of {len(spread)}: {min(spread):.1f}-{max(spread):.1f})"
        loads = "-".join(f"{v:.1f}" for v in sorted({min(facts["all_loads"]), facts["load"]}))
        lines.append(
            f"| {name} | {time_text} | {ref_time / facts['seconds']:.2f}x "
            f"| {facts['cpu_seconds']:.1f} | {ref_cpu / facts['cpu_seconds']:.2f}x | {iters} "
            f"| {values[name]:.7g} | {100 * (values[name] / ref_inertia - 1):+.2f}% "
            f"| {'n/a' if peak is None else f'{peak:.0f}'} | {loads} |"
        )
    if DEFAULT in runs and FAISS in runs and wall:
        ours, peer = values[DEFAULT], values[FAISS]
        ratio, cpu_ratio = statistics.median(wall), statistics.median(cpu)
        met = ratio <= 1 and ours <= peer
        lines += [
            "",
            f"**Goal (issue 15): default time <= faiss.Kmeans time at no worse inertia: "
            f"{'met' if met else 'NOT met'}.** Per interleaved round, default / faiss wall time: "
            f"{', '.join(f'{v:.2f}' for v in wall)} (median {ratio:.2f}); CPU time: "
            f"{', '.join(f'{v:.2f}' for v in cpu)} (median {cpu_ratio:.2f}). Inertia: default "
            f"{100 * (ours / peer - 1):+.2f}% vs faiss.",
        ]
    phases = {name: f["phases"] for name, f in runs.items() if f.get("phases")}
    if phases:
        keys = ["seeding", "sample_lloyd", "lloyd", "minibatch", "final_pass"]
        keys = [key for key in keys if any(key in p for p in phases.values())]
        lines += [
            "",
            "dict-init phases (seconds, from `KMeansResult.info['seconds']`, the median run):",
            "",
            "| method | " + " | ".join(keys) + " |",
            "| --- |" + " ---: |" * len(keys),
        ]
        for name, p in phases.items():
            cells = [f"{p[key]:.1f}" if key in p else "" for key in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


BLOB_METHODS = {SKLEARN: "sklearn", DEFAULT: "lloyd", FAISS: "faiss"}
BLOB_SEEDS = range(5)


def _blobs_section(n: int, d: int, k: int, seeds=BLOB_SEEDS) -> list[str]:
    """Inertia vs scikit-learn on ``unequal_blobs`` (``k`` blobs), one data set per seed, each
    method seeded with the same seed (issue 25: the default must be at most scikit-learn's
    inertia on average and never above 1.01x)."""
    rows, ratios = [], {name: [] for name in BLOB_METHODS}
    seconds = {name: [] for name in BLOB_METHODS}
    for seed in seeds:
        x = unequal_blobs(n, d, k, seed)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "x.npy"
            np.save(data, x)
            runs = {name: _measure_once(key, data, k, Path(tmp), seed)
                    for name, key in BLOB_METHODS.items()}  # fmt: skip
        if any(r is None for r in runs.values()):
            continue
        values = {name: inertia(torch.from_numpy(x), r["centers"]) for name, r in runs.items()}
        cells = []
        for name, r in runs.items():
            ratios[name].append(values[name] / values[SKLEARN])
            seconds[name].append(r["seconds"])
            cells.append(f"{ratios[name][-1]:.4f} ({r['seconds']:.2f} s)")
        rows.append(f"| {seed} | {values[SKLEARN]:.6g} | " + " | ".join(cells) + " |")
    lines = [
        f"## Clustered data: {n:,} x {d}, {k} Gaussian blobs of unequal size, into {k} centres",
        "",
        "`unequal_blobs`: Dirichlet(1) blob sizes, centres uniform in [-10, 10]^d, widths "
        "0.5-2; one data set per seed, every method seeded with it, each in a fresh process "
        "at 2 threads. Cells: inertia / scikit-learn's (wall time).",
        "",
        "| seed | scikit-learn inertia | " + " | ".join(BLOB_METHODS) + " |",
        "| ---: | ---: |" + " ---: |" * len(BLOB_METHODS),
        *rows,
    ]
    if rows:
        lines.append(
            "| mean (worst) | | "
            + " | ".join(
                f"{np.mean(ratios[m]):.4f} ({max(ratios[m]):.4f}), {np.mean(seconds[m]):.2f} s"
                for m in BLOB_METHODS
            )
            + " |"
        )
        mean, worst = np.mean(ratios[DEFAULT]), max(ratios[DEFAULT])
        met = mean <= 1.0 and worst <= 1.01
        lines += [
            "",
            f"**Goal (issue 25): default inertia <= scikit-learn's on average and <= 1.01x on "
            f"every seed: {'met' if met else 'NOT met'}** (mean {mean:.4f}, worst {worst:.4f}).",
        ]
    return [*lines, ""]


def main(quick: bool = False) -> str:
    sizes = [(10_000, 64, 64), (20_000, 128, 128)] if quick else [
        (50_000, 128, 128), (200_000, 512, 512)
    ]  # fmt: skip
    lines = [
        f"Every method runs in a fresh process at {THREADS} threads (torch and threadpoolctl) "
        f"on the same data; dict-init's default and faiss.Kmeans {ROUNDS} times each "
        "(2 at the large size), interleaved, the others once. 'load' is the 1-minute load "
        f"average when a method's runs started (lowest-highest; {THREADS}.0 is a run's own "
        "threads): the 2 cores are shared with other work, which lengthens wall time far "
        "more than CPU time.",
        "",
    ]
    for n, d, k in sizes:
        lines += _section(n, d, k)
    for n, d, k in [(20_000, 32, 64)] if quick else [(20_000, 32, 64), (100_000, 64, 256)]:
        lines += _blobs_section(n, d, k)
    lines += [
        "How the default gets there (see `dict_init.kmeans`): k-means++ on 8 k random rows "
        "(one intra-op thread: its k steps are small ops that a second thread on busy cores "
        "only slows), over-relaxed Lloyd (next centres `c + 1.8 (mean - c)`, a plain step "
        "when that overshoots) on a sample of min(65,536, N/3) rows and then on all rows, "
        "stopping when an iteration gains less than 0.1% of the inertia; the last pass' "
        "centres are returned with its exact inertia and counts (no extra pass). "
        "faiss.Kmeans (defaults) trains 25 plain Lloyd iterations from random rows on a "
        "sample of 256 rows per centre; scikit-learn seeds with k-means++ on all rows and "
        "iterates to its centre-shift tolerance.",
        "",
        "Memory: 'peak RSS growth' is VmHWM (reset through /proc/self/clear_refs just before "
        "the call) minus VmRSS just before it, in a fresh process per method that has already "
        "loaded the data, so it counts what the method allocates beyond the input, including "
        "allocator and BLAS buffers. scikit-learn copies and centres the input (copy_x=True); "
        "the faiss rows hold faiss' own buffers. dict-init's torch backend holds chunk_size x "
        "(k + d) floats of blocks, k x d centres and sums, and 8 k x d seeding rows; its growth "
        "follows chunk_size (compare the chunk 1024 row), not N. tests/test_kmeans.py checks, "
        "op by op, that no tensor of N x k elements or a copy of the input is ever created.",
        "",
    ]
    return "\n".join(lines)


def goal_main() -> str:
    """Only what the goals are judged on: the default and faiss interleaved at the full sizes
    (CPU and wall time ratios per round, inertia) and the clustered-data sections; for a
    machine too loaded for the whole run (scikit-learn alone took 256 s at 200k)."""
    lines = []
    for n, d, k in [(50_000, 128, 128), (200_000, 512, 512)]:
        x = feature_like(n, d)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "x.npy"
            np.save(data, x.numpy())
            medians, wall, cpu = _interleaved(data, k, Path(tmp), 2 if n > 100_000 else ROUNDS)
        values = {key: inertia(x, m["centers"]) for key, m in medians.items() if m}
        loads = sorted(v for m in medians.values() if m for v in m["all_loads"])
        lines += [
            f"## {n:,} x {d} into {k} centres: default vs faiss.Kmeans only",
            "",
            f"Per interleaved round, default / faiss wall time: "
            f"{', '.join(f'{v:.2f}' for v in wall)} (median {statistics.median(wall):.2f}); "
            f"CPU time: {', '.join(f'{v:.2f}' for v in cpu)} (median "
            f"{statistics.median(cpu):.2f}). Inertia: default {values['lloyd']:.7g}, faiss "
            f"{values['faiss']:.7g} ({100 * (values['lloyd'] / values['faiss'] - 1):+.2f}%). "
            f"Load {loads[0]:.1f}-{loads[-1]:.1f}. Default's iterations: "
            f"{medians['lloyd'].get('sample_iter')} on the sample + "
            f"{medians['lloyd'].get('n_iter')}; phases (s): "
            + ", ".join(f"{a} {b:.2f}" for a, b in (medians["lloyd"].get("phases") or {}).items()),
            "",
        ]
    lines += _blobs_section(20_000, 32, 64)
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", help="run one method (internal)")
    parser.add_argument("--data")
    parser.add_argument("--k", type=int)
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="full size (default: quick)")
    parser.add_argument("--goal", action="store_true", help="only the goals (see goal_main)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.k, args.out, args.seed)
    elif args.goal:
        print(goal_main())
    else:
        print(main(quick=not args.full))
