"""YOLO training augmentation on letterboxed tensors: mosaic, random affine, HSV jitter.

Each function is pure: the random values are drawn by the caller
(:class:`~yolo_heads.data.DetectionDataset`, from its ``(seed, epoch, index)`` stream), so a
resumed run sees the same images as an uninterrupted one.

- :func:`mosaic` tiles four ``S x S`` canvases into one ``2S x 2S`` canvas (YOLOv4 / Ultralytics
  mosaic; the tiles here are the letterboxed images, so each keeps its own scale jitter).
- :func:`affine_window` maps a window of a canvas to an ``S x S`` output with a scale about the
  window centre and a translation (Ultralytics' ``scale`` / ``translate``; no rotation or shear,
  digits are not rotation-invariant). Boxes are mapped, clipped, and dropped when under
  ``min_box`` pixels or when less than ``min_area_ratio`` of them is left after clipping
  (Ultralytics' ``box_candidates`` rule, 0.1).
- :func:`hsv_jitter` rotates hue and scales saturation and value (PIL's HSV mode, 8 bit).

Example:
    >>> import torch
    >>> tiles = [torch.full((3, 32, 32), v) for v in (0.0, 0.25, 0.5, 1.0)]
    >>> boxes = [torch.tensor([[8.0, 8.0, 24.0, 24.0]]) for _ in range(4)]
    >>> labels = [torch.tensor([k]) for k in range(4)]
    >>> canvas, b, lab = mosaic(tiles, boxes, labels)
    >>> canvas.shape, b[3].tolist(), lab.tolist()
    (torch.Size([3, 64, 64]), [40.0, 40.0, 56.0, 56.0], [0, 1, 2, 3])
    >>> out, kept, keep = affine_window(canvas, b, (32.0, 32.0), 32, scale=1.0)
    >>> kept.tolist()  # the window [16, 48) keeps a quarter of every box
    [[0.0, 0.0, 8.0, 8.0], [24.0, 0.0, 32.0, 8.0], [0.0, 24.0, 8.0, 32.0], [24.0, 24.0, 32.0, 32.0]]
    >>> keep.tolist()
    [True, True, True, True]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["affine_window", "hsv_jitter", "mosaic"]


def mosaic(
    tiles: Sequence[torch.Tensor],
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four ``[3, S, S]`` canvases as one ``[3, 2S, 2S]`` (top-left, top-right, bottom-left,
    bottom-right), with their xyxy boxes moved along and concatenated."""
    if len(tiles) != 4 or len(boxes) != 4 or len(labels) != 4:
        raise ValueError(f"mosaic needs 4 tiles, boxes and labels; got {len(tiles)}")
    s = tiles[0].shape[-1]
    top = torch.cat((tiles[0], tiles[1]), dim=-1)
    bottom = torch.cat((tiles[2], tiles[3]), dim=-1)
    canvas = torch.cat((top, bottom), dim=-2)
    shifts = torch.tensor([[0, 0], [s, 0], [0, s], [s, s]], dtype=torch.float32)
    moved = [b.reshape(-1, 4) + shifts[k].repeat(2) for k, b in enumerate(boxes)]
    return canvas, torch.cat(moved), torch.cat([lab.reshape(-1) for lab in labels])


def affine_window(
    canvas: torch.Tensor,
    boxes: torch.Tensor,
    centre: tuple[float, float],
    size: int,
    scale: float = 1.0,
    translate: tuple[float, float] = (0.0, 0.0),
    fill: float = 114 / 255,
    min_box: float = 2.0,
    min_area_ratio: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``size x size`` output ``out = (canvas - centre) * scale + size / 2 + translate``
    (bilinear, ``fill`` outside the canvas), the mapped boxes that survive and their mask."""
    h, w = canvas.shape[-2:]
    cx, cy = centre
    tx, ty = translate
    # Output pixel centre (u, v) samples canvas point ((u - size/2 - tx) / scale + cx, ...).
    u = torch.arange(size, dtype=torch.float32) + 0.5
    src_x = (u - size / 2 - tx) / scale + cx
    src_y = (u - size / 2 - ty) / scale + cy
    # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the outer edges.
    gx = (src_x / w) * 2 - 1
    gy = (src_y / h) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    out = F.grid_sample(
        (canvas - fill)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    out = out + fill
    offset = torch.tensor([cx, cy, cx, cy])
    move = torch.tensor([size / 2 + tx, size / 2 + ty] * 2)
    mapped = (boxes.reshape(-1, 4) - offset) * scale + move
    clipped = mapped.clamp(0, size)
    wh = clipped[:, 2:] - clipped[:, :2]
    area = (mapped[:, 2:] - mapped[:, :2]).prod(-1).clamp(min=1e-9)
    keep = (wh >= min_box).all(-1) & (wh.prod(-1) / area > min_area_ratio)
    return out, clipped[keep], keep


def hsv_jitter(image: torch.Tensor, hue: float, saturation: float, value: float) -> torch.Tensor:
    """``image`` [3, H, W] in [0, 1] with its hue rotated by ``hue`` (a fraction of the colour
    circle) and its HSV saturation and value multiplied by ``saturation`` and ``value``.

    Through PIL's 8-bit HSV mode with one lookup table per channel, as Ultralytics does with
    OpenCV (so values are quantised to 1/255; torchvision's float ``adjust_hue`` costs 3x more
    than the whole rest of an item at 64 px).
    """
    pixels = (image.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    h, s, v = Image.fromarray(pixels).convert("HSV").split()
    x = np.arange(256)
    h = h.point(((x + round(hue * 256)) % 256).tolist())
    s = s.point(np.clip(np.round(x * saturation), 0, 255).astype(int).tolist())
    v = v.point(np.clip(np.round(x * value), 0, 255).astype(int).tolist())
    rgb = np.asarray(Image.merge("HSV", (h, s, v)).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
