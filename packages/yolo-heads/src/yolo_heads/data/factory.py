"""``create_dataset``: a COCO JSON or a YOLO data YAML, by its file suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import DetectionDataset
from .coco import CocoDetection
from .yolo import YoloTxtDetection


def _coco(data: Path, split: str, **kwargs: Any) -> DetectionDataset:
    return CocoDetection(data, **kwargs)  # one JSON is one split: ``split`` names nothing


def _yolo(data: Path, split: str, **kwargs: Any) -> DetectionDataset:
    return YoloTxtDetection(data, split=split, **kwargs)


#: Dataset layouts by the suffix of the file that describes them.
DATASET_FORMATS = {".json": _coco, ".yaml": _yolo, ".yml": _yolo}


def create_dataset(
    data: str | Path,
    split: str = "train",
    image_size: int = 96,
    augment: bool = False,
    skip_bad_images: bool = False,
    **kwargs: Any,
) -> DetectionDataset:
    """The dataset ``data`` describes: a COCO annotation JSON or a YOLO data YAML.

    ``split`` picks the YAML's image list (a COCO JSON is already one split). Other keyword
    arguments (``scale_range``, ``flip``, ``min_box``, ``seed``; ``image_dir`` for COCO) go to
    the dataset class. ``skip_bad_images=True`` decodes every image once and leaves out the
    unreadable ones, with a warning (:meth:`~yolo_heads.data.DetectionDataset.drop_bad_images`);
    by default an unreadable image fails when it is loaded, with its path in the message
    (dict-init's and timm-knowledge's default too).

    >>> import tempfile
    >>> from yolo_heads.data import make_digits_detection, write_yolo_txt
    >>> root = tempfile.mkdtemp()
    >>> ann = make_digits_detection(root, num_images=2, image_size=64, progress=False)
    >>> coco = create_dataset(ann, image_size=64)
    >>> yolo = create_dataset(write_yolo_txt(ann, tempfile.mkdtemp()), split="train", image_size=64)
    >>> type(coco).__name__, type(yolo).__name__, len(coco) == len(yolo)
    ('CocoDetection', 'YoloTxtDetection', True)
    """
    path = Path(data)
    build = DATASET_FORMATS.get(path.suffix.lower())
    if build is None:
        raise ValueError(
            f"data={str(data)!r} is not valid; expected a COCO annotation file (.json) or a YOLO "
            f"data YAML (.yaml / .yml), got suffix {path.suffix!r}"
        )
    dataset = build(path, split, image_size=image_size, augment=augment, **kwargs)
    return dataset.drop_bad_images() if skip_bad_images else dataset
