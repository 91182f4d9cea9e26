"""Argument checks shared by the public entry points.

Every failure names the argument, the value it got and what would be valid, so a bad call fails
at once rather than in the middle of training.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Keep old keyword names as deprecated aliases: ``@renamed_kwargs(show_progress="progress")``.

    The old name still works for one release with a ``FutureWarning``; passing both raises
    ``TypeError`` (the project's rule for renamed arguments, issue 16).

    >>> @renamed_kwargs(show_progress="progress")
    ... def f(progress: bool = True):
    ...     return progress
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     f(show_progress=False), str(seen[0].message)
    (False, "f: 'show_progress' is deprecated, use 'progress'")
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}: got both '{old}' (deprecated) and '{new}'; "
                            f"pass only '{new}'"
                        )
                    warnings.warn(
                        f"{fn.__name__}: '{old}' is deprecated, use '{new}'",
                        FutureWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


def check_choice(name: str, value: Any, valid: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {valid}")


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive number (an ``int`` if ``integer``)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name}={value!r} is not valid; expected {what}")


def check_fraction(name: str, value: float, *, inclusive: bool = True) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value!r} is not valid; expected a number in [0, 1]")


def check_images(images: Any, in_chans: int, stride: int = 32) -> torch.Tensor:
    """Check images ``[B, C, H, W]``: ``C == in_chans``, H and W multiples of ``stride``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(
            f"images has shape {tuple(images.shape)}; expected 4 dimensions [B, C, H, W]"
        )
    if images.shape[1] != in_chans:
        raise ValueError(
            f"images has {images.shape[1]} channels (shape {tuple(images.shape)}); the backbone "
            f"expects in_chans={in_chans}"
        )
    h, w = images.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(
            f"images has spatial size {h}x{w}; height and width must be multiples of {stride} "
            "(letterbox to a multiple, e.g. yolo_heads.data.letterbox)"
        )
    if not images.is_floating_point():
        raise TypeError(f"images has dtype {images.dtype}; expected a floating point tensor")
    return images


def check_targets(
    targets: Any, batch_size: int, image_size: tuple[int, int], num_classes: int
) -> list[dict[str, torch.Tensor]]:
    """Check per-image targets: dicts of ``boxes`` [N, 4] xyxy pixels and ``labels`` [N].

    Images with no objects (``N == 0``) are valid; boxes outside the image, degenerate boxes
    (zero width or height), non-finite values and labels outside ``[0, num_classes)`` are not.
    """
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of per-image dicts, got {type(targets).__name__}")
    if len(targets) != batch_size:
        raise ValueError(
            f"targets has {len(targets)} entries but the batch has {batch_size} images; give one "
            "dict per image (an image without objects gets boxes of shape [0, 4])"
        )
    h, w = image_size
    tol = 1e-3
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels', got {t!r}")
        boxes, labels = torch.as_tensor(t["boxes"]), torch.as_tensor(t["labels"])
        if boxes.numel() == 0 and labels.numel() == 0:
            continue
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"targets[{i}]['boxes'] has shape {tuple(boxes.shape)}; expected [N, 4] (x1, y1, "
                "x2, y2 in pixels)"
            )
        if labels.shape != (boxes.shape[0],):
            raise ValueError(
                f"targets[{i}]['labels'] has shape {tuple(labels.shape)}; expected "
                f"[{boxes.shape[0]}] (one label per box)"
            )
        if not torch.isfinite(boxes).all():
            raise ValueError(f"targets[{i}]['boxes'] holds non-finite values: {boxes.tolist()}")
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bad.any():
            raise ValueError(
                f"targets[{i}]['boxes'] has degenerate boxes (x2 <= x1 or y2 <= y1): "
                f"{boxes[bad].tolist()}; boxes are xyxy pixels with positive width and height"
            )
        outside = (
            (boxes[:, 0] < -tol)
            | (boxes[:, 1] < -tol)
            | (boxes[:, 2] > w + tol)
            | (boxes[:, 3] > h + tol)
        )
        if outside.any():
            raise ValueError(
                f"targets[{i}]['boxes'] has boxes outside the {w}x{h} image: "
                f"{boxes[outside].tolist()}; clip them to [0, {w}] x [0, {h}] or drop them"
            )
        if labels.is_floating_point() or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"targets[{i}]['labels']={labels.tolist()} is not valid; expected integer class "
                f"indices in [0, {num_classes})"
            )
    return list(targets)
