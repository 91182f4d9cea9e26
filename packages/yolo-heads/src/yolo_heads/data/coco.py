"""COCO-format detection dataset: a JSON of images, annotations and categories + an image folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import coco_box_problem
from .base import DetectionDataset, ImageRecord, collate
from .masks import segment_problem


class CocoDetection(DetectionDataset):
    """Images and boxes from a COCO annotation file, letterboxed to ``image_size``.

    Labels are contiguous 0..C-1 in the order of the file's category ids;
    ``label_to_category`` maps them back, ``class_names`` names them, and ``ann_file`` is the
    JSON itself (pycocotools scores against it). Crowd and zero-size boxes are skipped.
    With ``masks=True`` every annotation needs a ``segmentation`` (polygons or RLE), and items
    carry ``masks`` (see :class:`~yolo_heads.data.DetectionDataset`).
    Items, augmentation and :meth:`set_epoch` are :class:`~yolo_heads.data.DetectionDataset`'s.

    Args:
        ann_file: COCO JSON path.
        image_dir: image folder (default: the JSON's folder, then ``<json stem>/`` and
            ``images/`` beside it; the first that holds the first image is used).
        image_size, augment, scale_range, flip, min_box, seed and the keyword-only
            augmentation options (mosaic, translate, ...): see ``DetectionDataset``.

    >>> import tempfile
    >>> from yolo_heads.data import make_digits_detection
    >>> root = tempfile.mkdtemp()
    >>> ann = make_digits_detection(root, num_images=2, image_size=64, progress=False)
    >>> ds = CocoDetection(ann, image_size=64)
    >>> image, target = ds[0]
    >>> tuple(image.shape), ds.class_names[:3]
    ((3, 64, 64), ['0', '1', '2'])
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
        **augmentation: Any,
    ) -> None:
        super().__init__(image_size, augment, scale_range, flip, min_box, seed, **augmentation)
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"ann_file={str(ann_file)!r} does not exist")
        try:
            data = json.loads(ann_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"ann_file={str(ann_file)!r} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"ann_file={str(ann_file)!r} holds a {type(data).__name__}; expected a COCO dict "
                "of images, annotations and categories"
            )
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(
                    f"ann_file={str(ann_file)!r} has no {key!r} list (not COCO format)"
                )
        if not data["images"]:
            raise ValueError(f"ann_file={str(ann_file)!r} lists no images; the dataset is empty")
        for i, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                keys = sorted(im) if isinstance(im, dict) else type(im).__name__
                raise ValueError(
                    f"ann_file={str(ann_file)!r} images[{i}] has {keys}; every image needs 'id' "
                    "and 'file_name'"
                )
        self.ann_file = ann_file
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.label_to_category = [c["id"] for c in self.categories]
        self.class_names = [str(c["name"]) for c in self.categories]
        category_to_label = {c: i for i, c in enumerate(self.label_to_category)}
        per_image: dict[int, list[tuple[list[float], int, Any]]] = {
            im["id"]: [] for im in self.images
        }
        # Checked here, once, so that a bad annotation fails before training starts.
        empty: list[Any] = []
        for ann in data["annotations"]:
            if ann.get("image_id") not in per_image:
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
            problem = coco_box_problem(bbox)
            if problem is not None:
                raise ValueError(
                    f"ann_file annotation id={ann.get('id')} has bbox={bbox!r}{problem}"
                )
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = bbox
            if w == 0 or h == 0:  # a zero-area box carries no object: skipped, and said so
                empty.append(ann.get("id"))
                continue
            segmentation = ann.get("segmentation")
            if self.with_masks:
                problem = segment_problem(segmentation)
                if problem is not None:
                    raise ValueError(
                        f"ann_file annotation id={ann.get('id')} has segmentation="
                        f"{segmentation!r:.80}{problem}; masks=True needs one per object"
                    )
            per_image[ann["image_id"]].append(
                ([x, y, x + w, y + h], category_to_label[ann["category_id"]], segmentation)
            )
        if empty:
            warnings.warn(
                f"ann_file={str(ann_file)!r}: {len(empty)} annotations with zero width or height "
                f"skipped (ids {empty[:5]})",
                stacklevel=2,
            )
        self.image_dir = self._find_image_dir(image_dir)
        self.records = [
            ImageRecord(
                image_id=im["id"],
                path=self.image_dir / im["file_name"],
                boxes=np.array([a[0] for a in per_image[im["id"]]], np.float32).reshape(-1, 4),
                labels=np.array([a[1] for a in per_image[im["id"]]], np.int64),
                segments=tuple(a[2] for a in per_image[im["id"]]) if self.with_masks else None,
            )
            for im in self.images
        ]

    def _find_image_dir(self, image_dir: str | Path | None) -> Path:
        first = self.images[0]["file_name"]
        if image_dir is not None:
            bases = [Path(image_dir)]
        else:
            root = self.ann_file.parent
            bases = [root, root / self.ann_file.stem, root / "images"]
        for base in bases:
            if (base / first).is_file():
                return base
        raise FileNotFoundError(
            f"image {first!r} (the first in ann_file={str(self.ann_file)!r}) is in none of "
            f"{[str(b) for b in bases]}; pass image_dir= the folder that holds the images"
        )


__all__ = ["CocoDetection", "collate"]
