"""The YOLO txt layout (Ultralytics): ``images/<split>/*`` + ``labels/<split>/*.txt`` + a data YAML.

A label file holds one object per line, ``class cx cy w h`` normalised to [0, 1] by the image
size (a polygon ``class x1 y1 x2 y2 ...``, the YOLO-seg layout, is taken as its bounding box, as
Ultralytics does, and with ``masks=True`` as the object's mask; a box line's mask is its box). An
image without a label file, or with an empty one, is a background image. The data YAML has
``path`` (the dataset root; relative paths are taken from the YAML's folder), ``train`` /
``val`` (an image folder, a ``.txt`` list of images, or a list of these, relative to ``path``)
and ``names`` (a list, or a mapping class id -> name).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from .._files import write_text_atomic
from .base import BadImageError, DetectionDataset, ImageRecord

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def read_data_yaml(data_yaml: str | Path) -> dict[str, Any]:
    """The data YAML with ``path`` resolved and ``names`` as a list (class id order)."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise FileNotFoundError(f"data={str(data_yaml)!r} does not exist")
    data = yaml.safe_load(data_yaml.read_text())
    if not isinstance(data, dict):
        raise ValueError(
            f"data={str(data_yaml)!r} is not a mapping (expected path, train, val, names)"
        )
    if "names" not in data:
        raise ValueError(f"data={str(data_yaml)!r} has no 'names' (the class names)")
    names = data["names"]
    if isinstance(names, dict):
        ids = sorted(names)
        if ids != list(range(len(ids))):
            raise ValueError(
                f"data={str(data_yaml)!r} names has class ids {ids}; expected 0..{len(ids) - 1}"
            )
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise ValueError(
            f"data={str(data_yaml)!r} names={names!r} is not a non-empty list or mapping"
        )
    if "nc" in data and data["nc"] != len(names):
        raise ValueError(f"data={str(data_yaml)!r} has nc={data['nc']} but {len(names)} names")
    root = Path(data.get("path") or ".")
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    return dict(data, path=root, names=[str(n) for n in names])


def _list_images(root: Path, entry: str | list[str], data_yaml: Path, split: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        source = Path(item) if Path(item).is_absolute() else root / item
        if source.is_dir():
            images.extend(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file() and source.suffix == ".txt":
            for line in source.read_text().splitlines():
                if line.strip():
                    p = Path(line.strip())
                    images.append(p if p.is_absolute() else (source.parent / p).resolve())
        else:
            raise FileNotFoundError(
                f"data={str(data_yaml)!r} {split}={item!r} is neither an image folder nor a .txt "
                f"list of images under path={str(root)!r}"
            )
    return sorted(set(images))


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, suffix .txt."""
    parts = list(image.parts)
    if "images" not in parts:
        return image.with_suffix(".txt")
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_label_file(
    path: Path, num_classes: int, segments: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ``cx cy w h`` [N, 4] and class ids [N] of one label file (missing: none).

    ``segments``, when given, receives each object's outline: the normalised polygon
    ``[x1, y1, x2, y2, ...]`` of a polygon line, None for a box line."""
    if not path.is_file():
        return np.zeros((0, 4), np.float64), np.zeros(0, np.int64)
    rows, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"label file {str(path)!r} line {number} ({line.strip()!r})"
        if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
            raise ValueError(
                f"{where} has {len(fields)} fields; expected 'class cx cy w h' (5 fields) or a "
                "polygon 'class x1 y1 x2 y2 ...' (an odd number, at least 7)"
            )
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{where} holds a value that is not a number") from None
        cls = values[0]
        if cls != int(cls) or not (0 <= cls < num_classes):
            raise ValueError(
                f"{where} has class {fields[0]}; expected an integer class id in "
                f"[0, {num_classes}) (the data YAML names {num_classes} classes)"
            )
        coords = np.array(values[1:])
        if not np.isfinite(coords).all() or coords.min() < 0 or coords.max() > 1:
            raise ValueError(f"{where} has coordinates outside [0, 1]; YOLO labels are normalised")
        polygon = coords.tolist() if len(coords) > 4 else None
        if len(coords) > 4:  # polygon: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            coords = np.array(
                [(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, np.ptp(xs), np.ptp(ys)]
            )
        if coords[2] <= 0 or coords[3] <= 0:  # zero-size boxes carry no object: skipped
            continue
        rows.append(coords)
        classes.append(int(cls))
        if segments is not None:
            segments.append(polygon)
    return np.array(rows, np.float64).reshape(-1, 4), np.array(classes, np.int64)


def _fingerprint(images: list[Path], labels: list[Path], names: list[str]) -> str:
    """Changes when an image or label file is added, removed, resized or touched."""
    digest = hashlib.sha256(json.dumps(names).encode())
    digest.update(b"segmentation")  # the JSON gained masks: older caches are rewritten
    for path in (*images, *labels):
        stat = path.stat() if path.is_file() else None
        size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
        digest.update(f"{path}|{size}|{mtime}\n".encode())
    return digest.hexdigest()


def _cxcywh_to_xyxy(cxcywh: np.ndarray, width: int, height: int) -> np.ndarray:
    cx, cy, w, h = cxcywh.T
    x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height
    return np.stack((x1, y1, x1 + w * width, y1 + h * height), 1).reshape(-1, 4)


def _segmentations(
    cxcywh: np.ndarray, outlines: list, width: int, height: int
) -> tuple[list[list[float]], ...]:
    """Each object's COCO polygon in pixels: its own outline, or its box for a box line."""
    scale = np.array([width, height])
    found = []
    for (x1, y1, x2, y2), outline in zip(_cxcywh_to_xyxy(cxcywh, width, height), outlines):
        if outline is None:
            polygon = [x1, y1, x2, y1, x2, y2, x1, y2]
        else:
            polygon = (np.array(outline).reshape(-1, 2) * scale).reshape(-1).tolist()
        found.append([[round(float(v), 3) for v in polygon]])
    return tuple(found)


class YoloTxtDetection(DetectionDataset):
    """One split of a YOLO txt layout dataset, given by its data YAML.

    Labels are the YOLO class ids, ``class_names`` the YAML's ``names``, and
    ``label_to_category`` is ``class id + 1`` (the category ids of the ground truth JSON).
    ``ann_file`` is that COCO JSON for pycocotools, written once (atomically) beside the labels
    as ``labels/<split>.coco.json`` and rewritten when an image or label file changes; when that
    folder is read-only it goes to the temporary directory. Images get ids 1..N in sorted path
    order. Items, augmentation and :meth:`set_epoch` are ``DetectionDataset``'s.

    Args:
        data: the data YAML (``path``, ``train``, ``val``, ``names``).
        split: the YAML key of the image list (``"train"``, ``"val"``, ``"test"``).
        image_size, augment, scale_range, flip, min_box, seed and the keyword-only
            augmentation options (mosaic, translate, ...): see ``DetectionDataset``.
    """

    def __init__(
        self,
        data: str | Path,
        split: str = "train",
        image_size: int = 96,
        augment: bool = False,
        scale_range: tuple[float, float] = (0.6, 1.0),
        flip: float = 0.0,
        min_box: float = 2.0,
        seed: int = 0,
        **augmentation: Any,
    ) -> None:
        super().__init__(image_size, augment, scale_range, flip, min_box, seed, **augmentation)
        self.data_yaml = Path(data)
        config = read_data_yaml(self.data_yaml)
        if not config.get(split):
            keys = [k for k in ("train", "val", "test") if config.get(k)]
            raise ValueError(f"split={split!r} is not in data={str(data)!r}; it has {keys}")
        self.split, self.root, self.class_names = split, config["path"], config["names"]
        self.label_to_category = list(range(1, len(self.class_names) + 1))
        images = _list_images(self.root, config[split], self.data_yaml, split)
        if not images:
            raise ValueError(f"data={str(data)!r} {split}={config[split]!r} holds no images")
        labels = [label_path(p) for p in images]
        # Parsed every time (cheap, and a malformed line fails here, before training).
        self._outlines: list[list] = [[] for _ in labels]
        parsed = [
            parse_label_file(p, len(self.class_names), segments=outlines)
            for p, outlines in zip(labels, self._outlines)
        ]
        self.ann_file, sizes = self._ground_truth(images, labels, parsed)
        self.records = [
            ImageRecord(
                i + 1,
                image,
                _cxcywh_to_xyxy(cxcywh, *size).astype(np.float32),
                classes,
                segments=_segmentations(cxcywh, outlines, *size) if self.with_masks else None,
            )
            for i, (image, (cxcywh, classes), size, outlines) in enumerate(
                zip(images, parsed, sizes, self._outlines)
            )
        ]

    def _ground_truth(
        self, images: list[Path], labels: list[Path], parsed: list[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[Path, list[tuple[int, int]]]:
        """The COCO JSON (cached) and every image's (width, height)."""
        fingerprint = _fingerprint(images, labels, self.class_names)
        label_dir = labels[0].parent
        tag = hashlib.sha256(str(label_dir).encode()).hexdigest()[:12]
        candidates = [
            label_dir.parent / f"{label_dir.name}.coco.json",  # labels/<split>.coco.json
            Path(tempfile.gettempdir()) / "yolo_heads" / f"{tag}.{self.split}.coco.json",
        ]
        for path in candidates:
            try:
                cached = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # absent, unreadable or foreign: (re)written below
            if cached.get("info", {}).get("fingerprint") == fingerprint:
                return path, [(im["width"], im["height"]) for im in cached["images"]]
        sizes = []
        for image in images:
            try:
                with Image.open(image) as im:  # reads the header only
                    sizes.append(im.size)
            except Exception as err:  # not an image at all: named (see base.read_image)
                raise BadImageError(
                    f"image {str(image)!r} cannot be read ({type(err).__name__}: {err}); remove "
                    "it or its label file from the data set",
                    image,
                ) from None
        text = json.dumps(self._coco(fingerprint, images, parsed, sizes))
        for path in candidates:
            try:
                return write_text_atomic(path, text), sizes
            except OSError:
                if path == candidates[-1]:
                    raise
        raise AssertionError("unreachable")

    def _coco(self, fingerprint, images, parsed, sizes) -> dict[str, Any]:
        coco_images, annotations = [], []
        for image_id, (image, (cxcywh, classes), (width, height)) in enumerate(
            zip(images, parsed, sizes), start=1
        ):
            name = image.relative_to(self.root) if image.is_relative_to(self.root) else image
            coco_images.append(
                {"id": image_id, "file_name": str(name), "width": width, "height": height}
            )
            segmentations = _segmentations(cxcywh, self._outlines[image_id - 1], width, height)
            for (x1, y1, x2, y2), label, segmentation in zip(
                _cxcywh_to_xyxy(cxcywh, width, height).tolist(), classes.tolist(), segmentations
            ):
                w, h = x2 - x1, y2 - y1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [x1, y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": segmentation,
                    }
                )
        return {
            "info": {"description": f"{self.data_yaml} {self.split}", "fingerprint": fingerprint},
            "images": coco_images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)],
        }


__all__ = ["YoloTxtDetection", "label_path", "parse_label_file", "read_data_yaml"]
