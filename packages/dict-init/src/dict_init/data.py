"""Image and text sources for feature extraction: a folder, a COCO JSON, or any iterable.

Every source yields ``(index, item)`` pairs: the item's position in the dataset and an image
tensor ``[3, H, W]`` (float in ``[0, 1]``, resized to the encoder's size) or a text. Sources with
a known length are split over torch.distributed ranks in contiguous blocks, so the ranks' rows,
concatenated in rank order, are exactly the rows of one process; plain iterators (unknown
length) are dealt round-robin instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._validation import bad_value

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
SKIP_HINT = "pass skip_bad_images=True (command line: --skip-bad-images) to leave such files out"


class BadImageError(ValueError):
    """An image file of the dataset that is missing or cannot be decoded; ``.path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"data: {self.path} {reason}; {SKIP_HINT}")


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """An image file as ``[3, H, W]`` float in ``[0, 1]``, resized (bilinear) to ``size``.

    Raises:
        BadImageError: the file is missing or is not a readable image.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise BadImageError(path, "is missing") from None
    # PIL reports a damaged file in many ways: UnidentifiedImageError, OSError ("image file is
    # truncated"), SyntaxError and ValueError from its decoders, DecompressionBombError
    except Exception as error:
        raise BadImageError(
            path, f"is not a readable image ({type(error).__name__}: {error})"
        ) from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def to_image(item: Any, size: tuple[int, int]) -> torch.Tensor:
    """A tensor / array / PIL image as ``[3, H, W]`` float in ``[0, 1]`` at ``size``."""
    if isinstance(item, (tuple, list)) and item:  # (image, target) pairs from datasets
        item = item[0]
    if isinstance(item, Image.Image):
        item = torch.from_numpy(np.asarray(item.convert("RGB"), dtype=np.uint8).copy())
        item = item.permute(2, 0, 1)
    elif isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise bad_value("data item", type(item).__name__, "an image tensor [3, H, W] or [H, W]")
    if item.dtype == torch.uint8:
        item = item.float() / 255.0
    item = item.float()
    if item.ndim == 2:
        item = item.unsqueeze(0)
    if item.ndim != 3 or item.shape[0] not in (1, 3):
        raise bad_value("data item.shape", tuple(item.shape), "[3, H, W], [1, H, W] or [H, W]")
    if item.shape[0] == 1:
        item = item.expand(3, -1, -1)
    if tuple(item.shape[1:]) != size:
        item = F.interpolate(item[None], size=size, mode="bilinear", align_corners=False)[0]
    return item


class ImageFolder:
    """Every image file under ``root`` (recursively, sorted by path)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.files = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        return load_image(self.files[index], size)

    def describe(self) -> str:
        return f"image folder {self.root} ({len(self)} images)"


class CocoImages:
    """The images listed in a COCO-format JSON (``images[*].file_name``).

    Files are looked up under ``image_root`` (default: the JSON's folder, then its
    ``images/`` subfolder).
    """

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None):
        self.path = Path(path)
        data = json.loads(self.path.read_text())
        if "images" not in data:
            raise bad_value("data", str(path), "a COCO JSON with an 'images' list")
        names = [entry["file_name"] for entry in data["images"]]
        roots = (
            [Path(image_root)] if image_root else [self.path.parent, self.path.parent / "images"]
        )
        root = next((r for r in roots if names and (r / names[0]).is_file()), roots[0])
        self.files = [root / name for name in names]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        if not self.files[index].is_file():
            raise BadImageError(self.files[index], f"is listed in {self.path} but missing")
        return load_image(self.files[index], size)

    def describe(self) -> str:
        return f"COCO json {self.path} ({len(self)} images)"


class ItemSequence:
    """A sequence (list, map-style dataset) of image tensors, arrays, PIL images or texts."""

    def __init__(self, items: Sequence[Any], name: str = "sequence") -> None:
        self.items = items
        self.name = name

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, size: tuple[int, int] | None) -> Any:
        item = self.items[index]
        return item if size is None else to_image(item, size)

    def describe(self) -> str:
        return f"{self.name} of {len(self)} items"


def as_dataset(data: Any) -> Any:
    """A folder path, a COCO JSON path, a sequence, or an iterable (returned as is)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return ImageFolder(path)
        if path.is_file() and path.suffix == ".json":
            return CocoImages(path)
        raise bad_value("data", str(data), "an image folder, a COCO .json file or an iterable")
    if isinstance(data, (ImageFolder, CocoImages, ItemSequence)):
        return data
    if isinstance(data, torch.Tensor):
        if data.ndim == 4:  # a batch of images [N, 3, H, W]
            return ItemSequence(list(data), "tensor batch")
        raise bad_value("data.shape", tuple(data.shape), "[N, 3, H, W] for a tensor of images")
    if isinstance(data, Sequence) or (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        return ItemSequence(data, type(data).__name__)
    if isinstance(data, Iterable):
        return data
    raise bad_value("data", type(data).__name__, "an image folder, a COCO .json or an iterable")


def describe(data: Any) -> str:
    dataset = as_dataset(data)
    return dataset.describe() if hasattr(dataset, "describe") else type(data).__name__


def iter_items(
    data: Any,
    size: tuple[int, int] | None,
    rank: int = 0,
    world: int = 1,
    skipped: list[str] | None = None,
) -> Iterator[tuple[int, Any]]:
    """This rank's ``(index, item)`` pairs; ``size=None`` yields items unchanged (texts).

    With a ``skipped`` list, image files that cannot be read are left out and their paths
    appended to it (indices of the others do not change); without, they raise
    :class:`BadImageError`.
    """
    dataset = as_dataset(data)
    if hasattr(dataset, "load"):
        n = len(dataset)
        start, stop = n * rank // world, n * (rank + 1) // world
        for index in range(start, stop):
            try:
                item = dataset.load(index, size)
            except BadImageError as error:
                if skipped is None:
                    raise
                skipped.append(str(error.path))
                continue
            yield index, item
        return
    for index, item in enumerate(dataset):  # unknown length: round-robin over the ranks
        if index % world == rank:
            yield index, item if size is None else to_image(item, size)


def num_items(data: Any) -> int | None:
    dataset = as_dataset(data)
    return len(dataset) if hasattr(dataset, "__len__") else None
