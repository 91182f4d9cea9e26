"""A small detection set of real handwritten digits (scikit-learn's 8x8 digits on canvases)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .._checks import check_choice, check_positive, renamed_kwargs
from .._files import write_atomic
from ..masks import encode_rle

#: A digits layout whose boxes span COCO's small, medium and large areas (``**SIZE_SPREAD``):
#: measured on 800 train images (seed 0): 54% small, 38% medium and 8% large boxes.
SIZE_SPREAD: dict = {"image_size": 160, "digit_size": (12, 150), "size_sampling": "log"}


def _digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    # Disjoint writers' samples per split: every fifth digit image is held out for "val".
    held_out = np.arange(len(images)) % 5 == 0
    pick = held_out if split == "val" else ~held_out if split == "train" else np.ones_like(held_out)
    return images[pick], targets[pick]


@renamed_kwargs(show_progress="progress")
def make_digits_detection(
    root: str | Path,
    num_images: int = 200,
    seed: int = 0,
    image_size: int = 96,
    digits_per_image: tuple[int, int] = (1, 4),
    digit_size: tuple[int, int] = (16, 40),
    split: str = "train",
    progress: bool = True,
    size_sampling: str = "uniform",
) -> Path:
    """Write a COCO-format detection set of handwritten digits and return the annotation path.

    Every canvas (``image_size`` square, dark noisy background with a random tint) holds
    ``digits_per_image`` real 8x8 digits from scikit-learn, each upscaled to a random side in
    ``digit_size`` pixels (``size_sampling="uniform"`` in pixels, or ``"log"``: uniform in log
    side, so small and large digits are equally common) and placed without overlap. Boxes are
    tight around the ink, and each object's ``segmentation`` (COCO RLE) is exactly its own ink
    pixels (``ink > 0.15``, the pixels the box bounds), so the set also serves instance
    segmentation. Classes are the ten digits (COCO category ids 1..10, names "0".."9").
    ``split="train"`` and ``"val"`` draw from disjoint digit samples (every fifth sample is kept
    for "val"); ``"all"`` uses all.

    Files: ``root/<split>.json`` and ``root/<split>/<id>.png``, each written atomically.

    >>> import tempfile
    >>> ann = make_digits_detection(tempfile.mkdtemp(), num_images=2, progress=False)
    >>> ann.name
    'train.json'

    The demo's set (``image_size=64, digit_size=(10, 25)``) holds only COCO-small objects, so
    APm / APl are -1 there. :data:`SIZE_SPREAD` spans COCO's small (< 32^2 px), medium and
    large (> 96^2 px) areas (160 px canvases, log-uniform sides 12-150 px):

    >>> ann = make_digits_detection(tempfile.mkdtemp(), num_images=2, progress=False,
    ...                             **SIZE_SPREAD)
    """
    check_positive("num_images", num_images, integer=True)
    check_positive("image_size", image_size, integer=True)
    check_choice("split", split, ("train", "val", "all"))
    check_choice("size_sampling", size_sampling, ("uniform", "log"))
    lo, hi = digit_size
    if not (4 <= lo <= hi <= image_size):
        raise ValueError(
            f"digit_size={digit_size!r} is not valid; expected (min, max) with "
            f"4 <= min <= max <= image_size={image_size}"
        )
    n_lo, n_hi = digits_per_image
    if not (1 <= n_lo <= n_hi):
        raise ValueError(
            f"digits_per_image={digits_per_image!r} is not valid; expected 1 <= min <= max"
        )
    root = Path(root)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    pool, pool_labels = _digit_pool(split)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in tqdm(range(1, num_images + 1), desc=f"digits {split}", disable=not progress):
        tint = rng.uniform(0.6, 1.0, size=3)
        background = rng.uniform(0, 40)
        canvas = rng.normal(background, 8.0, size=(image_size, image_size, 3))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(n_lo, n_hi + 1))):
            if size_sampling == "uniform":
                side = int(rng.integers(lo, hi + 1))
            else:
                side = min(
                    hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))
                )
            for _attempt in range(20):
                x0 = int(rng.integers(0, image_size - side + 1))
                y0 = int(rng.integers(0, image_size - side + 1))
                if all(
                    x0 + side <= px or px + ps <= x0 or y0 + side <= py or py + ps <= y0
                    for px, py, ps, _ in placed
                ):
                    break
            else:
                continue
            k = int(rng.integers(len(pool)))
            glyph = Image.fromarray((pool[k] * (255 / 16)).astype(np.uint8))
            ink = np.asarray(glyph.resize((side, side), Image.BILINEAR), dtype=np.float64) / 255
            region = canvas[y0 : y0 + side, x0 : x0 + side]
            colour = 255 * tint * rng.uniform(0.7, 1.0)
            canvas[y0 : y0 + side, x0 : x0 + side] = region * (1 - ink[..., None]) + (
                ink[..., None] * colour
            )
            ys, xs = np.nonzero(ink > 0.15)
            if len(xs) == 0:
                continue
            bx0, by0 = x0 + int(xs.min()), y0 + int(ys.min())
            bw, bh = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
            placed.append((x0, y0, side, int(pool_labels[k])))
            own = np.zeros((image_size, image_size), dtype=bool)
            own[y0 : y0 + side, x0 : x0 + side] = ink > 0.15
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(pool_labels[k]) + 1,
                    "bbox": [bx0, by0, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": encode_rle(own),
                }
            )
        file_name = f"{image_id:06d}.png"
        pixels = np.clip(canvas, 0, 255).astype(np.uint8)
        write_atomic(
            image_dir / file_name, lambda tmp, p=pixels: Image.fromarray(p).save(tmp, format="PNG")
        )
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
    coco = {
        "info": {"description": f"handwritten digits detection ({split}), seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)],
    }
    ann_file = root / f"{split}.json"
    write_atomic(ann_file, lambda tmp: tmp.write_text(json.dumps(coco)))
    return ann_file
