"""COCO-format detection dataset (JSON + image folder) with letterbox and light augmentation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .letterbox import LetterboxMeta, boxes_to_canvas, letterbox


class CocoDetection(Dataset):
    """Images and boxes from a COCO annotation file, letterboxed to ``image_size``.

    Each item is ``(image, target)``: ``image`` float [3, S, S] in [0, 1]; ``target`` holds
    ``boxes`` (xyxy pixels on the canvas), ``labels`` (contiguous 0..C-1, in the order of the
    file's categories), ``image_id`` and ``meta`` (:class:`LetterboxMeta`, to map predictions
    back). ``label_to_category`` maps labels back to COCO category ids.

    With ``augment=True``: random scale (``scale_range`` of the fitting size), random placement,
    horizontal flip with probability ``flip`` (off by default: digits are not symmetric) and
    brightness / contrast jitter. Boxes cut by the canvas are clipped; boxes left with a side
    under ``min_box`` pixels are dropped.

    Args:
        ann_file: COCO JSON path.
        image_dir: image folder (default: the JSON's folder, then ``<json stem>/`` and
            ``images/`` beside it).
        image_size: canvas side, a multiple of 32.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path | None = None,
        image_size: int = 96,
        augment: bool = False,
        scale_range: tuple[float, float] = (0.6, 1.0),
        flip: float = 0.0,
        min_box: float = 2.0,
        seed: int = 0,
    ) -> None:
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"ann_file={str(ann_file)!r} does not exist")
        if not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
            raise ValueError(
                f"image_size={image_size!r} is not valid; expected a positive multiple of 32"
            )
        data = json.loads(ann_file.read_text())
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(
                    f"ann_file={str(ann_file)!r} has no {key!r} list (not COCO format)"
                )
        if not data["images"]:
            raise ValueError(f"ann_file={str(ann_file)!r} lists no images; the dataset is empty")
        self.ann_file = ann_file
        self.image_dir = Path(image_dir) if image_dir is not None else ann_file.parent
        self.image_size, self.augment = image_size, augment
        self.scale_range, self.flip, self.min_box = scale_range, flip, min_box
        self.rng = random.Random(seed)
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.label_to_category = [c["id"] for c in self.categories]
        self.class_names = [c["name"] for c in self.categories]
        category_to_label = {c: i for i, c in enumerate(self.label_to_category)}
        self.annotations: dict[int, list[tuple[list[float], int]]] = {
            im["id"]: [] for im in self.images
        }
        # Checked here, once, so that a bad annotation fails before training starts.
        for ann in data["annotations"]:
            if ann.get("image_id") not in self.annotations:
                raise ValueError(
                    f"ann_file annotation id={ann.get('id')} names image_id="
                    f"{ann.get('image_id')!r}, which is not in the file's images"
                )
            if ann.get("category_id") not in category_to_label:
                raise ValueError(
                    f"ann_file annotation id={ann.get('id')} has category_id="
                    f"{ann.get('category_id')!r}; the file's categories are "
                    f"{self.label_to_category}"
                )
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(
                    f"ann_file annotation id={ann.get('id')} has bbox={bbox!r}; expected "
                    "[x, y, width, height]"
                )
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = bbox
            if w <= 0 or h <= 0:  # degenerate boxes carry no object: skipped
                continue
            self.annotations[ann["image_id"]].append(
                ([x, y, x + w, y + h], category_to_label[ann["category_id"]])
            )

    def __len__(self) -> int:
        return len(self.images)

    def _path(self, file_name: str) -> Path:
        bases = (self.image_dir, self.image_dir / self.ann_file.stem, self.image_dir / "images")
        for base in bases:
            if (base / file_name).is_file():
                return base / file_name
        raise FileNotFoundError(f"image {file_name!r} not found under {str(self.image_dir)!r}")

    def load(self, index: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The original image (uint8 [H, W, 3]), its xyxy boxes and labels."""
        info = self.images[index]
        image = np.asarray(Image.open(self._path(info["file_name"])).convert("RGB"))
        anns = self.annotations[info["id"]]
        boxes = torch.tensor([a[0] for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([a[1] for a in anns], dtype=torch.long)
        return image, boxes, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, boxes, labels = self.load(index)
        if self.augment:
            jitter = self.rng.uniform(*self.scale_range)
            offset = (self.rng.random(), self.rng.random())
        else:
            jitter, offset = 1.0, (0.5, 0.5)
        canvas, meta = letterbox(image, self.image_size, jitter, offset)
        # Boxes reaching past the image (common in COCO files) are clipped to it.
        h, w = meta.original_size
        boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))
        boxes = boxes_to_canvas(boxes, meta).clamp(0, self.image_size)
        tensor = torch.from_numpy(canvas.copy()).permute(2, 0, 1).float() / 255.0
        if self.augment:
            if self.rng.random() < self.flip:
                tensor = tensor.flip(-1)
                boxes = torch.stack(
                    (
                        self.image_size - boxes[:, 2],
                        boxes[:, 1],
                        self.image_size - boxes[:, 0],
                        boxes[:, 3],
                    ),
                    dim=1,
                )
            contrast = self.rng.uniform(0.75, 1.25)
            brightness = self.rng.uniform(-0.1, 0.1)
            tensor = ((tensor - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box) & (
            (boxes[:, 3] - boxes[:, 1]) >= self.min_box
        )
        target = {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "image_id": self.images[index]["id"],
            "meta": meta,
        }
        return tensor, target


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]):
    """Stack images; keep targets as a list of per-image dicts (for a DataLoader)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


__all__ = ["CocoDetection", "LetterboxMeta", "collate"]
