"""Instance masks from prototypes: assemble, crop to the box, resample, encode for COCO.

An object's mask logits are its coefficients times the prototypes (YOLACT): ``c @ P`` with
``c`` [M] and ``P`` [M, h, w]. Masks are cut to the object's box, so a prototype only has to
separate the object from what else lies in its box.

    >>> protos = torch.zeros(2, 4, 4); protos[0] = 10.0
    >>> masks = masks_for_boxes(torch.tensor([[1.0, 0.0]]), protos,
    ...                         torch.tensor([[0.0, 0.0, 8.0, 8.0]]), (16, 16))
    >>> masks.shape, int(masks.sum())
    (torch.Size([1, 16, 16]), 64)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "assemble_masks",
    "crop_masks",
    "encode_rle",
    "masks_for_boxes",
    "masks_to_original",
    "resample_masks",
]


def assemble_masks(coefficients: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Mask logits ``[N, h, w]`` of ``coefficients`` [N, M] over ``prototypes`` [M, h, w]."""
    m, h, w = prototypes.shape
    return (coefficients @ prototypes.reshape(m, h * w)).reshape(-1, h, w)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``masks`` [N, h, w] with everything outside each xyxy box (mask pixels) set to zero.

    A pixel belongs to the box when its centre lies inside it.

    >>> crop_masks(torch.ones(1, 4, 4), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))[0].int().tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    _, h, w = masks.shape
    x1, y1, x2, y2 = boxes.to(masks.dtype)[:, :, None, None].unbind(1)
    cols = torch.arange(w, device=masks.device, dtype=masks.dtype).view(1, 1, -1) + 0.5
    rows = torch.arange(h, device=masks.device, dtype=masks.dtype).view(1, -1, 1) + 0.5
    inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    return masks * inside


def resample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary or soft masks [N, H, W] to ``size`` (h, w) as float coverage: area averaging when
    shrinking (a pixel's value is the fraction of it the object covers), bilinear otherwise."""
    masks = masks.float()
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *size)
    shrink = masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1]
    mode = "area" if shrink else "bilinear"
    kwargs: dict[str, Any] = {} if shrink else {"align_corners": False}
    return F.interpolate(masks[None], size=size, mode=mode, **kwargs)[0]


def masks_for_boxes(
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    boxes: torch.Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """Bool masks ``[N, H, W]`` of the input image for detections with ``coefficients`` [N, M]
    and xyxy ``boxes`` (input pixels): logits up-sampled bilinearly to the image, cropped to the
    box, ``sigmoid > threshold``."""
    h, w = image_size
    if len(coefficients) == 0:
        return torch.zeros(0, h, w, dtype=torch.bool, device=prototypes.device)
    logits = assemble_masks(coefficients.to(prototypes.dtype), prototypes)
    logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    masks = logits.sigmoid() > threshold
    return crop_masks(masks.float(), boxes).bool()


def masks_to_original(masks: torch.Tensor, meta: Any) -> torch.Tensor:
    """Masks [N, S, S] on a letterboxed canvas to the original image [N, H, W] (bool): the
    image's region of the canvas, resized back (bilinear, ``> 0.5``)."""
    h, w = meta.original_size
    top, left = int(meta.pad_y), int(meta.pad_x)
    new_h, new_w = max(1, round(h * meta.scale)), max(1, round(w * meta.scale))
    region = masks[:, top : top + new_h, left : left + new_w].float()
    if len(region) == 0:
        return torch.zeros(0, h, w, dtype=torch.bool)
    resized = F.interpolate(region[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return resized > 0.5


def encode_rle(mask: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """One bool mask [H, W] as COCO's compressed RLE (``counts`` a str, JSON-ready), through
    ``pycocotools.mask.encode``."""
    from pycocotools import mask as mask_utils

    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
