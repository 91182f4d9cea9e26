"""KernelWarehouse ResNet18 speed and memory against plain timm ResNet18 and the authors' method.

Three models measured in the same run, interleaved (every repetition times each model once, in
an order rotated from one repetition to the next; the median is reported), so machine load and
the previous step's allocations affect them alike:

* ``plain``: timm ``resnet18``;
* ``kw fast``: ``kw_resnet18`` at b = 1 with this package's default executor;
* ``kw reference``: the same model and weights with the authors' formulation, written below
  (per-sample kernel assembly with one matrix product + permute, then one grouped convolution
  over the batch);
* ``kw previous``: the same model and weights with the fast executor of the previous release
  (:data:`PREVIOUS_RELEASE`: its ``functional.py`` and ``per_offset.py``, read with
  ``git show`` into a temporary package), so a change of the path rule is measured against the
  old rule in the same process.

Inference is ``model(x)`` under ``torch.no_grad()`` in eval mode; a training step is forward,
cross-entropy, backward and an SGD step. Peak memory is, in a fresh process, the resident set
sampled every 2 ms during a step above its level after a warm-up step (CPU), or
``torch.cuda.max_memory_allocated`` on a GPU. ``tau`` is 0 (after the temperature schedule).
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import kernelwarehouse as kw
from kernelwarehouse.partition import LayerPartition


# --------------------------------------------------------------------------- authors' method
def reference_assemble(attention: torch.Tensor, cells: torch.Tensor, part: LayerPartition):
    """Per-sample kernels as in the authors' code: one mm, a 6-d permute, a reshape."""
    batch, n = attention.shape[0], cells.shape[0]
    weight = torch.mm(attention.reshape(-1, n), cells.reshape(n, -1))
    weight = weight.reshape(
        batch, part.spatial_groups, part.out_groups, part.in_groups, *part.cell.as_tuple()
    )
    dims = len(part.cell.kernel_size)
    weight = weight.permute(0, 2, 4, 3, 5, 1, *range(6, 6 + dims))
    return weight.reshape(batch, *part.kernel_shape)


def reference_conv(x, kernel, bias, stride, padding, dilation, groups):
    """One grouped convolution over the batch (groups x batch groups)."""
    batch = x.shape[0]
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    out = conv(
        x.reshape(1, -1, *x.shape[2:]),
        kernel.reshape(-1, *kernel.shape[2:]),
        None,
        stride,
        padding,
        dilation,
        groups * batch,
    )
    out = out.reshape(batch, -1, *out.shape[2:])
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    return out


def reference_forward(x, attention, cells, part, bias, stride, padding, dilation, groups):
    kernel = reference_assemble(attention, cells, part)
    if len(part.kernel_shape) == 2:  # linear layers arrive as 1-d convolutions over tokens
        kernel = kernel.unsqueeze(-1)
    return reference_conv(x, kernel, bias, stride, padding, dilation, groups)


kw.register_executor("bench_reference", reference_forward)

#: the release the path rule is compared with (issue 27: the rule after it made inference slower)
PREVIOUS_RELEASE = "0453101"


def previous_executor(commit: str = PREVIOUS_RELEASE):
    """The ``kw_forward_fast`` of ``commit``, imported from a temporary copy of its modules."""
    root = Path(__file__).resolve().parents[1]
    package = Path(tempfile.mkdtemp(prefix="kw_previous_")) / "kw_previous"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("functional.py", "per_offset.py", "partition.py"):
        source = f"{commit}:packages/kernelwarehouse/src/kernelwarehouse/{name}"
        text = subprocess.run(
            ["git", "show", source], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        (package / name).write_text(text)
    sys.path.insert(0, str(package.parent))
    try:
        return importlib.import_module("kw_previous.functional").kw_forward_fast
    finally:
        sys.path.remove(str(package.parent))


kw.register_executor("bench_previous", previous_executor())

VARIANTS = ("plain", "kw fast", "kw reference", "kw previous")
EXECUTOR = {"kw fast": "fast", "kw reference": "bench_reference", "kw previous": "bench_previous"}


def build(variant: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "plain":
        return timm.create_model("resnet18").to(device)
    model = timm.create_model("kw_resnet18", budget=1.0).to(device)
    kw.set_temperature(model, 0.0)
    kw.set_executor(model, EXECUTOR[variant])
    return model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(model: torch.nn.Module, mode: str, x: torch.Tensor):
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        opt.step()

    return step


def time_all(batch: int, res: int, mode: str, reps: int, device: str) -> dict[str, float]:
    """Median seconds per step of every variant (see :func:`time_reps`)."""
    return {v: statistics.median(t) for v, t in time_reps(batch, res, mode, reps, device).items()}


def time_reps(
    batch: int, res: int, mode: str, reps: int, device: str, variants: tuple[str, ...] = VARIANTS
) -> dict[str, list[float]]:
    """Seconds per step of every variant, one entry per interleaved repetition."""
    x = torch.randn(batch, 3, res, res, device=device)
    steps = {v: make_step(build(v, device), mode, x) for v in variants}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps):
        # rotate the order: a step right after another model's pays for its allocation
        # pattern (measured ~15-20% on this CPU), so each variant follows each other equally
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for v in order:
            step = steps[v]
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[v].append(time.perf_counter() - start)
    return times


def paired_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repetitions of ``a``'s time / ``b``'s time in the same repetition: steps
    seconds apart share the machine's load, so on a loaded machine this is steadier than the
    ratio of the medians."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


_MEMORY_CHILD = """
import json, os, sys, threading, time, torch
sys.path.insert(0, {here!r})
import bench_kernelwarehouse as b
torch.set_num_threads({threads})
variant, mode, batch, res = {args!r}
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
model = b.build(variant, "cpu")
x = torch.randn(batch, 3, res, res)
step = b.make_step(model, mode, x)
step()  # first step allocates optimiser state and caches
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
step()
done.set()
thread.join()
print(json.dumps({{"base": base, "peak": peak[0]}}))
"""


def peak_memory_cpu(variant: str, mode: str, batch: int, res: int) -> float:
    """Peak resident memory above the state after one warm-up step (sampled every 2 ms)."""
    from pathlib import Path

    code = _MEMORY_CHILD.format(
        here=str(Path(__file__).parent),
        threads=torch.get_num_threads(),
        args=(variant, mode, batch, res),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return (found["peak"] - found["base"]) / 2**20


def peak_memory_cuda(variant: str, mode: str, batch: int, res: int) -> float:
    model = build(variant, "cuda")
    step = make_step(model, mode, torch.randn(batch, 3, res, res, device="cuda"))
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def equivalence(device: str, res: int) -> tuple[float, float]:
    """Fast vs reference on the benchmark's own shapes (batch 16): logits and gradients.

    Returns the max absolute logit difference (eval) and the max gradient difference relative
    to the largest reference gradient (one training step's backward, every parameter).
    """
    model = build("kw fast", device)
    x = torch.randn(16, 3, res, res, device=device)
    target = torch.randint(0, 1000, (16,), device=device)
    out, grads = {}, {}
    model.eval()
    with torch.no_grad():  # before any training step changes the running statistics
        for executor in ("fast", "bench_reference"):
            kw.set_executor(model, executor)
            out[executor] = model(x)
    model.train()  # batch statistics: both steps see the same normalisation
    for executor in ("fast", "bench_reference"):
        kw.set_executor(model, executor)
        model.zero_grad()
        F.cross_entropy(model(x), target).backward()
        grads[executor] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    logits = (out["fast"] - out["bench_reference"]).abs().max().item()
    scale = max(g.abs().max().item() for g in grads["bench_reference"])
    grad = max((a - b).abs().max().item() for a, b in zip(grads["fast"], grads["bench_reference"]))
    return logits, grad / scale


def onnx_latency(batches: tuple[int, ...], res: int, reps: int) -> dict[tuple[str, int], float]:
    """Median onnxruntime latency (CPU, 2 intra-op threads) of plain ResNet18 and KW ResNet18
    b = 1 (tau 0), both exported once with a dynamic batch axis by the dynamo exporter (the KW
    model through the batch-agnostic "export" executor); runs interleaved per repetition."""
    import onnxruntime as ort

    sessions = {}
    for variant in ("plain", "kw fast"):
        model = build(variant, "cpu").eval()
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(
            model, (torch.randn(2, 3, res, res),), dynamic_shapes=({0: batch},)
        )
        onnx_program = torch.onnx.export(program, dynamo=True, optimize=False, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sessions[variant] = ort.InferenceSession(
            onnx_program.model_proto.SerializeToString(), options, ["CPUExecutionProvider"]
        )
    out = {}
    for batch in batches:
        x = {"x": torch.randn(batch, 3, res, res).numpy()}
        times: dict[str, list[float]] = {v: [] for v in sessions}
        for session in sessions.values():  # warm-up
            session.run(None, x)
        for _ in range(reps):
            for variant, session in sessions.items():
                start = time.perf_counter()
                session.run(None, x)
                times[variant].append(time.perf_counter() - start)
        for variant, values in times.items():
            out[(variant, batch)] = statistics.median(values)
    return out


#: batch 1 and 16 are issue 14's goals; 2 and 4 check "never slower than the reference" where
#: the fast executor switches paths (kernelwarehouse.functional.PER_OFFSET_MIN_TRAINING_BATCH)
SPEED_BATCHES = (1, 2, 4, 16)


def speed_lines(device: str, res: int, reps: int) -> list[str]:
    """The speed table: plain, KW fast and KW reference, every mode and batch, with the load."""
    rows = []
    for mode in ("inference", "training"):
        for batch in SPEED_BATCHES:
            before = os.getloadavg()[0]
            t = time_reps(batch, res, mode, reps, device)
            rows.append((mode, batch, t, (before + os.getloadavg()[0]) / 2))
            print(mode, batch, {k: [round(v, 4) for v in t[k]] for k in t}, flush=True)
    lines = [
        f"Device: {device}; input {res} x {res}; median of {reps} interleaved repetitions, "
        "order rotated; ratios are the median of the per-repetition ratios (paired); tau = 0; "
        "KW ResNet18 at b = 1 (11.93M parameters vs 11.69M).",
        "",
        "| mode | batch | plain (ms) | kw fast (ms) | kw reference (ms) | "
        f"kw previous {PREVIOUS_RELEASE} (ms) | fast / plain | reference / fast | "
        "fast / previous | 1-min load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, batch, t, load in rows:
        ms = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        lines.append(
            f"| {mode} | {batch} | {ms['plain']:.1f} | {ms['kw fast']:.1f} | "
            f"{ms['kw reference']:.1f} | {ms['kw previous']:.1f} | "
            f"{paired_ratio(t, 'kw fast', 'plain'):.2f}x | "
            f"{paired_ratio(t, 'kw reference', 'kw fast'):.2f}x | "
            f"{paired_ratio(t, 'kw fast', 'kw previous'):.2f}x | {load:.1f} |"
        )
    lines += [
        "",
        f"1-min load average of the machine ({os.cpu_count()} cores) while each row ran "
        "(mean of before and after); above the core count the times are inflated and noisy, "
        "the ratios less so. OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset (spinning)')}: on oversubscribed cores "
        "spinning OpenMP threads made plain ResNet18 at batch 1 6.5x slower than PASSIVE "
        "(2.81 s vs 0.43 s, load ~6, measured here).",
    ]
    return lines


def previous_lines(device: str, res: int, reps: int) -> list[str]:
    """Only ``kw fast`` against ``kw previous`` (more repetitions in the same time)."""
    lines = [
        f"kw fast against kw previous ({PREVIOUS_RELEASE}) alone, {res} px, {reps} paired "
        "repetitions (order alternated): median and quartiles of fast / previous per repetition",
        "",
        "| mode | batch | fast (ms) | previous (ms) | fast / previous | quartiles | 1-min load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    pair = ("kw fast", "kw previous")
    for mode in ("inference", "training"):
        for batch in SPEED_BATCHES:
            before = os.getloadavg()[0]
            t = time_reps(batch, res, mode, reps, device, pair)
            load = (before + os.getloadavg()[0]) / 2
            ratios = [a / b for a, b in zip(t["kw fast"], t["kw previous"])]
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            f, o = (statistics.median(t[v]) * 1e3 for v in pair)
            lines.append(
                f"| {mode} | {batch} | {f:.1f} | {o:.1f} | {statistics.median(ratios):.2f}x | "
                f"{q1:.2f}-{q3:.2f} | {load:.1f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main(quick: bool = False) -> str:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = 224
    reps = 3 if quick else 7
    lines = speed_lines(device, res, reps)
    logits, grads = equivalence(device, res)
    lines += [
        "",
        f"Same numbers, on these shapes (batch 16, {res} px): max |fast - reference| of the "
        f"logits {logits:.1e}; of the gradients after one step, {grads:.1e} of the largest "
        "gradient.",
    ]
    mem_batch = 16
    memory = peak_memory_cuda if device == "cuda" else peak_memory_cpu
    lines += [
        "",
        f"Peak memory above the level after a warm-up step, batch {mem_batch}, {res} px "
        f"({'CUDA max allocated' if device == 'cuda' else 'RSS sampled during a step'}):",
        "",
        "| mode | plain (MiB) | kw fast (MiB) | kw reference (MiB) |",
        "| --- | --- | --- | --- |",
    ]
    for mode in ("inference", "training"):
        values = [memory(v, mode, mem_batch, res) for v in VARIANTS[:3]]
        lines.append(f"| {mode} | " + " | ".join(f"{v:.0f}" for v in values) + " |")
    lines += ["", *onnx_lines(res, reps)]
    return "\n".join(lines) + "\n"


def onnx_lines(res: int, reps: int) -> list[str]:
    latency = onnx_latency((1, 16), res, reps)
    lines = [
        f"onnxruntime (CPU, {torch.get_num_threads()} threads), both models exported with a "
        f"dynamic batch axis (dynamo exporter), {res} px, median of {reps}:",
        "",
        "| batch | plain (ms) | kw b = 1 (ms) | kw / plain |",
        "| --- | --- | --- | --- |",
    ]
    for batch in (1, 16):
        p, k = latency[("plain", batch)], latency[("kw fast", batch)]
        lines.append(f"| {batch} | {p * 1e3:.1f} | {k * 1e3:.1f} | {k / p:.2f}x |")
    return lines


if __name__ == "__main__":
    if "--speed-only" in sys.argv:
        torch.set_num_threads(2)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        reps = 3 if "--quick" in sys.argv else 7
        if "--reps" in sys.argv:  # e.g. fewer on a loaded machine, to fit a session
            reps = int(sys.argv[sys.argv.index("--reps") + 1])
        print("\n".join(speed_lines(device, 224, reps)))
    elif "--previous-only" in sys.argv:
        torch.set_num_threads(2)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 15
        print("\n".join(previous_lines(device, 224, reps)))
    elif "--onnx-only" in sys.argv:
        torch.set_num_threads(2)
        print("\n".join(onnx_lines(224, 3 if "--quick" in sys.argv else 7)))
    else:
        print(main(quick="--quick" in sys.argv))
