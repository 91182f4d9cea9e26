"""Run-folder plots: loss and metric curves, precision-recall at IoU 0.5, drawn detections.

Figures are drawn on matplotlib's Agg canvas (``matplotlib.figure.Figure``, no pyplot and no
global backend switch, so a training process with no display is never affected), detections
with PIL so that box edges are exact pixels. Every PNG is written atomically.

>>> import tempfile, pathlib, torch
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> target = {"boxes": torch.tensor([[4.0, 4, 28, 28]]), "labels": torch.tensor([1])}
>>> pred = {"boxes": torch.tensor([[5.0, 5, 27, 29]]), "scores": torch.tensor([0.9]),
...         "labels": torch.tensor([1])}
>>> draw_detections(torch.rand(1, 3, 32, 32), [target], [pred], ["a", "b"], out / "d.png").name
'd.png'
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from ._files import write_atomic

__all__ = ["PRCurve", "class_colour", "draw_detections", "plot_pr_curve", "plot_results"]

# Twenty well separated colours (RGB); class k gets PALETTE[k % 20].
PALETTE = (
    (255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 178, 29), (207, 210, 49),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133),
    (203, 56, 255), (255, 149, 200), (255, 157, 151), (255, 112, 31), (168, 153, 44),
)  # fmt: skip


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour every plot uses for class ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    FigureCanvasAgg(fig)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _read_csv(results_csv: str | Path) -> dict[str, np.ndarray]:
    path = Path(results_csv)
    if not path.is_file():
        raise FileNotFoundError(f"results_csv={str(path)!r} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(
            f"results_csv={str(path)!r} has no rows or no 'epoch' column; expected a header "
            "'epoch,<loss parts...>,AP,AP50,...,lr,seconds' and one row per epoch"
        )
    columns = {}
    for name in rows[0]:
        # Empty cells (epochs without validation) become NaN and leave gaps.
        columns[name] = np.array(
            [float(r[name]) if r[name] not in ("", None) else np.nan for r in rows]
        )
    return columns


def plot_results(results_csv: str | Path, path: str | Path) -> Path:
    """One panel per column of ``results.csv`` (each loss part, each metric, lr, seconds) over
    the epochs; metrics with no value yet (-1 or empty) are left blank."""
    columns = _read_csv(results_csv)
    epochs = columns.pop("epoch")
    for name, values in columns.items():
        if name.startswith("AP"):  # pycocotools' -1: no ground truth in that area range
            values[values == -1] = np.nan
    names = [n for n, v in columns.items() if np.isfinite(v).any()]
    cols = min(5, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.92, wspace=0.3, hspace=0.5)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = columns[name]
        shown = np.isfinite(values)
        ax.plot(epochs[shown], values[shown], marker="o", markersize=3, linewidth=1.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _save(fig, path)


@dataclass(frozen=True)
class PRCurve:
    """What :func:`plot_pr_curve` drew: ``precision`` [K, R] per class with ground truth (in
    ``class_names`` order), their ``mean`` [R] over the ``recall`` [R] points, and ``ap50``
    (pycocotools' AP50: the mean of the mean curve)."""

    recall: np.ndarray
    precision: np.ndarray
    mean: np.ndarray
    ap50: float
    class_names: list[str]


def plot_pr_curve(evaluator: Any, class_names: Sequence[str] | None, path: str | Path) -> PRCurve:
    """Precision-recall at IoU 0.5 from a pycocotools ``COCOeval`` after ``accumulate``
    (:func:`yolo_heads.evaluate.coco_evaluator`): a thin line per class, the mean thick, with
    mAP@0.5 in the legend. Classes without ground truth (precision -1) are left out.
    ``class_names`` name the evaluator's categories in id order (``None``: the ids)."""
    if evaluator is None or not getattr(evaluator, "eval", None):
        raise ValueError(
            "evaluator has no accumulated results; pass a COCOeval after evaluate() and "
            "accumulate() (yolo_heads.evaluate.coco_evaluator)"
        )
    params = evaluator.params
    cat_ids = list(params.catIds)
    if class_names is None:
        class_names = [str(c) for c in cat_ids]
    if len(class_names) != len(cat_ids):
        raise ValueError(
            f"class_names has {len(class_names)} names but the evaluator has {len(cat_ids)} "
            "categories; give one name per category, in category id order"
        )
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    area = list(params.areaRngLbl).index("all")
    # precision [T, R, K, A, M]: all areas, the largest max-detections setting (as AP50 uses).
    precision = np.asarray(evaluator.eval["precision"])[t, :, :, area, -1].T  # [K, R]
    has_gt = (precision > -1).all(1)
    precision, names = precision[has_gt], [n for n, keep in zip(class_names, has_gt) if keep]
    recall = np.asarray(params.recThrs)
    mean = precision.mean(0) if len(precision) else np.zeros_like(recall)
    ap50 = float(mean.mean()) if len(precision) else -1.0
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    labels = [c for c, keep in zip(cat_ids, has_gt) if keep]
    for name, label, curve in zip(names, labels, precision):
        colour = np.array(class_colour(cat_ids.index(label))) / 255
        ax.plot(recall, curve, linewidth=0.8, color=colour, label=f"{name} {curve.mean():.3f}")
    ax.plot(recall, mean, linewidth=3, color="#1f3b73", label=f"all classes mAP@0.5 {ap50:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    ax.set_title("precision-recall at IoU 0.5")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, ncols=2 if len(names) > 10 else 1)
    _save(fig, path)
    return PRCurve(recall, precision, mean, ap50, names)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, width: int, dash: int) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):  # fmt: skip
        length = math.hypot(bx - ax, by - ay)
        steps = max(1, int(length // dash))
        for s in range(0, steps, 2):
            f0, f1 = s / steps, min(1.0, (s + 1) / steps)
            start = (ax + (bx - ax) * f0, ay + (by - ay) * f0)
            end = (ax + (bx - ax) * f1, ay + (by - ay) * f1)
            draw.line((start, end), fill=colour, width=width)


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide in ``font``."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _with_masks(pixels: torch.Tensor, found: Any, outline: bool, alpha: float = 0.45):
    """``pixels`` [H, W, 3] uint8 with ``found["masks"]`` in their class colours: filled at
    ``alpha`` (predictions), or as their one-pixel outline (ground truth)."""
    if found is None or "masks" not in found or len(found["masks"]) == 0:
        return pixels
    out = pixels.float()
    masks = found["masks"].detach().cpu().bool()
    if outline:  # the mask less its erosion by a 3 x 3 square
        inner = -torch.nn.functional.max_pool2d(-masks[None].float(), 3, 1, 1)[0]
        masks = masks & (inner < 0.5)
    for mask, label in zip(masks, found["labels"].tolist()):
        colour = torch.tensor(class_colour(int(label)), dtype=torch.float32)
        weight = 1.0 if outline else alpha
        out[mask] = out[mask] * (1 - weight) + colour * weight
    return out.round().clamp(0, 255).byte()


def draw_detections(
    images: torch.Tensor,
    targets: Sequence[dict[str, Any]] | None,
    predictions: Sequence[dict[str, torch.Tensor]] | None,
    class_names: Sequence[str] | None,
    path: str | Path,
    conf: float = 0.25,
    max_images: int = 16,
    min_side: int = 256,
    top_k: int | Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """A grid of ``images`` [B, 3, H, W] (in [0, 1]) with ground truth and predicted boxes.

    Each class has its colour (:func:`class_colour`); ground truth is drawn dashed, predictions
    solid with ``name score`` above the box (those scoring at least ``conf``; with ``top_k``,
    only that many of them per image, the highest-scoring: one number for all images or one per
    image). ``title`` is written above the grid (say there which predictions are drawn). Small
    images are upscaled by an integer factor to at least ``min_side`` pixels, boxes scaled with
    them. ``targets`` / ``predictions`` hold xyxy pixel boxes of the images as given; either
    may be None. With ``masks`` [K, H, W] (instance segmentation) predicted masks are filled in
    their class colour and ground truth masks outlined. Written atomically to ``path`` (PNG).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images has shape {shape}; expected [B, 3, H, W] in [0, 1]")
    n = min(len(images), max_images)
    for name, per_image in (("targets", targets), ("predictions", predictions)):
        if per_image is not None and len(per_image) < n:
            raise ValueError(f"{name} has {len(per_image)} entries for {n} images; give one each")
    per_image_k = [top_k] * n if top_k is None or isinstance(top_k, int) else list(top_k)
    if len(per_image_k) < n or any(
        k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0)
        for k in per_image_k
    ):
        raise ValueError(
            f"top_k={top_k!r} is not valid; expected None, an integer >= 0 or one per image"
        )
    h, w = images.shape[-2:]
    scale = max(1, math.ceil(min_side / max(h, w)))
    line = max(1, scale // 2)
    font = ImageFont.load_default(size=max(10, 2 * scale))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gap = 4
    width = cols * (w * scale + gap) + gap
    title_lines = _wrap(title, font, width - 2 * gap) if title else []
    line_height = font.getbbox("Ag")[3] + 2
    header = len(title_lines) * line_height + (gap if title_lines else 0)
    sheet = Image.new("RGB", (width, header + rows * (h * scale + gap) + gap), "white")
    for j, text in enumerate(title_lines):
        ImageDraw.Draw(sheet).text((gap, gap + j * line_height), text, fill=(0, 0, 0), font=font)

    def name_of(label: int) -> str:
        return (
            class_names[label]
            if class_names is not None and label < len(class_names)
            else str(label)
        )

    for i in range(n):
        pixels = (images[i].detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        pixels = _with_masks(pixels, targets[i] if targets is not None else None, outline=True)
        if predictions is not None and "masks" in predictions[i]:
            kept = predictions[i]["scores"] >= conf
            if per_image_k[i] is not None:
                top = predictions[i]["scores"][kept].argsort(descending=True)[: per_image_k[i]]
                kept = kept.nonzero().flatten()[top]
            shown_masks = {k: predictions[i][k][kept] for k in ("masks", "labels")}
            pixels = _with_masks(pixels, shown_masks, outline=False)
        tile = Image.fromarray(pixels.cpu().numpy()).resize((w * scale, h * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        if targets is not None:
            for box, label in zip(targets[i]["boxes"].tolist(), targets[i]["labels"].tolist()):
                box = [v * scale for v in box]
                _dashed_rectangle(draw, box, class_colour(label), line, dash=3 * scale)
        if predictions is not None:
            p = predictions[i]
            shown = (p["scores"] >= conf).nonzero().flatten()
            if per_image_k[i] is not None:
                order = p["scores"][shown].argsort(descending=True)
                shown = shown[order[: per_image_k[i]]]
            for box, score, label in zip(
                p["boxes"][shown].tolist(), p["scores"][shown].tolist(), p["labels"][shown].tolist()
            ):
                x1, y1, x2, y2 = (v * scale for v in box)
                colour = class_colour(label)
                draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
                # a young model's best boxes score under 0.01: "0.004", not "0.00"
                text = (
                    f"{name_of(label)} {score:.2f}"
                    if score >= 0.01
                    else f"{name_of(label)} {score:.1g}"
                )
                left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
                th = bottom - top
                y_text = y1 - th - 2 if y1 - th - 2 >= 0 else y1 + line
                draw.rectangle((x1, y_text, x1 + right - left + 2, y_text + th + 2), fill=colour)
                draw.text((x1 + 1, y_text + 1 - (top - y1)), text, fill=(0, 0, 0), font=font)
        r, c = divmod(i, cols)
        sheet.paste(tile, (gap + c * (w * scale + gap), header + gap + r * (h * scale + gap)))
    return write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"))
