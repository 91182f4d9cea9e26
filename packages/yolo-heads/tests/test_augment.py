"""Mosaic, random affine and HSV jitter (issue 13) against references written out here or from
torchvision / colorsys, and their keying by (seed, epoch, index)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from yolo_heads.config import load_config
from yolo_heads.data import CocoDetection
from yolo_heads.data.augment import affine_window, hsv_jitter, mosaic
from yolo_heads.run import build_datasets


def test_affine_boxes_match_torchvision_affine():
    boxes = torch.tensor([[10.0, 12.0, 30.0, 40.0], [40.0, 5.0, 60.0, 20.0]])
    canvas = torch.rand(3, 64, 64)
    for scale, shift in ((1.3, (5.0, -7.0)), (0.6, (-3.0, 2.0))):
        _, got, keep = affine_window(canvas, boxes, (32.0, 32.0), 64, scale, shift)
        ref = TF.affine(
            tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(64, 64)),
            angle=0.0, translate=list(shift), scale=scale, shear=[0.0, 0.0], center=[32.0, 32.0],
        )  # fmt: skip
        torch.testing.assert_close(got, ref.as_subclass(torch.Tensor)[keep].clamp(0, 64))


def test_affine_integer_shift_moves_pixels_and_fills_the_rest():
    canvas = torch.rand(3, 32, 32)
    out, _, _ = affine_window(canvas, torch.zeros(0, 4), (16.0, 16.0), 32, 1.0, (3.0, -2.0))
    torch.testing.assert_close(out[:, : 32 - 2, 3:], canvas[:, 2:, : 32 - 3])
    torch.testing.assert_close(out[:, :, :3], torch.full((3, 32, 3), 114 / 255))


def test_affine_drops_boxes_mostly_cut_away():
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 60.0, 60.0]])
    # Window [50, 114) of the canvas: box 0 is gone, box 1 keeps 10 x 10 of 60 x 60 (2.8%).
    _, kept, keep = affine_window(torch.rand(3, 128, 128), boxes, (82.0, 82.0), 64)
    assert keep.tolist() == [False, False] and len(kept) == 0
    _, kept, keep = affine_window(torch.rand(3, 128, 128), boxes, (60.0, 60.0), 64)
    assert keep.tolist() == [False, True]  # box 1: 32 x 32 of 60 x 60 left, 28% > 10%
    assert kept.tolist() == [[0.0, 0.0, 32.0, 32.0]]


def test_mosaic_boxes_land_on_their_tile():
    tiles = [torch.full((3, 32, 32), float(k) / 4) for k in range(4)]
    boxes = [torch.tensor([[4.0, 6.0, 20.0, 26.0]]) for _ in range(4)]
    canvas, moved, labels = mosaic(tiles, boxes, [torch.tensor([k]) for k in range(4)])
    for box, label in zip(moved.long().tolist(), labels.tolist()):
        x0, y0, x1, y1 = box
        assert torch.all(canvas[:, y0:y1, x0:x1] == label / 4)


def test_hsv_jitter_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 6, 6, generator=g) * 255).round() / 255
    out = hsv_jitter(image, 0.1, 0.7, 1.2)
    for y in range(6):
        for x in range(6):
            h, s, v = colorsys.rgb_to_hsv(*image[:, y, x].tolist())
            ref = colorsys.hsv_to_rgb((h + 0.1) % 1.0, min(s * 0.7, 1.0), min(v * 1.2, 1.0))
            # PIL's HSV is 8 bit: a hue step is 1/256 of the circle, values 1/255
            np.testing.assert_allclose(out[:, y, x].numpy(), ref, atol=0.04)


def _dataset(path, **kwargs):
    return CocoDetection(path, image_size=64, augment=True, seed=5, **kwargs)


FULL = {"mosaic": 1.0, "translate": 0.1, "affine_scale": 0.5, "hsv": (0.015, 0.7, 0.4)}


def test_items_depend_on_seed_epoch_index_only(digits):
    a, b = _dataset(digits[0], **FULL), _dataset(digits[0], **FULL)
    for epoch in range(3):  # a walks through the epochs, b jumps to the last (as a resume does)
        a.set_epoch(epoch)
        items = [a[i] for i in range(len(a))]
    b.set_epoch(2)
    for i, (image, target) in enumerate(items):
        other, other_target = b[i]
        assert torch.equal(image, other) and torch.equal(target["boxes"], other_target["boxes"])
    b.set_epoch(1)
    assert not torch.equal(b[0][0], items[0][0])


def test_mosaic_closes_after_mosaic_epochs(digits):
    closing = _dataset(digits[0], mosaic=1.0, mosaic_epochs=2)
    plain = _dataset(digits[0])
    for epoch, same in ((1, False), (2, True), (5, True)):
        closing.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert torch.equal(closing[3][0], plain[3][0]) is same


def test_defaults_leave_the_item_stream_unchanged(digits):
    """With the new options off, an augmented item is the letterbox of the four draws the
    dataset made before issue 13 (written out here)."""
    from yolo_heads.data.letterbox import letterbox

    data = _dataset(digits[0])
    data.set_epoch(4)
    image, _, _ = data.load(2)
    rng = np.random.default_rng([5, 4, 2])
    jitter = rng.uniform(0.6, 1.0)
    offset = (float(rng.random()), float(rng.random()))
    rng.random()  # the flip draw
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1)
    canvas, _ = letterbox(image, 64, float(jitter), offset)
    ref = torch.from_numpy(canvas.copy()).permute(2, 0, 1).float() / 255
    ref = ((ref - 0.5) * float(contrast) + 0.5 + float(brightness)).clamp(0, 1)
    assert torch.equal(data[2][0], ref)


def test_config_keys_reach_the_dataset(digits):
    cfg = load_config(
        overrides=[
            f"data.train={digits[0]}", "schedule.epochs=30", "augment.mosaic=1.0",
            "augment.close_mosaic=10", "augment.translate=0.1", "augment.affine_scale=0.5",
            "augment.hsv_h=0.015", "augment.hsv_s=0.7", "augment.hsv_v=0.4",
        ]
    )  # fmt: skip
    train_set, _ = build_datasets(cfg)
    assert (train_set.mosaic, train_set.mosaic_epochs) == (1.0, 20)
    assert (train_set.translate, train_set.affine_scale) == (0.1, 0.5)
    assert train_set.hsv == (0.015, 0.7, 0.4)
    default, _ = build_datasets(load_config(overrides=[f"data.train={digits[0]}"]))
    assert (default.mosaic, default.translate, default.affine_scale, default.hsv) == (
        0,
        0,
        0,
        (0,) * 3,
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mosaic": 1.5}, "mosaic=1.5"),
        ({"hsv": (0.9, 0, 0)}, "hsv="),
        ({"translate": -1}, "translate"),
    ],
)
def test_bad_augmentation_options_are_named(digits, kwargs, name):
    with pytest.raises(ValueError, match=name):
        _dataset(digits[0], **kwargs)
