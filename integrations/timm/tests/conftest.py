"""Fixtures shared by timm-knowledge's trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """train/ and val/ with 3 classes (red, green, blue) of 32 px images (a dominant colour plus
    noise), 4 and 2 per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for c, name in enumerate(("red", "green", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (32, 32, 3))
                pixels[..., c] += 160
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root
