"""Small-data accuracy: does each technique help at this scale? Several seeds, mean and spread.

Two experiments on scikit-learn's real 8x8 handwritten digits (shipped with scikit-learn, nothing
downloaded):

* **Classification**: an eighth-width timm ResNet18 (stages 8/16/32/64 channels, a deep stem of
  4/4/8 channels, one input channel; checked on the built model) on the digits upscaled to
  32 x 32, plain and as KernelWarehouse at budgets 1/2, 1 and 4
  (``timm.create_model("kw_resnet18", budget=b, ...)``). The runs are cells of the annealing
  grid below (one training loop for both): the temperature goes linearly from 1 to 0 over the
  first 220 iterations, stepped every iteration with :class:`kernelwarehouse.TemperatureScheduler`
  (timm-knowledge's trainer steps it the same way), then 440 more at 0; one more KW row keeps
  tau fixed at 1 (no annealing: every sample gets the kernel of its initial assignment). Each
  epoch's incomplete last batch is dropped, as timm's training loader does. Fixed stratified
  split (1347 train / 450 test); the seed changes initialisation, data order and augmentation.
* **Detection**: ``yolo_heads`` on its generated digits-detection set (real digits on noisy
  64 x 64 canvases), a quarter-width ResNet18 + PAN + anchor-free head, without and with the
  Retriever-Dictionary after ``layer2`` (random dictionary vs a dictionary initialised from a
  vision model: k-means, with ``dict_init``, of the ``layer2`` features of the trained baseline
  of the same seed, the paper's "VM" initialiser), and without and with YOLOR implicit
  knowledge (iFA + iPR). COCO AP and AP50 by pycocotools on a disjoint validation set.

* **KernelWarehouse annealing length** (``--part anneal``, ``--report anneal``; the code is in
  ``_kw_annealing.py``): the classification network trained for ``anneal + post`` iterations
  with tau going from 1 to 0 over the first ``anneal``, for several lengths, variants, batch
  sizes and seeds, one cell at a time appended to ``results/accuracy_annealing.jsonl`` with its
  training curve and attention statistics, e.g.
  ``python benchmarks/bench_accuracy.py --part anneal --anneal-iters 11 55 220 880
  --variants plain kw_b1 --seeds 0 1 2 --shard 1/2``.

The mean and the sample standard deviation over seeds are reported, with the difference to the
baseline and whether it exceeds the spread (a rough guide, not a significance test).
"""

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _kw_annealing as annealing
import timm
import torch
import torch.nn.functional as F
from _common import (
    RESULTS,
    count_params,
    markdown_table,
    mean_std,
    no_plot_note,
    plotting,
    save_figure,
)
from _kw_annealing import VARIANTS as ANNEAL_VARIANTS
from torch import nn


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    cls_variants: tuple[str, ...]  # _kw_annealing.VARIANTS, the baseline first
    cls_anneal_iters: int
    cls_post_iters: int
    det_train_images: int
    det_val_images: int
    det_epochs: int
    det_atoms: int
    det_batch: int = 8
    det_lr: float = 4e-3


FULL = Settings(
    seeds=(0, 1, 2),
    cls_variants=("plain", "kw_b05", "kw_b1", "kw_b4", "kw_tau1"),
    # the schedule the annealing section of results/accuracy.md recommends: long enough to
    # learn while tau > 0, then twice that at tau = 0 (+ 110 left KW b = 1 4.4 points below
    # plain; 10% of a 110-iteration run, the paper's proportion, lost 35-39 points)
    cls_anneal_iters=220,
    cls_post_iters=440,
    det_train_images=192,
    det_val_images=48,
    det_epochs=12,
    det_atoms=32,
)
QUICK = Settings(
    seeds=(0, 1),
    cls_variants=("plain", "kw_b1"),
    cls_anneal_iters=11,
    cls_post_iters=22,
    det_train_images=32,
    det_val_images=16,
    det_epochs=2,
    det_atoms=16,
)
# Finished detection runs are kept here (one JSON per run, keyed by settings, model and seed;
# classification runs are the annealing grid's records) so the full set can be filled by
# several processes at once (`--part`), and an interrupted run resumes. Quick runs are never
# cached. BENCH_ACCURACY_CACHED_ONLY=1 reports the finished runs only (each table row then says
# how many seeds it has).
CACHED_ONLY = os.environ.get("BENCH_ACCURACY_CACHED_ONLY") == "1"
CACHE = Path(os.environ.get("BENCH_ACCURACY_CACHE", Path(tempfile.gettempdir()) / "bench-accuracy"))
# Classification: an eighth-width ResNet18. KernelWarehouse's per-sample kernel assembly costs
# batch x cells x cell size whatever the resolution, and dominates at 32 px (a KW step was ~15x
# a plain one here); at 1/8 width it is 4x cheaper than at 1/4, which made 3 seeds x 3 budgets
# fit the time the CPU was available. timm's default ResNet stem is a 7x7 convolution of 64
# channels whatever ``stem_width`` says (stem_width only sizes the deep stems), so the eighth-width
# network takes timm's deep stem: 3x3 convolutions of stem_width, stem_width, 2 x stem_width = 8
# channels (:func:`check_width` asserts it on the built model). Detection: quarter width.
WIDTH = {"channels": (8, 16, 32, 64), "stem_type": "deep", "stem_width": 4}
#: annealing grid: iterations trained after tau reaches 0 (10 epochs of 22 iterations)
POST_ITERS = 220
DET_WIDTH = {"channels": (16, 32, 64, 128), "stem_width": 16}


@dataclass
class Result:
    name: str
    params: int
    scores: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def add(self, seconds: float, **scores: float) -> None:
        self.seconds.append(seconds)
        for key, value in scores.items():
            self.scores.setdefault(key, []).append(value)


def _key(s: Settings, experiment: str, name: str, seed: int) -> Path:
    # only the settings the experiment depends on, so changing one experiment's settings keeps
    # the other's finished runs
    relevant = (s.det_train_images, s.det_val_images, s.det_epochs, s.det_atoms)
    relevant += (s.det_batch, s.det_lr, DET_WIDTH)
    digest = hashlib.sha1(repr((relevant, experiment, name, seed)).encode()).hexdigest()[:16]
    return CACHE / f"{experiment}-{seed}-{digest}.json"


def cached(s: Settings, experiment: str, name: str, seed: int, use: bool) -> dict | None:
    path = _key(s, experiment, name, seed)
    if use and path.exists():
        return json.loads(path.read_text())
    return None


def store(s: Settings, experiment: str, name: str, seed: int, run: dict, use: bool) -> None:
    if not use:
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    path = _key(s, experiment, name, seed)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(run))
    tmp.replace(path)


# ------------------------------------------------------------------------ classification
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as ``[N, 1, 32, 32]`` in [0, 1] and labels; one fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)
    train_idx, test_idx = train_test_split(
        range(len(y)), test_size=450, stratify=digits.target, random_state=0
    )
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 3) -> torch.Tensor:
    """Random translation by up to ``pixels`` (pad, then crop at a random offset per batch)."""
    padded = F.pad(x, (pixels,) * 4)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def check_width(model: nn.Module) -> None:
    """Assert the classifier is the eighth-width network the tables name (stem included)."""
    convs = [m for m in model.modules() if hasattr(m, "out_channels") and hasattr(m, "stride")]
    widest = max(m.out_channels for m in convs)
    stem_out = model.bn1.num_features
    stages = [model.get_submodule(f"layer{i}")[-1].bn2.num_features for i in range(1, 5)]
    assert (stem_out, tuple(stages), widest) == (8, WIDTH["channels"], 64), (
        f"classifier is not 1/8 width: stem {stem_out}, stages {stages}, widest conv {widest}"
    )


def build_classifier(budget: float | None) -> nn.Module:
    if budget is None:
        model = timm.create_model("resnet18", num_classes=10, in_chans=1, **WIDTH)
    else:
        import kernelwarehouse  # noqa: F401  registers kw_resnet18

        model = timm.create_model("kw_resnet18", budget=budget, num_classes=10, in_chans=1, **WIDTH)
    check_width(model)
    return model


def classification(
    s: Settings, seeds: tuple[int, ...], use_cache: bool, only: str | None = None
) -> list[Result]:
    """The annealing grid's cells at the table's length, one Result per variant.

    With ``use_cache`` finished cells are read from ``results/accuracy_annealing.jsonl`` and
    missing ones are appended to it; quick runs neither read nor write it.
    """
    data = None
    done = {annealing.Cell(**r["cell"]).key(): r for r in annealing.finished()} if use_cache else {}
    results = []
    for variant in s.cls_variants:
        label = ANNEAL_VARIANTS[variant][0]
        if only is not None and not label.endswith(only):
            continue
        result = None
        for seed in seeds:
            cell = annealing.Cell(
                variant, s.cls_anneal_iters, s.cls_post_iters, 64, seed, drop_last=True
            )
            record = done.get(cell.key())
            if record is None and CACHED_ONLY:
                print(f"accuracy cls {label} seed {seed}: not finished, left out", flush=True)
                continue
            if record is None:
                data = data or digits_split()
                record = annealing.run_cell(cell, data, build_classifier, _shift)
                if use_cache:
                    annealing.append(record)
            result = result or Result(label, record["params"])
            result.add(record["seconds"], accuracy=record["accuracy"])
            print(f"accuracy cls {label} seed {seed}: {record['accuracy']:.2f}%", flush=True)
        if result is not None:
            results.append(result)
    return results


# ------------------------------------------------------------------------------ detection
def detection_data(root: Path, s: Settings):
    from yolo_heads.data import CocoDetection, make_digits_detection

    common = dict(image_size=64, digit_size=(14, 30), progress=False)
    train_ann = make_digits_detection(root, num_images=s.det_train_images, seed=0, **common)
    val_ann = make_digits_detection(
        root, num_images=s.det_val_images, seed=1, split="val", **common
    )
    return (
        CocoDetection(train_ann, image_size=64, augment=True),
        CocoDetection(val_ann, image_size=64),
        CocoDetection(train_ann, image_size=64),  # no augmentation: dictionary features
    )


def build_detector(**knowledge) -> nn.Module:
    from yolo_heads import YOLODetector

    return YOLODetector(
        "resnet18",
        num_classes=10,
        neck_channels=32,
        head_kwargs={"image_size_hint": 64},
        **DET_WIDTH,
        **knowledge,
    )


def vision_dictionary(trained: nn.Module, at: str, images, num_atoms: int, seed: int):
    """dict-init atoms from a trained detector's backbone features at ``at`` (paper's "VM")."""
    from dict_init import VisionEncoder, build_dictionary

    # the detector normalises [0, 1] images with its backbone's timm mean / std before the
    # backbone body (where the RD sits); the encoder must see the same features, so it runs the
    # trained body with the same normalisation
    mean, std = trained.mean.flatten().tolist(), trained.std.flatten().tolist()
    encoder = VisionEncoder(trained.backbone.body, at, image_size=64, mean=mean, std=std)
    return build_dictionary(
        encoder, images, num_atoms=num_atoms, seed=seed, positions_per_image=None, progress=False
    )


def train_detector(model: nn.Module, train_set, val_set, seed: int, s: Settings):
    from yolo_heads import evaluate_detector
    from yolo_heads.train import train

    result = train(
        model,
        train_set,
        epochs=s.det_epochs,
        batch_size=s.det_batch,
        lr=s.det_lr,
        seed=seed,
        progress=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary
        metrics = evaluate_detector(result.model, val_set, progress=False)
    return result.model, metrics


def detection(
    s: Settings, seeds: tuple[int, ...], use_cache: bool, only: str | None = None
) -> list[Result]:
    root = Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    train_set, val_set, plain_train = detection_data(root, s)
    images = torch.stack([plain_train[i][0] for i in range(len(plain_train))])
    configs: dict[str, Callable[[dict], dict]] = {
        "baseline": lambda _: {},
        "+ RD, random dictionary": lambda _: {"rd": {"num_atoms": s.det_atoms}},
        "+ RD, vision-initialised dictionary": lambda ctx: {
            "rd": {"num_atoms": s.det_atoms, "dictionary": ctx["dict"]}
        },
        "+ implicit (iFA + iPR)": lambda _: {"implicit": True},
    }
    if only is not None:  # a config without the baseline (not the vision one, which needs it)
        configs = {k: v for k, v in configs.items() if k.endswith(only)}
    results = {name: None for name in configs}
    for seed in seeds:
        ctx: dict = {}
        done = {name: cached(s, "det", name, seed, use_cache) for name in configs}
        done.setdefault("+ RD, vision-initialised dictionary", {})
        for name, knowledge in configs.items():
            run = done[name]
            if run is None and CACHED_ONLY:
                print(f"accuracy det {name} seed {seed}: not finished, left out", flush=True)
                continue
            if run is None:
                if name == "+ RD, vision-initialised dictionary" and "dict" not in ctx:
                    raise RuntimeError("the vision dictionary needs the baseline of this seed")
                torch.manual_seed(seed)
                model = build_detector(**knowledge(ctx))
                start = time.perf_counter()
                trained, metrics = train_detector(model, train_set, val_set, seed, s)
                run = {
                    "seconds": time.perf_counter() - start,
                    "scores": {"AP": 100 * metrics["AP"], "AP50": 100 * metrics["AP50"]},
                    "params": count_params(model),
                }
                store(s, "det", name, seed, run, use_cache)
                if name == "baseline":
                    ctx["trained"] = trained
            needs_dictionary = done["+ RD, vision-initialised dictionary"] is None
            if name == "baseline" and needs_dictionary and not CACHED_ONLY:
                if "trained" not in ctx:  # baseline cached, vision run not: retrain baseline
                    torch.manual_seed(seed)
                    ctx["trained"], _ = train_detector(
                        build_detector(), train_set, val_set, seed, s
                    )
                at = build_detector(rd={"num_atoms": s.det_atoms}).rd_at
                ctx["dict"] = vision_dictionary(ctx["trained"], at, images, s.det_atoms, seed)
            if results[name] is None:
                results[name] = Result(name, run["params"])
            results[name].add(run["seconds"], **run["scores"])
            print(
                f"accuracy det {name} seed {seed}: AP {run['scores']['AP']:.2f} "
                f"AP50 {run['scores']['AP50']:.2f} ({run['seconds']:.0f} s)",
                flush=True,
            )
    return [r for r in results.values() if r is not None]


# ------------------------------------------------------------------------------ reporting
def _summary_rows(results: list[Result], metrics: list[str]) -> list[list[str]]:
    base = results[0]
    rows = []
    for r in results:
        row = [r.name, f"{r.params / 1e6:.3f}M"]
        for m in metrics:
            mean, std = mean_std(r.scores[m])
            row.append(f"{mean:.2f} ± {std:.2f}")
            if r is not base:
                b_mean, b_std = mean_std(base.scores[m])
                delta = mean - b_mean
                clear = abs(delta) > max(std, b_std)
                row.append(f"{delta:+.2f}" + (" (beyond spread)" if clear else " (within spread)"))
            else:
                row.append("-")
        row.append(" / ".join(f"{v:.1f}" for v in r.scores[metrics[0]]))
        row.append(f"{sum(r.seconds) / len(r.seconds):.0f}")
        rows.append(row)
    return rows


def _verdicts(results: list[Result], metric: str) -> list[str]:
    base_mean, base_std = mean_std(results[0].scores[metric])
    lines = []
    for r in results[1:]:
        mean, std = mean_std(r.scores[metric])
        delta = mean - base_mean
        if abs(delta) <= max(std, base_std):
            verdict = "no clear effect (difference within the seed spread)"
        elif delta > 0:
            verdict = "helped"
        else:
            verdict = "**hurt**"
        lines.append(f"- {r.name}: {metric} {delta:+.2f} points vs {results[0].name}: {verdict}.")
    return lines


def _plot(cls: list[Result], det: list[Result]) -> str:
    plt = plotting()
    if plt is None:
        return no_plot_note()
    fig, axes = plt.subplots(1, 2 if det else 1, figsize=(11 if det else 5.5, 4.2), squeeze=False)
    ax = axes[0][0]
    for r in cls:
        mean, std = mean_std(r.scores["accuracy"])
        ax.errorbar(r.params / 1e6, mean, yerr=std, fmt="o", capsize=3, label=r.name)
    ax.set(
        xscale="log",
        xlabel="parameters (M)",
        ylabel="test accuracy (%)",
        title="digits classification",
    )
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # log-axis minor labels overlap
    ax.legend(fontsize=7)
    if det:
        ax = axes[0][1]
        for i, r in enumerate(det):
            mean, std = mean_std(r.scores["AP50"])
            # a small horizontal offset per model: the two RD runs have the same parameter count
            x = r.params / 1e6 + 0.0004 * (i - (len(det) - 1) / 2)
            ax.errorbar(x, mean, yerr=std, fmt="o", capsize=3, label=r.name)
        ax.set(xlabel="parameters (M)", ylabel="AP50 (%)", title="digits detection")
        ax.legend(fontsize=7)
    name = save_figure(fig, "accuracy_vs_params.png")
    plt.close(fig)
    return f"![accuracy vs parameters]({name})\n\n"


_ANNEAL_BEGIN = "<!-- annealing grid: generated by bench_accuracy.py --report anneal -->"
_ANNEAL_END = "<!-- end of annealing grid -->"


def annealing_grid_text() -> str:
    """The generated part of the annealing section: table of every finished cell, plot."""
    runs = annealing.finished()
    if not runs:
        return "No annealing cells finished yet (`--part anneal`).\n"
    image = annealing.plot(runs)
    cells = len(runs)
    seconds = sum(r["seconds"] for r in runs)
    text = [
        f"{cells} finished cells from `results/{annealing.RUNS.name}` ({seconds / 60:.0f} min "
        "of training). Every cell trains anneal + post iterations (AdamW 3e-3 one-cycle over "
        "the whole run, shifts of up to 3 px, digits 32 x 32, ResNet18/8 as above); plain "
        "and tau-fixed rows train the same number of iterations without annealing. Test "
        "accuracy is the final model in eval mode; the two re-estimated columns evaluate the "
        "same weights after re-estimating the attention BatchNorm1d (or every BatchNorm) "
        "running statistics on the training images in full batches of 64. The one-to-one share "
        "and the entropy are measured on the last logged training batch (see "
        '`_kw_annealing.AttentionProbe`). "beyond spread": the difference to plain at the same '
        "length is larger than either standard deviation.\n",
        annealing.table(runs),
        "",
    ]
    if image:
        text.append(f"![accuracy vs annealing length]({image})\n")
    return "\n".join(text)


_ANNEAL_HEADING = "## KernelWarehouse: annealing length"


def _annealing_section() -> str:
    """The annealing section for a full report: the committed explanation, a fresh grid."""
    path = RESULTS / "accuracy.md"
    old = path.read_text() if path.exists() else ""
    if _ANNEAL_HEADING in old and _ANNEAL_BEGIN in old:
        explanation = old[old.index(_ANNEAL_HEADING) : old.index(_ANNEAL_BEGIN)]
    else:
        explanation = _ANNEAL_HEADING + "\n\n"
    return f"{explanation}{_ANNEAL_BEGIN}\n{annealing_grid_text()}\n{_ANNEAL_END}\n"


def write_annealing_report(path: Path = RESULTS / "accuracy.md") -> str:
    """Replace the generated annealing grid in ``path`` (append a section if it has none)."""
    grid = f"{_ANNEAL_BEGIN}\n{annealing_grid_text()}\n{_ANNEAL_END}"
    old = path.read_text() if path.exists() else "# accuracy\n"
    if _ANNEAL_BEGIN in old and _ANNEAL_END in old:
        head, rest = old.split(_ANNEAL_BEGIN, 1)
        new = head + grid + rest.split(_ANNEAL_END, 1)[1]
    else:
        new = f"{old.rstrip()}\n\n{_ANNEAL_HEADING}\n\n{grid}\n"
    path.write_text(new)
    return grid


_DET_HEADING = "## Digits detection"


def _previous_detection() -> str:
    """The detection section of the committed report, for a classification-only re-run."""
    path = RESULTS / "accuracy.md"
    if not path.exists():
        return "Detection: not measured in this report (no earlier report to keep).\n"
    old = path.read_text()
    date = next(
        (ln[len("- date: ") :] for ln in old.splitlines() if ln.startswith("- date: ")), "?"
    )
    if _DET_HEADING not in old:
        return "Detection: not measured in this report.\n"
    body = old[old.index(_DET_HEADING) :]
    for end in ("\n![", "\n## Reading"):
        if end in body[1:]:
            body = body[: body.index(end, 1)]
    heading, rest = body.split("\n", 1)
    if "(kept from " in heading:  # kept by an earlier re-run: its date and note stand
        return body.rstrip() + "\n"
    note = (
        f"_Detection kept from the report of {date}, not re-run here (`--report cls`): it "
        "describes the detection code of that date._\n"
    )
    return f"{heading} (kept from {date})\n\n{note}{rest.rstrip()}\n"


def _params(results: list[Result], name: str) -> str:
    found = [r.params for r in results if r.name == name]
    return f"{found[0] / 1e6:.2f}M" if found else "?"


def main(quick: bool = False, parts: tuple[str, ...] = ("cls", "det")) -> str:
    s = QUICK if quick else FULL
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    # One thread per process: on shared cores, two OpenMP threads per small model ran >10x
    # slower than one (measured here); accuracy does not depend on the thread count.
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        cls = classification(s, s.seeds, use_cache=not quick)
        det = detection(s, s.seeds, use_cache=not quick) if "det" in parts else []
    finally:
        torch.set_num_threads(threads)
    total = time.perf_counter() - start
    seeds = ", ".join(map(str, s.seeds))
    anneal, post = s.cls_anneal_iters, s.cls_post_iters
    if det:
        det_text = [
            f"{_DET_HEADING} (yolo-heads digits set, 64 x 64)\n",
            f"{s.det_train_images} training / {s.det_val_images} validation images (digits "
            f"drawn from disjoint samples), {s.det_epochs} epochs, batch {s.det_batch}, lr "
            f"{s.det_lr:g}, `yolo_heads.train.train` (AdamW, warm-up + cosine, EMA); "
            f"RD with N = {s.det_atoms} atoms after `layer2` (stride 8), paper variant.\n",
            markdown_table(
                [
                    "detector",
                    "params",
                    "AP %",
                    "vs baseline",
                    "AP50 %",
                    "vs baseline",
                    "AP per seed",
                    "s / run",
                ],
                _summary_rows(det, ["AP", "AP50"]),
                "lrrrrrlr",
            ),
            "",
            *_verdicts(det, "AP"),
            *_verdicts(det, "AP50"),
            "",
        ]
    else:
        det_text = [_previous_detection()]
    text = [
        (
            "**Quick run** (too short to conclude anything; the committed file is the full run).\n"
            if quick
            else ""
        ),
        f"Seeds {seeds}; mean ± sample standard deviation over seeds; CPU, one thread per "
        f"process; this report took {total / 60:.1f} min (finished classification runs are "
        "the annealing grid's records in `results/accuracy_annealing.jsonl`, finished "
        "detection runs are cached in `$BENCH_ACCURACY_CACHE`, default `<tmp>/bench-accuracy`; "
        "both can be filled in parallel with `python benchmarks/bench_accuracy.py --part "
        "cls|det --seeds 0 1 2`; "
        '"s / run" is each run\'s own training time). "beyond spread": the difference to '
        "the baseline is larger than either standard deviation.\n",
        "## Digits classification (scikit-learn digits, 32 x 32, 1347 train / 450 test)\n",
        f"{anneal + post} iterations, AdamW 3e-3 one-cycle, batch 64 with each epoch's "
        "incomplete last batch dropped (as timm's training loader does), random shifts of up "
        "to 3 px. ResNet18 at 1/8 width: stages of 8/16/32/64 channels after timm's deep stem "
        "of 4/4/8 channels (asserted on every built model). KW rows: tau from 1 to 0 over the "
        f"first {anneal} iterations, stepped every iteration by "
        f"`kernelwarehouse.TemperatureScheduler`, then {post} at 0; the last row keeps tau at "
        "1. These are the annealing grid's cells at this schedule, the one the section "
        '"KernelWarehouse: annealing length" below recommends: long enough to learn while tau '
        "> 0, then twice that at tau = 0.\n",
        markdown_table(
            ["model", "params", "test accuracy %", "vs plain", "per seed", "s / run"],
            _summary_rows(cls, ["accuracy"]),
            "lrrrlr",
        ),
        "",
        *_verdicts(cls, "accuracy"),
        "",
        *det_text,
        _plot(cls, det),
        "## Reading these numbers\n",
        "These are tiny data sets trained for a few minutes on a CPU: the papers' gains "
        "(KernelWarehouse on ImageNet, YOLO-RD and YOLOR on COCO) come from large data and "
        'long schedules, and a result "within spread" here means the experiment cannot tell, '
        "not that the method does not work. KernelWarehouse at this width spends most of its "
        "extra parameters on the attention branches (hidden size max(c/16, 16) is 16 for every "
        'layer), so "b = 1" is not parameter-neutral on an eighth-width network '
        f"({_params(cls, 'KW b = 1')} vs {_params(cls, cls[0].name)}); at b = 1/2 "
        "the package's ResNet recipe for budgets below 1 (halved cells, so twice the mixtures "
        "and attention outputs) builds about as many parameters as b = 4 at this width "
        f"({_params(cls, 'KW b = 1/2')} vs {_params(cls, 'KW b = 4')}"
        "; at full width its counts match the paper, see params.md), reported as measured. "
        "The tau = 1 row is the same network kept static (each mixture uses only its "
        "initially assigned cell), so its difference to the b = 1 row is what annealing to "
        "tau = 0 does in a run this short. The paper anneals over 10 of 100 epochs; the same "
        "proportion of a 110-iteration run (11 iterations, with the 3-sample last batch of "
        "each epoch trained on) lost 35-39 points, which the section below explains. "
        '"s / run" comes from the grid\'s runs, on a shared CPU: it only indicates relative '
        "cost.\n",
        _annealing_section(),
    ]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="fill the run cache, or print a quick report")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--part",
        choices=("cls", "det", "anneal"),
        help="run only this experiment ('anneal': the KW annealing-length grid, one cell at a "
        "time, appended to results/accuracy_annealing.jsonl)",
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--only", help="classification: models whose name ends with this")
    parser.add_argument(
        "--report",
        choices=("all", "cls", "anneal"),
        default="all",
        help="write results/accuracy.md (print it with --quick); 'cls' re-runs classification "
        "only and keeps the detection section of results/accuracy.md; 'anneal' rebuilds the "
        "annealing section of results/accuracy.md (and its plot) from "
        "results/accuracy_annealing.jsonl",
    )
    anneal = parser.add_argument_group("annealing grid (--part anneal)")
    anneal.add_argument(
        "--anneal-iters", type=int, nargs="+", default=[11, 55, 220, 880], metavar="N"
    )
    anneal.add_argument(
        "--post-iters", type=int, default=POST_ITERS, help="iterations after the annealing"
    )
    anneal.add_argument("--batches", type=int, nargs="+", default=[64], metavar="B")
    anneal.add_argument(
        "--variants", nargs="+", default=list(ANNEAL_VARIANTS), choices=list(ANNEAL_VARIANTS)
    )
    anneal.add_argument(
        "--shard", default="1/1", help="k/n: run every n-th cell from the k-th (1-based)"
    )
    anneal.add_argument(
        "--keep-last-batch",
        action="store_true",
        help="train on each epoch's incomplete last batch too (as the grid's first cells, whose "
        "records have no drop_last key, did); by default it is dropped, as timm's loader does",
    )
    args = parser.parse_args()
    if args.report == "anneal":
        print(write_annealing_report())
    elif args.part == "anneal":
        torch.set_num_threads(1)
        try:
            k, n = (int(v) for v in args.shard.split("/"))
            assert 1 <= k <= n
        except (ValueError, AssertionError):
            parser.error(f"--shard {args.shard!r} is invalid: expected k/n with 1 <= k <= n")
        cells = annealing.grid(
            args.variants,
            args.anneal_iters,
            args.seeds if args.seeds is not None else FULL.seeds,
            args.post_iters,
            args.batches,
            drop_last=not args.keep_last_batch,
        )
        annealing.run_grid(cells, (k, n), digits_split(), build_classifier, _shift)
    elif args.part is None:
        body = main(quick=args.quick, parts=("cls",) if args.report == "cls" else ("cls", "det"))
        print(body)
        if not args.quick:  # the committed report, with run.py's header
            from run import write_report

            command = f"`python benchmarks/bench_accuracy.py --report {args.report}`"
            write_report("accuracy", body, [], command)
    else:
        torch.set_num_threads(1)
        settings = QUICK if args.quick else FULL
        seeds = tuple(args.seeds) if args.seeds is not None else settings.seeds
        if args.part == "cls":
            classification(settings, seeds, use_cache=not args.quick, only=args.only)
        else:
            detection(settings, seeds, use_cache=not args.quick, only=args.only)
