"""Letterbox resize: keep the aspect ratio, pad to a square, and map boxes both ways."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class LetterboxMeta:
    """How an image was placed on the canvas: ``canvas = original * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: float
    pad_y: float
    original_size: tuple[int, int]  # (height, width)


def letterbox(
    image: np.ndarray,
    size: int,
    scale_jitter: float = 1.0,
    offset: tuple[float, float] = (0.5, 0.5),
    fill: int = 114,
) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize ``image`` [H, W, 3] uint8 to fit a ``size`` x ``size`` canvas filled with ``fill``.

    ``scale_jitter`` multiplies the fitting scale (<= 1 shrinks; augmentation) and ``offset``
    places the image in the free space (0.5, 0.5 centres it).

    >>> canvas, meta = letterbox(np.zeros((50, 100, 3), np.uint8), 64)
    >>> canvas.shape, meta.scale, meta.pad_y
    ((64, 64, 3), 0.64, 16.0)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} is not valid; expected a positive integer (pixels)")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or 0 in image.shape[:2]:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image has shape {shape}; expected a non-empty [H, W, 3] array")
    h, w = image.shape[:2]
    scale = min(size / h, size / w) * min(scale_jitter, 1.0)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    pad_x = float(int((size - new_w) * offset[0]))
    pad_y = float(int((size - new_h) * offset[1]))
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    canvas[int(pad_y) : int(pad_y) + new_h, int(pad_x) : int(pad_x) + new_w] = resized
    return canvas, LetterboxMeta(scale, pad_x, pad_y, (h, w))


def boxes_to_canvas(boxes: torch.Tensor, meta: LetterboxMeta) -> torch.Tensor:
    """xyxy boxes of the original image to the letterboxed canvas."""
    pad = torch.tensor([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], dtype=boxes.dtype)
    return boxes * meta.scale + pad.to(boxes.device)


def boxes_to_original(boxes: torch.Tensor, meta: LetterboxMeta) -> torch.Tensor:
    """xyxy boxes on the letterboxed canvas back to the original image, clipped to it."""
    pad = torch.tensor([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], dtype=boxes.dtype)
    out = (boxes - pad.to(boxes.device)) / meta.scale
    h, w = meta.original_size
    limits = torch.tensor([w, h, w, h], dtype=out.dtype, device=out.device)
    return torch.minimum(out.clamp(min=0), limits)
