"""KernelWarehouse annealing length on the digits: runs one cell at a time, appends to a JSONL file.

Used by ``bench_accuracy.py --part anneal`` (training) and ``--report anneal`` (table, plot and
the section of ``results/accuracy.md``). A *cell* is one training run: a variant (plain ResNet18/8,
KW at a budget, or KW with tau fixed at 1), the number of iterations over which tau goes
linearly from 1 to 0, the iterations trained after that, the batch size and the seed. Every
variant of a cell trains ``anneal + post`` iterations with the same one-cycle learning rate, data
order and augmentation, so "plain" and "tau fixed at 1" at an annealing length are the
same-length runs without annealing.

Each finished cell is appended as one JSON line to ``results/accuracy_annealing.jsonl`` (so a
partial grid is usable and an interrupted grid resumes where it stopped) together with its
training curve and attention statistics (see :func:`attention_stats`).

Not a ``bench_*.py`` file: ``run.py`` does not run it on its own.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, count_params, markdown_table, mean_std, plotting, save_figure
from torch import nn

RUNS = RESULTS / "accuracy_annealing.jsonl"
#: variant name -> (table label, KW budget or None for plain, tau annealed)
VARIANTS: dict[str, tuple[str, float | None, bool]] = {
    "plain": ("ResNet18/8 (plain timm)", None, False),
    "kw_b1": ("KW b = 1", 1.0, True),
    "kw_b05": ("KW b = 1/2", 0.5, True),
    "kw_b4": ("KW b = 4", 4.0, True),
    "kw_tau1": ("KW b = 1, tau fixed at 1", 1.0, False),
}


@dataclass(frozen=True)
class Cell:
    variant: str
    anneal: int  # iterations over which tau goes 1 -> 0 (plain / tau1: only sets the length)
    post: int  # iterations after the annealing
    batch: int
    seed: int
    # timm's training loader drops the incomplete last batch (1347 = 21 x 64 + 3 here); the
    # grid's first cells kept it, and their records have no such key (False)
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"variant={self.variant!r} is invalid: expected one of {list(VARIANTS)}"
            )
        for name in ("anneal", "post", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected a positive integer")

    @property
    def total(self) -> int:
        return self.anneal + self.post

    def key(self) -> tuple:
        return (self.variant, self.anneal, self.post, self.batch, self.seed, self.drop_last)


def finished(path: Path = RUNS) -> list[dict]:
    """Every finished cell in ``path`` (a later duplicate of a cell replaces the earlier)."""
    if not path.exists():
        return []
    runs: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            runs[Cell(**run["cell"]).key()] = run
    return list(runs.values())


# ------------------------------------------------------------------------------ statistics
class AttentionProbe:
    """Hooks on every KW attention that summarise one forward pass (call :meth:`read`).

    Per layer, averaged over the layers:

    * ``one_to_one``: share of a mixture's attention mass (sum of |alpha| over the n real cells)
      on the cell it was assigned at initialisation (1 at tau = 1; mixtures assigned the zero
      cell are left out).
    * ``entropy``: entropy of |alpha| / sum |alpha| over the n cells, divided by log n (0: one
      cell, 1: spread evenly over all cells).
    * ``mass``: sum |alpha| over the real cells (1 at tau = 1 for a mixture with a real cell;
      below 1 when mass sits on the zero cell).
    * ``sample_spread``: std of alpha over the batch / mean |alpha| (0: every sample gets the
      same kernel; how dynamic the layer is).
    * ``bn_mean_gap``: |batch mean - running mean| / running std of the attention BatchNorm's
      input, averaged over its features; ``bn_var_ratio``: batch var / running var (1 when the
      running statistics describe the batch).
    """

    def __init__(self, model: nn.Module) -> None:
        from kernelwarehouse import KWAttention

        self.records: dict[str, list[float]] = {}
        self.enabled = False
        self.handles = []
        for module in model.modules():
            if isinstance(module, KWAttention):
                self.handles.append(module.register_forward_hook(self._attention))
                if isinstance(module.norm1, nn.BatchNorm1d):
                    self.handles.append(module.norm1.register_forward_pre_hook(self._norm))

    def _add(self, name: str, value: float) -> None:
        self.records.setdefault(name, []).append(value)

    @torch.no_grad()
    def _attention(self, module: nn.Module, _inputs, alpha: torch.Tensor) -> None:
        if not self.enabled:
            return
        a = alpha.detach().abs()  # [B, m, n]
        mass = a.sum(-1)
        p = a / mass.clamp_min(1e-12).unsqueeze(-1)
        n = a.shape[-1]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(max(n, 2))
        assigned = module.beta.argmax(1)  # [m]; n = the zero cell
        real = assigned < n
        if bool(real.any()):
            own = p[:, real, :].gather(-1, assigned[real].view(1, -1, 1).expand(a.shape[0], -1, 1))
            self._add("one_to_one", own.mean().item())
        self._add("entropy", entropy.mean().item())
        self._add("mass", mass.mean().item())
        if alpha.shape[0] > 1:
            spread = alpha.detach().std(0).mean() / a.mean().clamp_min(1e-12)
            self._add("sample_spread", spread.item())

    @torch.no_grad()
    def _norm(self, module: nn.BatchNorm1d, inputs) -> None:
        x = inputs[0]
        if not self.enabled or not module.training or x.shape[0] < 2:
            return
        std = (module.running_var + module.eps).sqrt()
        gap = ((x.mean(0) - module.running_mean).abs() / std).mean()
        ratio = (x.var(0) / (module.running_var + module.eps)).mean()
        self._add("bn_mean_gap", gap.item())
        self._add("bn_var_ratio", ratio.item())

    def read(self) -> dict[str, float]:
        out = {k: round(sum(v) / len(v), 5) for k, v in self.records.items()}
        self.records = {}
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return 100.0 * (pred == y).float().mean().item()


@torch.no_grad()
def recalibrated(model: nn.Module, x: torch.Tensor, attention_only: bool) -> nn.Module:
    """A copy whose BatchNorm running statistics are re-estimated on ``x`` in batches of 64.

    ``attention_only`` re-estimates only the attention branches' BatchNorm1d. A cumulative
    average over full batches (``momentum=None``) replaces the training's exponential average,
    whose last update in every epoch comes from its small last batch (1347 = 21 x 64 + 3).
    """
    from kernelwarehouse import KWAttention

    model = copy.deepcopy(model).eval()
    norms = []
    for module in model.modules():
        if isinstance(module, KWAttention) and isinstance(module.norm1, nn.BatchNorm1d):
            norms.append(module.norm1)
        elif not attention_only and isinstance(module, nn.BatchNorm2d):
            norms.append(module)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    for i in range(0, len(x) - 63, 64):
        model(x[i : i + 64])
    return model.eval()


# ------------------------------------------------------------------------------ training
def run_cell(cell: Cell, data: tuple, build, shift) -> dict:
    """Train one cell; returns its JSON record (final accuracies, curve, attention stats).

    ``build(budget)`` makes the model, ``shift(x, generator)`` augments a batch (bench_accuracy's).
    """
    import kernelwarehouse as kw

    label, budget, anneal = VARIANTS[cell.variant]
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cell.seed)
    model = build(budget)
    params = count_params(model)
    total = cell.total
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total, pct_start=0.15)
    temperature = None
    probe = None
    if budget is not None:
        if anneal:  # tau = 1 - i / anneal before iteration i, then 0
            temperature = kw.TemperatureScheduler(model, total=cell.anneal)
        else:
            kw.set_temperature(model, 1.0)
        probe = AttentionProbe(model)
    stat_every = max(1, total // 200)
    eval_at = sorted({*range(0, total + 1, max(1, total // 12)), cell.anneal, total})
    curve: dict[str, list] = {"loss": [], "batch_acc": [], "stats": [], "test": []}
    g = torch.Generator().manual_seed(cell.seed)
    start = time.perf_counter()
    step = 0
    while step < total:
        order = torch.randperm(len(y_train), generator=g)
        stop = len(order) - len(order) % cell.batch if cell.drop_last else len(order)
        for first in range(0, stop, cell.batch):
            if step in eval_at:
                curve["test"].append([step, round(accuracy(model, x_test, y_test), 2)])
            idx = order[first : first + cell.batch]
            model.train()
            if probe is not None:
                probe.enabled = step % stat_every == 0
            tau = kw.get_temperature(model) if budget is not None else None
            logits = model(shift(x_train[idx], g))
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if temperature is not None:
                temperature.step()
            curve["loss"].append(round(loss.item(), 4))
            hits = (logits.argmax(1) == y_train[idx]).float().mean().item()
            curve["batch_acc"].append(round(100 * hits, 1))
            if probe is not None and probe.enabled:
                curve["stats"].append({"step": step, "tau": round(tau, 4), **probe.read()})
            step += 1
            if step == total:
                break
    seconds = time.perf_counter() - start
    curve["test"].append([total, round(accuracy(model, x_test, y_test), 2)])
    record = {
        "cell": asdict(cell),
        "label": label,
        "params": params,
        "seconds": round(seconds, 1),
        # float rounding differs between CPU kernels: the same cell on another machine can end
        # many points away (see results/accuracy.md), so every record says where it ran
        "cpu": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
        "accuracy": curve["test"][-1][1],
    }
    if budget is not None:
        probe.remove()
        # is the eval-mode BatchNorm the problem? the same weights with re-estimated statistics
        record["accuracy_attention_bn_recalibrated"] = round(
            accuracy(recalibrated(model, x_train, True), x_test, y_test), 2
        )
        record["accuracy_bn_recalibrated"] = round(
            accuracy(recalibrated(model, x_train, False), x_test, y_test), 2
        )
    record["curve"] = curve
    return record


def append(record: dict, path: Path = RUNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per write: concurrent appenders do not interleave
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def grid(
    variants: Iterable[str],
    anneals: Iterable[int],
    seeds: Iterable[int],
    post: int,
    batches: Iterable[int],
    drop_last: bool = True,
) -> list[Cell]:
    """Cells in the order given: seeds innermost, so every length gets seed 0 first."""
    return [
        Cell(v, a, post, b, s, drop_last)
        for b in batches
        for v in variants
        for a in anneals
        for s in seeds
    ]


def run_grid(cells: list[Cell], part: tuple[int, int], data: tuple, build, shift) -> None:
    """Run the cells of shard ``k/n`` (every n-th, from the k-th, 1-based) not yet finished."""
    k, n = part
    done = {Cell(**r["cell"]).key() for r in finished()}
    for i, cell in enumerate(cells):
        if i % n != k - 1 or cell.key() in done:
            continue
        record = run_cell(cell, data, build, shift)
        append(record)
        extra = ""
        if "accuracy_bn_recalibrated" in record:
            extra = (
                f", attention BN recalibrated {record['accuracy_attention_bn_recalibrated']:.2f}"
                f", all BN recalibrated {record['accuracy_bn_recalibrated']:.2f}"
            )
        drop = "drop_last " if cell.drop_last else ""
        print(
            f"anneal {cell.variant} anneal {cell.anneal} post {cell.post} batch {cell.batch} "
            f"{drop}seed {cell.seed}: {record['accuracy']:.2f}%{extra} ({record['seconds']:.0f} s)",
            flush=True,
        )


# ------------------------------------------------------------------------------ reporting
def _groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs by (batch label, post, anneal, variant), variants in VARIANTS order.

    The batch label is the batch size, with ", last dropped" for ``drop_last`` cells.
    """
    order = list(VARIANTS)
    groups: dict[tuple, list[dict]] = {}

    def sort_key(run: dict) -> tuple:
        c = run["cell"]  # drop_last, then the table's batch 64, first
        drop = c.get("drop_last", False)
        batch = c["batch"]
        return (not drop, c["post"], batch != 64, batch, c["anneal"], order.index(c["variant"]))

    for run in sorted(runs, key=sort_key):
        c = run["cell"]
        key = (_batch_label(c), c["post"], c["anneal"], c["variant"])
        groups.setdefault(key, []).append(run)
    for group in groups.values():
        group.sort(key=lambda r: r["cell"]["seed"])
    return groups


def _batch_label(cell: dict) -> str:
    return f"{cell['batch']}, last dropped" if cell.get("drop_last", False) else str(cell["batch"])


def _fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"


def _last_stats(run: dict) -> dict[str, float]:
    stats = run["curve"]["stats"]
    return stats[-1] if stats else {}


def _peak_and_drop(run: dict) -> tuple[float, float, float]:
    """Best test accuracy while tau > 0, tau there (from the logged stats), accuracy at tau = 0."""
    anneal = run["cell"]["anneal"]
    during = [(acc, step) for step, acc in run["curve"]["test"] if step < anneal]
    at_zero = next(acc for step, acc in run["curve"]["test"] if step >= anneal)
    best, step = max(during)
    tau = 1.0 - min(step / anneal, 1.0)  # the linear schedule before iteration `step`
    return best, tau, at_zero


def table(runs: list[dict]) -> str:
    groups = _groups(runs)
    rows = []
    for (batch, post, anneal, variant), group in groups.items():
        accs = [r["accuracy"] for r in group]
        plain = groups.get((batch, post, anneal, "plain"))
        if variant == "plain" or plain is None:
            delta = "-"
        else:
            p_mean, p_std = mean_std([r["accuracy"] for r in plain])
            mean, std = mean_std(accs)
            d = mean - p_mean
            if min(len(accs), len(plain)) < 2:
                spread = "1 seed"
            else:
                spread = "beyond spread" if abs(d) > max(std, p_std) else "within spread"
            delta = f"{d:+.2f} ({spread})"
        recal = [
            r["accuracy_attention_bn_recalibrated"]
            for r in group
            if "accuracy_bn_recalibrated" in r
        ]
        recal_all = [
            r["accuracy_bn_recalibrated"] for r in group if "accuracy_bn_recalibrated" in r
        ]
        if VARIANTS[variant][2]:  # annealed: best test accuracy while tau > 0, then at tau = 0
            peaks = [_peak_and_drop(r) for r in group]
            peak = " / ".join(f"{b:.1f} (tau {t:.2f})" for b, t, _ in peaks)
            drop = " / ".join(f"{z:.1f}" for _, _, z in peaks)
        else:
            peak = drop = "-"
        last = [_last_stats(r) for r in group]
        one = [s["one_to_one"] for s in last if "one_to_one" in s]
        ent = [s["entropy"] for s in last if "entropy" in s]
        rows.append(
            [
                f"{anneal} / {anneal + post}",
                batch,
                VARIANTS[variant][0],
                _fmt(accs),
                delta,
                " / ".join(f"{a:.1f}" for a in accs),
                peak,
                drop,
                _fmt(recal) if recal else "-",
                _fmt(recal_all) if recal_all else "-",
                f"{sum(one) / len(one):.2f}" if one else "-",
                f"{sum(ent) / len(ent):.2f}" if ent else "-",
                f"{sum(r['seconds'] for r in group) / len(group):.0f}",
            ]
        )
    header = [
        "anneal / total iters",
        "batch",
        "model",
        "test accuracy %",
        "vs plain (same length)",
        "per seed",
        "best while tau > 0 (per seed)",
        "when tau reaches 0",
        "attention BN re-estimated",
        "all BN re-estimated",
        "one-to-one share (end)",
        "attention entropy (end)",
        "s / run",
    ]
    return markdown_table(header, rows, "rrlrrlllrrrrr")


def _series(groups: dict, drop: bool, post: int, variant: str) -> list[tuple]:
    """[(anneal, (mean, std) accuracy)] of ``variant`` at batch 64, by annealing length."""
    batch = _batch_label({"batch": 64, "drop_last": drop})
    return sorted(
        (a, mean_std([r["accuracy"] for r in g]))
        for (b, p, a, v), g in groups.items()
        if (b, p, v) == (batch, post, variant)
    )


def plot(runs: list[dict], name: str = "accuracy_annealing.png") -> str | None:
    """Accuracy vs annealing length; seed 0's KW b = 1 accuracy vs tau; attention vs tau.

    None without matplotlib.
    """
    plt = plotting()
    if plt is None or not runs:
        return None
    groups = _groups(runs)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    # the grid's main series only (batch 64, 110 iterations after the annealing, two or more
    # lengths); the one-off settings are in the table. Colour: variant; line: last batch.
    colours = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for drop in (True, False):
        for variant, (label, _, _) in VARIANTS.items():
            points = _series(groups, drop, 110, variant)
            if len(points) < 2:
                continue
            ax.errorbar(
                [a for a, _ in points],
                [m for _, (m, _) in points],
                yerr=[s for _, (_, s) in points],
                fmt="o-" if drop else "o--",
                color=colours[variant],
                alpha=1.0 if drop else 0.55,
                capsize=3,
                label=f"{label}, last batch {'dropped' if drop else 'kept'}",
            )
    # stars: the same variants with 440 iterations after the annealing (last batch dropped)
    stars = False
    for variant in VARIANTS:
        points = _series(groups, True, 440, variant)
        if points:
            stars = True
            ax.errorbar(
                [a * 1.06 for a, _ in points],  # beside the 110 point of the same length
                [m for _, (m, _) in points],
                yerr=[s for _, (_, s) in points],
                fmt="*",
                ms=9,
                color=colours[variant],
                capsize=2,
            )
    if stars:
        ax.plot([], [], "*", ms=9, color="grey", label="same, 440 iterations after (dropped)")
    ax.set(
        xscale="log",
        xlabel="annealing iterations (tau 1 -> 0), then 110 (lines) or 440 (stars)",
        ylabel="final test accuracy % (mean ± std, 3 seeds)",
        title="digits, ResNet18/8, batch 64",
    )
    ax.legend(fontsize=6)
    # seed 0 of KW b = 1 at batch 64, the drop_last cells where there are any
    drop = any(r["cell"].get("drop_last", False) for r in runs)
    main = sorted(
        (
            r
            for r in runs
            if r["cell"]["variant"] == "kw_b1"
            and r["cell"]["seed"] == 0
            and r["cell"]["batch"] == 64
            and r["cell"].get("drop_last", False) == drop
            and r["cell"]["anneal"] >= 50
        ),
        key=lambda r: (r["cell"]["post"], r["cell"]["anneal"]),
    )
    for r in main:
        c = r["cell"]
        label = f"anneal {c['anneal']}, post {c['post']}"
        test = [(1 - step / c["anneal"], acc) for step, acc in r["curve"]["test"]]
        during = [(t, a) for t, a in test if t >= 0]
        after = [a for t, a in test if t < 0]
        (line,) = axes[1].plot(*zip(*during, strict=True), "o-", ms=3, label=label)
        axes[1].plot([0.0], [after[-1]], "*", ms=9, color=line.get_color())
        stats = [s for s in r["curve"]["stats"] if s["step"] <= c["anneal"]]
        axes[2].plot(
            [s["tau"] for s in stats],
            [s.get("one_to_one", float("nan")) - s["tau"] for s in stats],
            color=line.get_color(),
            label=f"{label}: one-to-one share - tau",
        )
        axes[2].plot(
            [s["tau"] for s in stats],
            [s.get("entropy", float("nan")) for s in stats],
            color=line.get_color(),
            ls="--",
        )
    axes[1].set(
        xlim=(1.02, -0.02),
        xlabel="tau (annealing runs left to right)",
        ylabel="test accuracy %",
        title="KW b = 1, seed 0, while annealing (star: end of run)",
    )
    axes[1].legend(fontsize=7)
    axes[2].set(
        xlim=(1.02, -0.02),
        xlabel="tau",
        ylabel="share",
        title="attention: one-to-one share - tau, entropy (dashed)",
    )
    axes[2].legend(fontsize=7)
    out = save_figure(fig, name)
    plt.close(fig)
    return out
