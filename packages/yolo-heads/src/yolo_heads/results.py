"""A run folder's record: ``results.csv``, validation with pycocotools, and the plots.

``results.csv`` has one row per epoch (``epoch``, each loss part, ``AP`` ... ``APl``, for
instance segmentation also ``mask_AP`` ... ``mask_APl``, ``lr``, ``seconds``); it is rewritten
whole, atomically, after every epoch. With plots on, the folder also gets ``results.png`` (loss
and metric curves), ``pr_curve.png`` (precision-recall at IoU 0.5 per class) and
``val_predictions.png`` (validation images with ground truth and predictions) from the latest
validation.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._files import write_text_atomic
from .evaluate import MASK_METRICS, METRICS, predict_dataset

__all__ = ["Evaluation", "Results", "csv_columns"]


VAL_PREDICTIONS_TITLE = (
    "solid: each image's N highest-scoring predictions at any score (N = its objects, at "
    "least 1), with their scores; dashed: ground truth"
)


def csv_columns(history: list[dict[str, float]]) -> list[str]:
    """``results.csv``'s header: ``epoch``, the loss parts (every other key, in the order the
    rows first name them), every COCO box metric (empty until an epoch is validated), the mask
    metrics when a row has one (instance segmentation), ``lr``, ``seconds``.

    The order does not depend on which epochs were validated (``val_interval``), so files of
    two runs line up.

    >>> csv_columns([{"epoch": 1, "loss": 2.0, "box": 1.0, "lr": 0.1, "seconds": 3.0}])
    ['epoch', 'loss', 'box', 'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'lr', 'seconds']
    """
    seen: list[str] = []
    for row in history:
        seen.extend(k for k in row if k not in seen)
    tail = ("lr", "seconds")
    masks = [k for k in seen if k.startswith("mask_")]  # mask_AP ... mask_APl, in their order
    fixed = {"epoch", *METRICS, *masks, *tail}
    losses = [k for k in seen if k not in fixed]
    return ["epoch", *losses, *METRICS, *masks, *tail]


@dataclass
class Evaluation:
    """One validation: the COCO metrics, pycocotools' evaluator and a few drawn examples."""

    metrics: dict[str, float]
    evaluator: Any = None
    examples: dict[str, list[Any]] = field(default_factory=dict)


class Results:
    """Writes a run folder's record; ``folder=None`` validates but writes nothing."""

    def __init__(self, folder: str | Path | None, examples: int = 8) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.num_examples = examples

    def validate(self, model: torch.nn.Module, dataset, batch_size: int = 16) -> Evaluation:
        """Predict on every image of ``dataset`` (conf 0.001, as COCO scoring expects)."""
        from .evaluate import coco_evaluator

        self.class_names = list(getattr(dataset, "class_names", []) or []) or None
        examples: dict[str, list[Any]] = {"images": [], "targets": [], "predictions": []}

        def keep_examples(images, targets, preds) -> None:
            room = self.num_examples - len(examples["images"])
            if room > 0:
                examples["images"].extend(images[:room])
                examples["targets"].extend(targets[:room])
                examples["predictions"].extend(
                    {k: v.cpu() for k, v in p.items()} for p in preds[:room]
                )

        detections = predict_dataset(model, dataset, batch_size, on_batch=keep_examples)
        evaluator = coco_evaluator(dataset.ann_file, detections)
        if evaluator is None:  # no detections at all
            metrics = dict.fromkeys(METRICS, 0.0)
        else:
            metrics = {name: float(evaluator.stats[i]) for i, name in enumerate(METRICS)}
        if getattr(dataset, "with_masks", False):  # instance segmentation: masks scored too
            masks = coco_evaluator(dataset.ann_file, detections, iou_type="segm")
            stats = masks.stats if masks is not None else [0.0] * len(MASK_METRICS)
            metrics.update({name: float(stats[i]) for i, name in enumerate(MASK_METRICS)})
        return Evaluation(metrics, evaluator, examples)

    def write(
        self, history: list[dict[str, float]], evaluation: Evaluation | None, plots: bool = True
    ) -> None:
        if self.folder is None:
            return
        columns = csv_columns(history)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
        csv_path = write_text_atomic(self.folder / "results.csv", buffer.getvalue())
        if not plots:
            return
        from . import plots as plotting

        plotting.plot_results(csv_path, self.folder / "results.png")
        if evaluation is None or evaluation.evaluator is None:
            return
        names = getattr(self, "class_names", None)
        plotting.plot_pr_curve(evaluation.evaluator, names, self.folder / "pr_curve.png")
        ex = evaluation.examples
        if ex.get("images"):
            # No fixed threshold: a young model scores every box under 0.25 and the picture
            # would be empty. Each image shows as many of its highest-scoring boxes as it has
            # objects (at least one), whatever their score, which the labels print.
            plotting.draw_detections(
                torch.stack(ex["images"]),
                ex["targets"],
                ex["predictions"],
                names,
                self.folder / "val_predictions.png",
                conf=0.0,
                top_k=[max(1, len(t["labels"])) for t in ex["targets"]],
                title=VAL_PREDICTIONS_TITLE,
            )
