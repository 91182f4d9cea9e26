"""Classification image folders cut from detection sets: one crop per box, one folder per class.

The layout is what timm's ``ImageFolder`` (and ``timm-knowledge train --data-dir``) reads:
``root/<split>/<class name>/<image>_<box>.png``. With the digits generator this is a
ten-class handwritten-digits classification set that needs no download.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .._checks import check_choice, check_number, check_positive
from .._files import write_atomic
from .digits import make_digits_detection

__all__ = ["make_digits_classification", "write_box_crops"]


def write_box_crops(
    ann_file: str | Path,
    root: str | Path,
    split: str = "train",
    crop_size: int = 32,
    context: float = 0.25,
) -> dict[str, int]:
    """Cut every box of the COCO set ``ann_file`` into ``root/<split>/<category name>/``.

    Each crop is the square around the box's centre with side ``max(w, h) * (1 + 2 *
    context)`` (black beyond the image edge), resized to ``crop_size``; crowd boxes are
    skipped. Returns the number of crops per class name.

    >>> import tempfile
    >>> ann = make_digits_detection(tempfile.mkdtemp(), num_images=2, progress=False)
    >>> sum(write_box_crops(ann, tempfile.mkdtemp()).values()) >= 2
    True
    """
    check_positive("crop_size", crop_size, integer=True)
    check_number("context", context, low=0, high=4)
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"ann_file={str(ann_file)!r}: no such file")
    coco = json.loads(ann_file.read_text())
    names = {c["id"]: str(c["name"]) for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    image_dir = ann_file.parent / ann_file.stem
    counts = {name: 0 for name in names.values()}
    opened: dict[int, Image.Image] = {}
    for ann in coco["annotations"]:
        if ann.get("iscrowd"):
            continue
        image_id = ann["image_id"]
        if image_id not in opened:
            opened.clear()  # annotations come image by image: keep one open
            path = image_dir / images[image_id]["file_name"]
            opened[image_id] = Image.open(path).convert("RGB")
        x, y, w, h = ann["bbox"]
        side = max(w, h) * (1 + 2 * context)
        cx, cy = x + w / 2, y + h / 2
        box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        crop = opened[image_id].crop(box).resize((crop_size, crop_size), Image.BILINEAR)
        name = names[ann["category_id"]]
        folder = Path(root) / split / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{image_id:06d}_{ann['id']:06d}.png"
        write_atomic(target, lambda tmp, c=crop: c.save(tmp, format="PNG"))
        counts[name] += 1
    return counts


def make_digits_classification(
    root: str | Path,
    num_images: int = 200,
    seed: int = 0,
    split: str = "train",
    crop_size: int = 32,
    context: float = 0.25,
    **generator_kwargs,
) -> Path:
    """A handwritten-digits classification folder: :func:`make_digits_detection` canvases
    (``generator_kwargs``, e.g. ``image_size``, ``digit_size``; in ``root/_detection``) cut
    into one ``crop_size`` crop per digit by
    :func:`write_box_crops`. Returns ``root`` (``root/<split>/<0..9>/*.png``); ``"train"``
    and ``"val"`` draw from disjoint digit samples, as the generator's splits do.

    >>> import tempfile
    >>> folder = make_digits_classification(tempfile.mkdtemp(), num_images=3, progress=False)
    >>> all(p.parent.name in "0123456789" for p in (folder / "train").glob("*/*.png"))
    True
    """
    check_choice("split", split, ("train", "val"))
    root = Path(root)
    ann = make_digits_detection(
        root / "_detection", num_images, seed=seed, split=split, **generator_kwargs
    )
    write_box_crops(ann, root, split, crop_size=crop_size, context=context)
    return root
