from __future__ import annotations

import pytest
import torch

from yolo_heads.data import make_digits_detection


@pytest.fixture(scope="session")
def tiny() -> dict:
    """A resnet18 at 1/8 width: the real timm architecture, fast on the CPU."""
    return {
        "backbone": "resnet18",
        "channels": (8, 16, 32, 64),
        "stem_width": 8,
        "neck_channels": 16,
    }


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """A tiny digits detection set (train and val annotation paths), 64 px canvases."""
    root = tmp_path_factory.mktemp("digits")
    train = make_digits_detection(
        root, num_images=8, seed=0, image_size=64, digit_size=(16, 28), progress=False
    )
    val = make_digits_detection(
        root,
        num_images=4,
        seed=1,
        image_size=64,
        digit_size=(16, 28),
        split="val",
        progress=False,
    )
    return train, val
