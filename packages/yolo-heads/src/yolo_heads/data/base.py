"""The one dataset interface: letterbox, augmentation and items; subclasses only read files.

A subclass fills ``records`` (one :class:`ImageRecord` per image: id, file and boxes in the
original image's pixels), ``class_names``, ``label_to_category`` and ``ann_file`` (a COCO
ground-truth JSON for pycocotools). Everything that turns a record into a training item lives
here, so the COCO and YOLO layouts give the same tensors for the same images and boxes.

Augmentation is stateless: the draws for item ``index`` come from a generator seeded by
``(seed, epoch, index)`` alone, so DataLoader workers, a resumed run and a straight run see the
same images. Call :meth:`DetectionDataset.set_epoch` before iterating an epoch (the trainer
does); with ``persistent_workers=True`` the workers keep the epoch their copy had.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .augment import affine_window, hsv_jitter, mosaic
from .letterbox import boxes_to_canvas, letterbox
from .masks import affine_masks, masks_to_canvas, mosaic_masks, rasterize


@dataclass(frozen=True)
class ImageRecord:
    """One image: its COCO ``image_id``, file, xyxy ``boxes`` [N, 4] (original pixels, float32)
    and contiguous ``labels`` [N] (int64); ``segments``: each box's COCO segmentation (polygons
    or RLE, original pixels; see :mod:`yolo_heads.data.masks`), None when the file has none."""

    image_id: int
    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    segments: tuple | None = None


SKIP_HINT = (
    "set data.skip_bad_images=true (Python: create_dataset(..., skip_bad_images=True)) to leave "
    "such training images out"
)


class BadImageError(ValueError):
    """An image file of the dataset that cannot be decoded; ``.path`` names it (a
    ``ValueError``, so that the command line prints it as one line)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        # one positional argument: DataLoader workers re-raise it as ``type(err)(text)``
        super().__init__(message)
        self.path = None if path is None else Path(path)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3]; :class:`BadImageError` naming it when PIL cannot
    decode it (truncated, not an image, ...)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    # PIL reports a damaged file as UnidentifiedImageError, OSError ("image file is
    # truncated"), SyntaxError or ValueError from its decoders, DecompressionBombError
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        raise BadImageError(
            f"image {str(path)!r} cannot be read ({reason}); {SKIP_HINT}", path
        ) from None


def _check_image_size(image_size: Any) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(
            f"image_size={image_size!r} is not valid; expected a positive multiple of 32"
        )
    if image_size % 32:
        raise ValueError(
            f"image_size={image_size!r} is not valid; expected a positive multiple of 32"
        )


class DetectionDataset(Dataset):
    """Letterboxed ``(image, target)`` items from :class:`ImageRecord` s (see the module doc).

    ``image`` is float [3, S, S] in [0, 1]; ``target`` holds ``boxes`` (xyxy pixels on the
    canvas), ``labels`` (0..C-1), ``image_id`` and ``meta`` (:class:`LetterboxMeta`, to map
    predictions back to the original image).

    With ``augment=True``: random scale (``scale_range`` of the fitting size), random placement,
    horizontal flip with probability ``flip`` (off by default: digits are not symmetric) and
    brightness / contrast jitter. Boxes cut by the canvas are clipped; boxes left with a side
    under ``min_box`` pixels are dropped. Then, each off by default (see
    :mod:`yolo_heads.data.augment`):

    - ``mosaic``: the probability of tiling the item with three other random items (each placed
      as above) and taking an ``S x S`` window around a random point of the middle half;
      ``mosaic_epochs`` (None: all) is the number of epochs it is on for (Ultralytics closes
      mosaic for the last 10).
    - ``translate``, ``affine_scale``: a random affine map, translation up to ``translate * S``
      per axis and scale in ``1 +- affine_scale`` (Ultralytics' ``translate`` / ``scale``).
    - ``hsv``: ``(h, s, v)`` gains: hue shifted by up to ``h`` of the colour circle, saturation
      and value scaled by ``1 +- s`` and ``1 +- v`` (Ultralytics' 0.015, 0.7, 0.4).

    ``masks=True`` (instance segmentation) adds ``masks`` to the target: uint8 [N, S, S], one
    per box, on the canvas, moved by the letterbox and every augmentation as the image is.
    """

    records: list[ImageRecord]
    class_names: list[str]
    label_to_category: list[int]
    ann_file: Path

    def __init__(
        self,
        image_size: int = 96,
        augment: bool = False,
        scale_range: tuple[float, float] = (0.6, 1.0),
        flip: float = 0.0,
        min_box: float = 2.0,
        seed: int = 0,
        *,
        mosaic: float = 0.0,
        mosaic_epochs: int | None = None,
        translate: float = 0.0,
        affine_scale: float = 0.0,
        hsv: tuple[float, float, float] = (0.0, 0.0, 0.0),
        masks: bool = False,
    ) -> None:
        _check_image_size(image_size)
        #: targets carry ``masks`` (instance segmentation)
        self.with_masks = bool(masks)
        for name, value, top in (
            ("mosaic", mosaic, 1.0),
            ("translate", translate, 0.5),
            ("affine_scale", affine_scale, 0.9),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{name}={value!r} is not valid; expected a number in [0, {top}]")
        if mosaic_epochs is not None and (isinstance(mosaic_epochs, bool) or mosaic_epochs < 0):
            raise ValueError(
                f"mosaic_epochs={mosaic_epochs!r} is not valid; expected None or an integer >= 0"
            )
        hsv = tuple(float(v) for v in hsv)
        if len(hsv) != 3 or not (0 <= hsv[0] <= 0.5 and 0 <= hsv[1] <= 1 and 0 <= hsv[2] <= 1):
            raise ValueError(
                f"hsv={hsv!r} is not valid; expected (h, s, v) gains with h in [0, 0.5] and s, v "
                "in [0, 1]"
            )
        self.mosaic, self.mosaic_epochs = float(mosaic), mosaic_epochs
        self.translate, self.affine_scale, self.hsv = float(translate), float(affine_scale), hsv
        lo, hi = scale_range
        if not (0 < lo <= hi <= 1):
            raise ValueError(
                f"scale_range={tuple(scale_range)!r} is not valid; expected (low, high) with "
                "0 < low <= high <= 1"
            )
        if not (0 <= flip <= 1):
            raise ValueError(f"flip={flip!r} is not valid; expected a probability in [0, 1]")
        self.image_size, self.augment = image_size, augment
        self.scale_range, self.flip, self.min_box = (float(lo), float(hi)), flip, min_box
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Key the augmentation draws of every item by ``epoch`` (with the seed and index)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> np.random.Generator:
        """The random stream of item ``index`` in the current epoch, the same in every process."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.records)

    def cache_images(self) -> DetectionDataset:
        """Decode every image once and keep it in memory (``data.cache`` in a run config):
        small images otherwise cost more to decode each epoch than to train on. Returns self."""
        self._images = [self._decode(i) for i in range(len(self.records))]
        return self

    def _decode(self, index: int) -> np.ndarray:
        record = self.records[index]
        if not record.path.is_file():
            raise FileNotFoundError(
                f"image {str(record.path)!r} (image_id {record.image_id}) is missing"
            )
        return read_image(record.path)

    def drop_bad_images(self) -> DetectionDataset:
        """Decode every image once and leave out those that cannot be read (missing, truncated,
        not an image), with one warning that says how many and names the first (dict-init's
        ``skip_bad_images``). Without it, an unreadable image fails when it is loaded, named.
        Returns self."""
        import warnings

        keep, bad = [], []
        for index, record in enumerate(self.records):
            try:
                self._decode(index)
            except (BadImageError, FileNotFoundError):
                bad.append(str(record.path))
            else:
                keep.append(record)
        if bad:
            warnings.warn(
                f"{len(bad)} unreadable image(s) of {len(self.records)} skipped, first: {bad[0]}",
                stacklevel=2,
            )
        if not keep:
            raise ValueError(f"every one of the {len(bad)} images is unreadable (first: {bad[0]})")
        self.records = keep
        return self

    def load(self, index: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The original image (uint8 [H, W, 3]), its xyxy boxes (pixels) and labels."""
        record = self.records[index]
        cached = getattr(self, "_images", None)
        image = cached[index] if cached is not None else self._decode(index)
        return image, torch.from_numpy(record.boxes.copy()), torch.from_numpy(record.labels.copy())

    def load_masks(self, index: int, height: int, width: int) -> np.ndarray:
        """Item ``index``'s masks on its original image, uint8 [N, height, width]."""
        record = self.records[index]
        if record.segments is None:
            raise ValueError(
                f"image {str(record.path)!r} has no masks in the dataset; instance segmentation "
                "needs COCO 'segmentation' (polygons or RLE) or YOLO-seg polygon labels"
            )
        return rasterize(record.segments, height, width)

    def _placed(
        self, index: int, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any, torch.Tensor | None]:
        """Item ``index`` letterboxed (with the scale, placement, flip and contrast draws from
        ``rng`` when augmenting): the image tensor, boxes, labels (before ``min_box``), meta and
        masks (None without ``masks=True``)."""
        image, boxes, labels = self.load(index)
        if rng is not None:
            # Every draw is made, used or not, so each one keeps its place in the stream.
            jitter = rng.uniform(*self.scale_range)
            offset = (float(rng.random()), float(rng.random()))
            do_flip = rng.random() < self.flip
            contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1)
        else:
            jitter, offset = 1.0, (0.5, 0.5)
        canvas, meta = letterbox(image, self.image_size, float(jitter), offset)
        # Boxes reaching past the image (common in COCO files) are clipped to it.
        h, w = meta.original_size
        boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))
        boxes = boxes_to_canvas(boxes, meta).clamp(0, self.image_size)
        tensor = torch.from_numpy(canvas.copy()).permute(2, 0, 1).float() / 255.0
        masks = None
        if self.with_masks:
            masks = masks_to_canvas(self.load_masks(index, h, w), meta, self.image_size)
        if rng is not None:
            if do_flip:
                tensor = tensor.flip(-1)
                masks = masks.flip(-1) if masks is not None else None
                s = self.image_size
                boxes = torch.stack((s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]), 1)
            tensor = ((tensor - 0.5) * float(contrast) + 0.5 + float(brightness)).clamp(0, 1)
        return tensor, boxes, labels, meta, masks

    def _mosaic_on(self) -> bool:
        return self.mosaic > 0 and (self.mosaic_epochs is None or self.epoch < self.mosaic_epochs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        rng = self.generator(index) if self.augment else None
        tensor, boxes, labels, meta, masks = self._placed(index, rng)
        keep_min = self.min_box
        if rng is not None and (self._mosaic_on() or self.translate or self.affine_scale):
            # Drawn after the placement draws above (whose stream positions stay as they were).
            s = self.image_size
            use_mosaic = self._mosaic_on() and rng.random() < self.mosaic
            if use_mosaic:
                others = [int(k) for k in rng.integers(0, len(self), size=3)]
                placed = [
                    self._placed(k, np.random.default_rng([self.seed, self.epoch, index, j, k]))
                    for j, k in enumerate(others)
                ]
                parts = [(tensor, boxes, labels)] + [p[:3] for p in placed]
                canvas, boxes, labels = mosaic(*zip(*parts))
                if masks is not None:
                    masks = mosaic_masks([masks] + [p[4] for p in placed], s)
                centre = tuple(float(v) for v in rng.uniform(0.5 * s, 1.5 * s, size=2))
            else:
                canvas, centre = tensor, (s / 2, s / 2)
            scale = 1 + float(rng.uniform(-self.affine_scale, self.affine_scale))
            shift = rng.uniform(-self.translate, self.translate, size=2) * s
            tensor, boxes, keep = affine_window(
                canvas, boxes, centre, s, scale, (float(shift[0]), float(shift[1])),
                min_box=self.min_box,
            )  # fmt: skip
            labels = labels[keep]
            if masks is not None:
                offset = (float(shift[0]), float(shift[1]))
                masks = affine_masks(masks[keep], centre, s, scale, offset)
        if rng is not None and any(self.hsv):
            h, sat, v = self.hsv
            gains = rng.uniform(-1, 1, size=3) * np.array([h, sat, v])
            tensor = hsv_jitter(tensor, float(gains[0]), 1 + float(gains[1]), 1 + float(gains[2]))
        keep = ((boxes[:, 2] - boxes[:, 0]) >= keep_min) & ((boxes[:, 3] - boxes[:, 1]) >= keep_min)
        target = {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "image_id": self.records[index].image_id,
            "meta": meta,
        }
        if masks is not None:
            target["masks"] = masks[keep]
        return tensor, target


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]):
    """Stack images; keep targets as a list of per-image dicts (for a DataLoader)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
