"""Parameter counts of every paper configuration: this project's count, the paper's, the difference.

Models are built at full size (224 px configurations, 1000 classes) and only counted: no forward
pass, no weights downloaded. Three sources of paper numbers:

* KernelWarehouse (ICML 2024) Tables 1-4 and 11: the plain networks and their KW versions at
  each budget ``b``; ConvNeXt-T also against the authors' released configuration (39.37M).
* YOLO-RD (ICLR 2025) Tables 1, 3 and 4: +0.2M for the RD module (f = N = 512) on YOLOv7 /
  YOLOv9; equation 14 / Table 4 for the fused retriever's extra ``N f k^2 - (f N + N k^2)``.
* YOLOR Tables 7 and 9: the exact parameter counts with and without implicit knowledge; the
  differences (2,557 on YOLOv4-CSP, 2,812 on YOLOR-P6, 1,661 on YOLOv4-SSS) are rebuilt here
  from ``implicit_knowledge`` layers on the paper's head widths.
"""

from __future__ import annotations

import time

import timm
import torch
from _common import count_params, markdown_table, no_plot_note, plotting, save_figure
from torch import nn

# timm base model -> parameters the KernelWarehouse paper reports for it, in millions
PAPER_BASE_M: dict[str, float] = {
    "resnet18": 11.69,
    "resnet50": 25.56,
    "mobilenetv2_100": 3.50,
    "mobilenetv2_050": 1.97,
    "convnext_tiny": 28.59,
    "deit_tiny_patch16_224": 5.72,
    "deit_small_patch16_224": 22.06,
}

# (KW architecture, budget, paper millions, build options, note)
PAPER_KW: list[tuple[str, float, float, dict, str]] = [
    ("kw_resnet18", 0.25, 4.08, {}, "the project SPEC expects 4.03M here (vs the paper's 4.08M)"),
    ("kw_resnet18", 0.5, 7.43, {}, ""),
    ("kw_resnet18", 1.0, 11.93, {}, ""),
    ("kw_resnet18", 2.0, 23.24, {}, ""),
    ("kw_resnet18", 4.0, 45.86, {}, ""),
    ("kw_resnet50", 0.5, 17.64, {}, ""),
    ("kw_resnet50", 1.0, 28.05, {}, ""),
    ("kw_resnet50", 4.0, 102.02, {}, ""),
    ("kw_mobilenetv2_100", 0.5, 2.65, {}, ""),
    ("kw_mobilenetv2_100", 1.0, 5.17, {}, ""),
    ("kw_mobilenetv2_100", 4.0, 11.38, {}, ""),
    ("kw_mobilenetv2_050", 0.5, 1.47, {}, ""),
    ("kw_mobilenetv2_050", 1.0, 2.85, {}, ""),
    ("kw_mobilenetv2_050", 4.0, 4.65, {}, ""),
    ("kw_convnext_tiny", 0.75, 24.53, {}, "paper grouping, attention reduction 1/32"),
    ("kw_convnext_tiny", 1.0, 32.99, {}, "paper grouping (stage 3 in three), reduction 1/32"),
    (
        "kw_convnext_tiny",
        1.0,
        39.37,
        {
            "grouping": "convnext_authors",
            "kw_kwargs": {"attention_norm": "layernorm", "reduction": 1 / 16},
        },
        "authors' released config",
    ),
    ("kw_deit_tiny_patch16_224", 1.0, 6.39, {}, ""),
    ("kw_deit_tiny_patch16_224", 4.0, 20.44, {}, ""),
    ("kw_deit_small_patch16_224", 0.75, 19.23, {}, ""),
    ("kw_deit_small_patch16_224", 1.0, 24.36, {}, ""),
]
QUICK_KW = {"kw_resnet18", "kw_mobilenetv2_050"}
# the SPEC's tolerance: ResNet / MobileNetV2 rows within 0.5%, ConvNeXt / DeiT within 2%
TOLERANCE = {"resnet": 0.5, "mobilenetv2": 0.5, "convnext": 2.0, "deit": 2.0}

# YOLOR: (model, head input widths, outputs per level, paper params without, with implicit)
YOLOR_ROWS = [
    ("YOLOv4-CSP (Table 7, baseline 1)", (256, 512, 1024), 255, 52_908_989, 52_911_546),
    ("YOLOR-P6 (Table 7, baseline 2)", (256, 384, 512, 640), 255, 37_262_204, 37_265_016),
    ("YOLOv4-SSS (Table 9)", (128, 256, 512), 255, 9_290_077, 9_291_738),
]


def _diff(ours: float, paper: float) -> str:
    return f"{100 * (ours / paper - 1):+.2f}%"


def _budget(b: float) -> str:
    return {0.25: "1/4x", 0.5: "1/2x", 0.75: "3/4x"}.get(b, f"{b:g}x")


def _kw_section(quick: bool) -> tuple[str, list[tuple[str, float, float, float]]]:
    import kernelwarehouse  # noqa: F401  registers kw_* in timm's factory

    bases = {
        "resnet18",
        "resnet50",
        "mobilenetv2_100",
        "mobilenetv2_050",
        "convnext_tiny",
        "deit_tiny_patch16_224",
        "deit_small_patch16_224",
    }
    if quick:
        bases = {"resnet18", "mobilenetv2_050"}
    base_count = {}
    rows = []
    for base in PAPER_BASE_M:
        if base not in bases:
            continue
        n = count_params(timm.create_model(base))
        base_count[base] = n / 1e6
        rows.append(
            [
                f"{base} (timm)",
                "-",
                f"{n / 1e6:.2f}M",
                f"{PAPER_BASE_M[base]:.2f}M",
                _diff(n / 1e6, PAPER_BASE_M[base]),
                "",
                "",
            ]
        )
    points = []  # (architecture, budget, ours M, paper M) for the plot
    for arch, b, paper, options, note in PAPER_KW:
        if quick and arch not in QUICK_KW:
            continue
        start = time.perf_counter()
        n = count_params(timm.create_model(arch, budget=b, **options)) / 1e6
        print(f"params {arch} b={b}: {n:.3f}M ({time.perf_counter() - start:.1f} s)", flush=True)
        family = next(f for f in TOLERANCE if f in arch)
        within = abs(100 * (n / paper - 1)) <= TOLERANCE[family]
        base = arch.removeprefix("kw_")
        rel = f"{n / base_count[base]:.2f}x" if base in base_count else ""
        rows.append(
            [
                arch,
                _budget(b),
                f"{n:.2f}M",
                f"{paper:.2f}M",
                _diff(n, paper),
                f"{'yes' if within else '**no**'} (±{TOLERANCE[family]}%)",
                f"{rel}{'; ' + note if note else ''}",
            ]
        )
        if not options:
            points.append((arch, b, n, paper))
    table = markdown_table(
        [
            "model",
            "budget",
            "this project",
            "paper",
            "difference",
            "within tolerance",
            "vs plain; note",
        ],
        rows,
        "llrrrl",
    )
    text = (
        "## KernelWarehouse (paper Tables 1-4, 11)\n\n"
        "Counts of `timm.create_model(<kw arch>, budget=b)` (1000 classes, paper warehouse "
        "grouping) against the paper. Tolerance as in the project SPEC: ResNet and MobileNetV2 "
        "rows within 0.5%, ConvNeXt and DeiT (no released configuration in the paper) within "
        "2%.\n\n" + table + "\n\n"
    )
    return text, points


def _rd_section() -> str:
    from rd_core import RetrieverDictionary

    f = n = 512
    k = 5
    split = count_params(RetrieverDictionary(f, n, k))
    fused = count_params(RetrieverDictionary(f, n, k, fused_retriever=True))
    authors = count_params(RetrieverDictionary(f, n, k, variant="authors"))
    extra_formula = n * f * k * k - (f * n + n * k * k)
    rows = [
        [
            "RD module, paper variant (f = N = 512, k = 5)",
            f"{split / 1e6:.3f}M",
            "+0.2M",
            "Table 3 (+0.2M on YOLOv9-c); Table 1: YOLOv7 37.2M -> 37.4M, YOLOv9 25.3M -> 25.5M "
            "(rounded to 0.1M)",
        ],
        [
            "RD module, authors' variant",
            f"{authors / 1e6:.3f}M",
            "-",
            "adds BatchNorm affine terms, drops PONO's gamma/beta",
        ],
        [
            "fused retriever minus split (eq. 14)",
            f"{(fused - split) / 1e6:.3f}M",
            f"{extra_formula / 1e6:.3f}M",
            "N f k^2 - (f N + N k^2), section A.8",
        ],
    ]
    text = (
        "## Retriever-Dictionary (YOLO-RD)\n\n"
        + markdown_table(["configuration", "this project", "paper", "note"], rows, "lrrl")
        + "\n\n"
        f"The paper module is G (f N) + E (N k^2) + PONO (2N) + D (N f) = {split:,}; "
        "with one decimal of millions the paper's +0.2M is consistent with counts from 0.15M "
        "to 0.25M only, so the 0.54M here is **larger** than the rounded +0.2M. The paper's "
        "own formula for the split retriever (f N + N k^2) plus the N x f dictionary already "
        f"gives {(f * n + n * k * k + n * f) / 1e6:.3f}M at f = N = 512, so the +0.2M "
        "most likely reflects a narrower RD input in YOLOv7/YOLOv9 than f = 512, not a "
        "different module. Table 4's absolute totals (41.9M fused vs 4.3M split) do not match "
        "either model's size and are not compared.\n\n" + _rd_on_detector()
    )
    return text


def _rd_on_detector() -> str:
    """RD on YOLO-like detectors: yolo-heads with a CSPDarknet53 backbone (YOLOv4's)."""
    from yolo_heads import YOLODetector

    rows = []
    for backbone, neck in (("cspdarknet53", 256),):
        torch.manual_seed(0)
        plain = count_params(YOLODetector(backbone, num_classes=80, neck_channels=neck))
        torch.manual_seed(0)
        # yolo-heads' default `at` ("stages.2") misses the flattened feature modules of these
        # backbones ("stages_2"), so the stride-8 stage is named explicitly
        model = YOLODetector(
            backbone, num_classes=80, neck_channels=neck, rd={"num_atoms": 512, "at": "stages_2"}
        )
        with_rd = count_params(model)
        rows.append(
            [
                f"{backbone} + PAN({neck}) + anchor-free head",
                model.rd_at,
                f"{plain / 1e6:.2f}M",
                f"{with_rd / 1e6:.2f}M",
                f"+{(with_rd - plain) / 1e6:.3f}M (+{100 * (with_rd / plain - 1):.2f}%)",
            ]
        )
    return (
        "RD (N = 512, paper variant) on the stride-8 stage of YOLO-like detectors built with "
        "`yolo_heads.YOLODetector` (80 classes); the paper reports YOLOv7 37.2M -> 37.4M "
        "(+0.5%) and YOLOv9-c 25.3M -> 25.5M (+0.8%), i.e. under 1%:\n\n"
        + markdown_table(["detector", "RD after", "without RD", "with RD", "added"], rows, "llrrr")
        + "\n\n"
    )


def _implicit_section() -> str:
    from implicit_knowledge import ImplicitPredictionRefinement, fuse, implicit_layers

    rows = []
    for name, widths, outputs, without, with_ in YOLOR_ROWS:
        head = nn.ModuleList(ImplicitPredictionRefinement(nn.Conv2d(c, outputs, 1)) for c in widths)
        added = count_params(head) - sum(c * outputs + outputs for c in widths)
        paper_added = with_ - without
        rows.append(
            [
                name,
                f"{'/'.join(map(str, widths))}",
                f"{added:,}",
                f"{paper_added:,}",
                "exact" if added == paper_added else f"{added - paper_added:+,}",
                f"+{100 * added / without:.3f}%",
            ]
        )
    text = (
        "## Implicit knowledge (YOLOR Tables 7 and 9)\n\n"
        "YOLOR's implicit head adds an `ImplicitA` (addition, one value per input channel) "
        "before and an `ImplicitM` (multiplication, one per output) after each output "
        "convolution. Built here as `implicit_knowledge.ImplicitPredictionRefinement` on the "
        "paper's head widths (3 anchors x 85 outputs = 255 per level) and compared with the "
        "difference of the paper's exact parameter counts:\n\n"
        + markdown_table(
            [
                "model",
                "head input widths",
                "implicit params (ours)",
                "paper difference",
                "match",
                "relative",
            ],
            rows,
            "llrrlr",
        )
        + "\n\n"
    )
    # priors: training-time cost per modelling choice, zero after fusion
    prior_rows = []
    for prior in ("vector", "network", "factorized"):
        head = nn.Sequential(
            *[
                ImplicitPredictionRefinement(nn.Conv2d(c, 255, 1), prior=prior)
                for c in (256, 512, 1024)
            ]
        )
        convs = sum(c * 255 + 255 for c in (256, 512, 1024))
        training = count_params(head) - convs
        fused = fuse(head.eval())
        after = count_params(fused) - convs
        prior_rows.append([prior, f"{training:,}", f"{after:,}", len(implicit_layers(fused))])
    text += (
        "Modelling choices (section 4.2) on the YOLOv4-CSP head: parameters while training, "
        "and after `implicit_knowledge.fuse` (folded into the convolutions):\n\n"
        + markdown_table(
            [
                "prior",
                "implicit params, training",
                "extra params after fuse",
                "implicit layers left",
            ],
            prior_rows,
            "lrrr",
        )
        + "\n\n"
    )
    text += _implicit_on_detector()
    return text


def _implicit_on_detector() -> str:
    from implicit_knowledge import fuse
    from yolo_heads import YOLODetector

    rows = []
    for head in ("anchor_based", "anchor_free"):
        torch.manual_seed(0)
        plain = count_params(
            YOLODetector("cspdarknet53", num_classes=80, head=head, neck_channels=256)
        )
        model = YOLODetector(
            "cspdarknet53", num_classes=80, head=head, neck_channels=256, implicit=True
        )
        with_ = count_params(model)
        fused = count_params(fuse(model.eval()))
        rows.append(
            [
                head,
                f"{plain:,}",
                f"+{with_ - plain:,} (+{100 * (with_ / plain - 1):.4f}%)",
                f"{fused - plain:+,}",
            ]
        )
    return (
        "On a `yolo_heads.YOLODetector` (CSPDarknet53, PAN 256, 80 classes) with `implicit=True` "
        "(iFA on every neck level + iPR on every output convolution). What remains after "
        "fusion is iFA: an addition before a zero-padded 3x3 convolution cannot be folded "
        "exactly (the zero border), so it stays as one constant per channel:\n\n"
        + markdown_table(
            ["head", "without", "implicit added (training)", "after fuse"], rows, "lrrr"
        )
        + "\n\n"
    )


def _plot(points: list[tuple[str, float, float, float]]) -> str:
    plt = plotting()
    if plt is None or not points:
        return no_plot_note()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for arch in dict.fromkeys(p[0] for p in points):
        pts = [p for p in points if p[0] == arch]
        ax.plot([p[3] for p in pts], [p[2] for p in pts], "o", label=arch.removeprefix("kw_"))
    hi = max(max(p[2], p[3]) for p in points) * 1.3
    lo = min(min(p[2], p[3]) for p in points) / 1.3
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="equal")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="paper (M parameters)",
        ylabel="this project (M parameters)",
        title="KernelWarehouse parameter counts",
    )
    ax.legend(fontsize=7)
    name = save_figure(fig, "params_kw.png")
    plt.close(fig)
    return f"![KW parameter counts: project vs paper]({name})\n\n"


def main(quick: bool = False) -> str:
    kw_text, points = _kw_section(quick)
    return (
        ("Quick run: ResNet18 and MobileNetV2 0.5 only.\n\n" if quick else "")
        + kw_text
        + _plot(points)
        + _rd_section()
        + _implicit_section()
    )


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
