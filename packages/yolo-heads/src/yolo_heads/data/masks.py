"""Instance masks through the data pipeline: decode, letterbox, flip, mosaic, affine window.

A record's ``segments`` keep each object's outline as its file gives it, in the original
image's pixels: a COCO segmentation (a list of polygons ``[x1, y1, x2, y2, ...]`` or an RLE
dict, compressed or not) for each box; YOLO-seg polygons are turned into the first kind when
read. :func:`rasterize` decodes them with ``pycocotools.mask`` on the image's size; the other
functions move the masks exactly as :mod:`yolo_heads.data.letterbox` and
:mod:`yolo_heads.data.augment` move the image, so a mask stays on its object.

    >>> masks = rasterize([[[1, 1, 5, 1, 5, 5, 1, 5]]], 8, 8)
    >>> masks.shape, int(masks.sum())
    ((1, 8, 8), 16)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .augment import affine_window
from .letterbox import LetterboxMeta

__all__ = ["affine_masks", "masks_to_canvas", "mosaic_masks", "rasterize", "segment_problem"]


def segment_problem(segmentation: Any) -> str | None:
    """Why ``segmentation`` is not a COCO segmentation (None when it is one)."""
    if isinstance(segmentation, dict):
        if "counts" in segmentation and "size" in segmentation:
            return None
        return " (an RLE needs 'counts' and 'size')"
    if isinstance(segmentation, list) and segmentation:
        for polygon in segmentation:
            if not isinstance(polygon, (list, tuple)) or len(polygon) < 6 or len(polygon) % 2:
                return " (each polygon is a list of at least 3 x, y pairs)"
        return None
    return " (expected a list of polygons [[x1, y1, x2, y2, ...]] or an RLE dict)"


def rasterize(segments: Sequence[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations (one per object) as uint8 masks ``[N, height, width]``."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(segments), height, width), np.uint8)
    for i, segmentation in enumerate(segments):
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
        elif isinstance(segmentation, dict):
            counts = segmentation["counts"]
            rle = {"size": segmentation["size"], "counts": counts}
            if isinstance(counts, str):
                rle["counts"] = counts.encode("ascii")
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(list(segmentation), height, width))
        masks[i] = mask_utils.decode(rle)
    return masks


def masks_to_canvas(masks: np.ndarray, meta: LetterboxMeta, size: int) -> torch.Tensor:
    """Original-image masks [N, H, W] placed as :func:`~yolo_heads.data.letterbox` placed the
    image: resized by ``meta.scale`` (bilinear, ``> 0.5``) onto a ``size`` square, uint8."""
    h, w = meta.original_size
    new_w, new_h = max(1, round(w * meta.scale)), max(1, round(h * meta.scale))
    canvas = torch.zeros(len(masks), size, size, dtype=torch.uint8)
    if len(masks):
        resized = F.interpolate(
            torch.from_numpy(masks).float()[None], size=(new_h, new_w), mode="bilinear",
            align_corners=False,
        )[0]  # fmt: skip
        top, left = int(meta.pad_y), int(meta.pad_x)
        canvas[:, top : top + new_h, left : left + new_w] = (resized > 0.5).to(torch.uint8)
    return canvas


def mosaic_masks(masks: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """The masks of four ``size`` tiles on their :func:`~yolo_heads.data.augment.mosaic`
    canvas (top-left, top-right, bottom-left, bottom-right), concatenated."""
    placed = []
    for k, tile in enumerate(masks):
        full = torch.zeros(len(tile), 2 * size, 2 * size, dtype=torch.uint8)
        y, x = (k // 2) * size, (k % 2) * size
        full[:, y : y + size, x : x + size] = tile
        placed.append(full)
    return torch.cat(placed)


def affine_masks(
    masks: torch.Tensor,
    centre: tuple[float, float],
    size: int,
    scale: float = 1.0,
    translate: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """Masks through the same window as :func:`~yolo_heads.data.augment.affine_window`
    (bilinear, ``> 0.5``), uint8 ``[N, size, size]``."""
    if len(masks) == 0:
        return torch.zeros(0, size, size, dtype=torch.uint8)
    out, _, _ = affine_window(
        masks.float(), torch.zeros(0, 4), centre, size, scale, translate, fill=0.0
    )
    return (out > 0.5).to(torch.uint8)
