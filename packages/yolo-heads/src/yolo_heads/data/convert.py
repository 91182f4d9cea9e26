"""``write_yolo_txt``: a COCO-format set (such as the digits set) in the YOLO txt layout."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml
from PIL import Image

from .._files import write_folder_atomic
from .coco import CocoDetection

Source = CocoDetection | str | Path


def _as_dataset(source: Source) -> CocoDetection:
    if isinstance(source, CocoDetection):
        return source
    if isinstance(source, (str, Path)):
        return CocoDetection(source)
    raise TypeError(
        f"source is a {type(source).__name__}; expected a CocoDetection or a COCO JSON path"
    )


def write_yolo_txt(sources: Source | Mapping[str, Source], out_dir: str | Path) -> Path:
    """Write COCO-format data as ``out_dir/images/<split>/``, ``labels/<split>/`` and
    ``data.yaml``; returns the YAML's path.

    ``sources`` is one COCO JSON path or :class:`CocoDetection` (its split is named after the
    JSON's stem, e.g. ``train.json`` -> ``train``), or a mapping ``{split: source}``. Ultralytics
    needs both ``train`` and ``val``. Class ids are the labels (categories in id order), boxes
    are clipped to the image, crowd and zero-size boxes are left out (as ``CocoDetection`` does).
    ``out_dir`` is replaced as a whole, atomically. The YAML's ``path`` is absolute (Ultralytics
    reads a relative one from its own datasets folder).

    >>> import tempfile
    >>> from yolo_heads.data import make_digits_detection
    >>> root = tempfile.mkdtemp()
    >>> ann = make_digits_detection(root, num_images=2, image_size=64, progress=False)
    >>> data_yaml = write_yolo_txt(ann, tempfile.mkdtemp())
    >>> sorted(p.name for p in data_yaml.parent.iterdir())
    ['data.yaml', 'images', 'labels']
    """
    if isinstance(sources, Mapping):
        splits = {str(k): _as_dataset(v) for k, v in sources.items()}
    else:
        dataset = _as_dataset(sources)
        splits = {dataset.ann_file.stem: dataset}
    if not splits:
        raise ValueError("sources is empty; give a COCO JSON, a CocoDetection or {split: source}")
    names = {tuple(ds.class_names) for ds in splits.values()}
    if len(names) > 1:
        raise ValueError(f"sources have different class names {sorted(names)}; give one class list")
    out_dir = Path(out_dir).resolve()

    def fill(tmp: Path) -> None:
        for split, ds in splits.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for record in ds.records:
                target = tmp / "images" / split / record.path.name
                if target.exists():
                    raise ValueError(
                        f"split {split!r} has two images named {record.path.name!r}; the YOLO "
                        "layout keeps one folder per split"
                    )
                shutil.copyfile(record.path, target)
                with Image.open(record.path) as im:
                    width, height = im.size
                lines = []
                for (x1, y1, x2, y2), label in zip(record.boxes.tolist(), record.labels.tolist()):
                    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
                    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
                    if x2 <= x1 or y2 <= y1:
                        continue
                    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
                    w, h = (x2 - x1) / width, (y2 - y1) / height
                    lines.append(f"{label} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}\n")
                (tmp / "labels" / split / f"{record.path.stem}.txt").write_text("".join(lines))
        config = {"path": str(out_dir)}
        config.update({split: f"images/{split}" for split in splits})
        config["names"] = dict(enumerate(next(iter(names))))
        (tmp / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    write_folder_atomic(out_dir, fill)
    return out_dir / "data.yaml"
