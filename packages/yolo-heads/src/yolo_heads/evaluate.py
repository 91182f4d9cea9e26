"""COCO evaluation through pycocotools: AP, AP50, AP75, APs, APm, APl of boxes, and of masks
(``iou_type="segm"``; reported as ``mask_AP`` ...) for instance segmentation."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ._checks import check_path, coco_box_problem, renamed_kwargs
from .boxes import xyxy_to_xywh

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: the same metrics of masks (pycocotools' ``iouType="segm"``)
MASK_METRICS = tuple(f"mask_{name}" for name in METRICS)


def _check_detections(
    detections: list[Any], images: set[int], categories: set[int], ann_file: Path
) -> None:
    """Every detection, so that a bad one anywhere is named instead of scoring AP 0 silently
    (pycocotools takes NaN, unknown categories and negative sizes without a word)."""
    for i, det in enumerate(detections):
        if not isinstance(det, dict):
            raise ValueError(f"detections[{i}] is {type(det).__name__}, not a dict")
        missing = {"image_id", "category_id", "bbox", "score"} - set(det)
        if missing:
            raise ValueError(
                f"detections[{i}] lacks {sorted(missing)}; each detection needs image_id, "
                "category_id, bbox [x, y, w, h] and score"
            )
        if det["image_id"] not in images:
            raise ValueError(
                f"detections[{i}] has image_id={det['image_id']!r}, which is not in ann_file="
                f"{str(ann_file)!r}"
            )
        if det["category_id"] not in categories:
            raise ValueError(
                f"detections[{i}] has category_id={det['category_id']!r}; ann_file's categories "
                f"are {sorted(categories)}"
            )
        bbox = det["bbox"]
        try:
            values = [float(v) for v in bbox]
            score = float(det["score"])
        except (TypeError, ValueError):
            raise ValueError(
                f"detections[{i}] has bbox={bbox!r}, score={det['score']!r}; expected four "
                "numbers [x, y, w, h] and a number"
            ) from None
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"detections[{i}] has bbox={bbox!r}; expected four finite numbers")
        if values[2] < 0 or values[3] < 0:
            raise ValueError(
                f"detections[{i}] has bbox={bbox!r} with a negative width or height; COCO boxes "
                "are [x, y, width, height]"
            )
        if not math.isfinite(score):
            raise ValueError(
                f"detections[{i}] has score={det['score']!r}; expected a finite number"
            )


def _check_ground_truth(ann_file: Path) -> None:
    """The ground truth JSON is JSON and its boxes are boxes: pycocotools scores a negative or
    NaN size without a word (the same rule as :class:`~yolo_heads.data.CocoDetection`)."""
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"evaluate_coco: ann_file={str(ann_file)!r} is not valid JSON ({err})"
        ) from None
    annotations = data.get("annotations", []) if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise ValueError(
            f"evaluate_coco: ann_file={str(ann_file)!r} is not COCO ground truth (expected a dict "
            "with an 'annotations' list)"
        )
    for ann in annotations:
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        problem = coco_box_problem(bbox)
        if problem is not None:
            where = ann.get("id") if isinstance(ann, dict) else None
            raise ValueError(
                f"evaluate_coco: ann_file={str(ann_file)!r} annotation id={where} has "
                f"bbox={bbox!r}{problem}"
            )


def _read_detections(detections: Any) -> list[Any]:
    """A COCO results list, or the one read from the JSON file that ``detections`` names."""
    fn = "evaluate_coco"
    if isinstance(detections, (str, os.PathLike)):
        path = check_path("detections", detections, fn=fn)
        if not path.is_file():
            raise FileNotFoundError(f"{fn}: detections={str(detections)!r} is not a file")
        try:
            detections = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{fn}: detections={str(path)!r} is not valid JSON ({err})") from None
        what = f"the JSON in detections={str(path)!r}"
    else:
        what = None
    if not isinstance(detections, (list, tuple)):
        expected = "a list of COCO result dicts or the path of a JSON file of them"
        if what is not None:
            raise ValueError(f"{fn}: {what} is a {type(detections).__name__}; expected a list")
        raise TypeError(f"{fn}: detections={detections!r:.80} is not valid; expected {expected}")
    return list(detections)


def coco_evaluator(
    ann_file: str | Path,
    detections: Sequence[dict[str, Any]] | str | Path,
    verbose: bool = False,
    iou_type: str = "bbox",
) -> Any:
    """pycocotools' ``COCOeval`` of ``detections`` against ``ann_file``, after ``evaluate``,
    ``accumulate`` and ``summarize`` (``stats`` holds the metrics, ``eval["precision"]`` the
    precision-recall curves); ``None`` when there are no detections (pycocotools cannot score
    an empty result list).

    ``detections`` is a COCO results list (dicts with ``image_id``, ``category_id``, ``bbox``
    as [x, y, w, h] and ``score``) or the path of such a JSON file. ``iou_type="segm"`` scores
    their ``segmentation`` (COCO RLE) against the ground truth's instead of the boxes; the
    detections' areas are then their masks' (pycocotools' results format for masks).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type={iou_type!r} is not valid; expected 'bbox' or 'segm'")
    ann_file = check_path("ann_file", ann_file, fn="evaluate_coco")
    if not ann_file.is_file():
        raise FileNotFoundError(f"evaluate_coco: ann_file={str(ann_file)!r} does not exist")
    detections = _read_detections(detections)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    _check_ground_truth(ann_file)
    with quiet:
        gt = COCO(str(ann_file))
    _check_detections(detections, set(gt.getImgIds()), set(gt.getCatIds()), ann_file)
    if iou_type == "segm":
        _check_masks(gt, detections, ann_file)
    if not detections:
        return None
    if iou_type == "segm":
        results = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
    else:
        results = [dict(d, bbox=[float(v) for v in d["bbox"]]) for d in detections]
    with quiet:
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _check_masks(gt: Any, detections: list[Any], ann_file: Path) -> None:
    """Mask scoring needs a segmentation on every ground truth object and detection."""
    for ann in gt.dataset.get("annotations", []):
        if not ann.get("segmentation"):
            raise ValueError(
                f"evaluate_coco: ann_file={str(ann_file)!r} annotation id={ann.get('id')} has no "
                "segmentation; iou_type='segm' needs masks (polygons or RLE) on every object"
            )
    for i, det in enumerate(detections):
        if "segmentation" not in det:
            raise ValueError(
                f"detections[{i}] has no 'segmentation'; iou_type='segm' needs each "
                "detection's mask as COCO RLE (yolo_heads.masks.encode_rle)"
            )


def evaluate_coco(
    ann_file: str | Path,
    detections: Sequence[dict[str, Any]] | str | Path,
    verbose: bool = False,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """COCO box metrics of ``detections`` against the ground truth in ``ann_file``.

    Returns AP (IoU .50:.95), AP50, AP75 and APs/APm/APl as pycocotools computes them (see
    :func:`coco_evaluator`); an area range without ground truth reads -1 as in pycocotools.
    No detections give zeros. ``iou_type="segm"`` scores the detections' masks instead.

    >>> import json, tempfile, pathlib
    >>> gt = {"images": [{"id": 1, "width": 64, "height": 64}],
    ...       "categories": [{"id": 1, "name": "a"}],
    ...       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20],
    ...                        "area": 400, "iscrowd": 0}]}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gt.json"; _ = path.write_text(json.dumps(gt))
    >>> dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 1.0}]
    >>> round(evaluate_coco(path, dets)["AP"], 6)
    1.0
    """
    evaluator = coco_evaluator(ann_file, detections, verbose=verbose, iou_type=iou_type)
    if evaluator is None:
        return dict.fromkeys(METRICS, 0.0)
    return {name: float(evaluator.stats[i]) for i, name in enumerate(METRICS)}


def predictions_to_coco(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, Any]],
    label_to_category: Sequence[int],
) -> list[dict[str, Any]]:
    """Detector outputs on letterboxed images to COCO results on the original images.

    ``targets`` are the dataset's per-image dicts (``image_id`` and ``meta``). Predictions with
    ``masks`` [K, S, S] (a segmenter's) add each mask, on the original image, as COCO RLE.
    """
    from .data.letterbox import boxes_to_original
    from .masks import encode_rle, masks_to_original

    results = []
    for pred, target in zip(predictions, targets):
        boxes = pred["boxes"].detach().float().cpu()
        masks = pred["masks"].detach().cpu() if "masks" in pred else None
        if "meta" in target:
            boxes = boxes_to_original(boxes, target["meta"])
            if masks is not None:
                masks = masks_to_original(masks, target["meta"])
        for k, (box, score, label) in enumerate(
            zip(xyxy_to_xywh(boxes).tolist(), pred["scores"].tolist(), pred["labels"].tolist())
        ):
            results.append(
                {
                    "image_id": int(target["image_id"]),
                    "category_id": int(label_to_category[int(label)]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
            if masks is not None:
                results[-1]["segmentation"] = encode_rle(masks[k])
    return results


@torch.no_grad()
@renamed_kwargs(show_progress="progress")
def predict_dataset(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 16,
    conf: float = 0.001,
    iou: float = 0.65,
    max_det: int = 100,
    progress: bool = False,
    on_batch: Callable[[torch.Tensor, list, list], None] | None = None,
) -> list[dict[str, Any]]:
    """``model.predict`` over every image of ``dataset`` (no augmentation, eval mode), as COCO
    results on the original images; ``on_batch(images, targets, predictions)`` sees each batch."""
    from .data.base import collate

    if getattr(dataset, "augment", False):
        raise ValueError("dataset has augment=True; evaluate on a dataset built with augment=False")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    results: list[dict[str, Any]] = []
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not progress):
            preds = model.predict(images.to(device), conf=conf, iou=iou, max_det=max_det)
            results.extend(predictions_to_coco(preds, targets, dataset.label_to_category))
            if on_batch is not None:
                on_batch(images, targets, preds)
    finally:
        model.train(was_training)
    return results


@renamed_kwargs(show_progress="progress")
def evaluate_detector(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 16,
    conf: float = 0.001,
    iou: float = 0.65,
    max_det: int = 100,
    progress: bool = True,
) -> dict[str, float]:
    """Run ``model.predict`` over a dataset from :func:`yolo_heads.data.create_dataset` (no
    augmentation) and score it with :func:`evaluate_coco` on the dataset's ``ann_file``; a
    dataset built with ``masks=True`` (and a segmenter) adds the mask metrics ``mask_AP`` ...
    """
    detections = predict_dataset(model, dataset, batch_size, conf, iou, max_det, progress)
    metrics = evaluate_coco(dataset.ann_file, detections)
    if getattr(dataset, "with_masks", False):
        masks = evaluate_coco(dataset.ann_file, detections, iou_type="segm")
        metrics.update({f"mask_{name}": value for name, value in masks.items()})
    return metrics
