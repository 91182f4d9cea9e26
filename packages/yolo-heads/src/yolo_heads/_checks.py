"""Argument checks shared by the public entry points.

Every failure names the function (``fn``, where given), the argument, the value it got and what
would be valid, so a bad call fails at once rather than in the middle of training: ``TypeError``
for a wrong type, ``ValueError`` for a bad value. They run where a public call starts, never in
the per-step code of a training loop.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
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


def _where(fn: str | None) -> str:
    return f"{fn}: " if fn else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _invalid(fn: str | None, name: str, value: Any, expected: str) -> str:
    return f"{_where(fn)}{name}={_show(value)} is not valid; expected {expected}"


def check_choice(name: str, value: Any, valid: Iterable[Any], *, fn: str | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(_invalid(fn, name, value, f"one of {valid}"))


def _range_text(kind: str, low: float | None, high: float | None, positive: bool) -> str:
    article = "an" if kind == "integer" else "a"
    if positive and high is None:
        return f"a positive {kind}"
    if low is not None and high is not None:
        return f"{article} {kind} in [{low}, {high}]"
    if low is not None:
        return f"{article} {kind} >= {low}"
    if high is not None:
        return f"{'a positive' if positive else article} {kind} <= {high}"
    return f"{article} {kind}"


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = 1,
    high: int | None = None,
    fn: str | None = None,
) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (``None``: unbounded); ``TypeError`` for a
    non-integer (``bool`` included: ``True`` is no channel count), ``ValueError`` out of range.

    An upper bound is for sizes that build one module per unit: a typo of ``10**12`` would
    otherwise build modules until the memory runs out instead of failing at once.
    """
    expected = _range_text("integer", low, high, positive=low == 1)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_invalid(fn, name, value, expected))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(_invalid(fn, name, value, expected))
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
    finite: bool = True,
    fn: str | None = None,
) -> float:
    """``value`` as a ``float`` in ``[low, high]`` (``> 0`` if ``positive``); NaN is never
    valid, infinity only when ``finite=False``. ``TypeError`` for a non-number (or ``bool``)."""
    kind = "finite number" if finite else "number"
    expected = _range_text(kind, low, high, positive)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(_invalid(fn, name, value, expected))
    number = float(value)
    out = (
        math.isnan(number)
        or (finite and math.isinf(number))
        or (positive and not number > 0)
        or (low is not None and number < low)
        or (high is not None and number > high)
    )
    if out:
        raise ValueError(_invalid(fn, name, value, expected))
    return number


def check_positive(
    name: str, value: float, *, integer: bool = False, fn: str | None = None
) -> float:
    """A positive number (an ``int`` if ``integer``); infinity is allowed for numbers."""
    if integer:
        return check_int(name, value, low=1, fn=fn)
    return check_number(name, value, positive=True, finite=False, fn=fn)


def check_fraction(name: str, value: float, *, fn: str | None = None) -> float:
    """A number in ``[0, 1]``."""
    return check_number(name, value, low=0, high=1, fn=fn)


def check_bool(name: str, value: Any, *, fn: str | None = None) -> bool:
    """``TypeError`` unless ``value`` is ``True`` or ``False`` (``-1`` is no yes-or-no)."""
    if not isinstance(value, bool):
        raise TypeError(_invalid(fn, name, value, "True or False"))
    return value


def check_list(
    name: str,
    value: Any,
    *,
    item: Callable[[str, Any], Any],
    expected: str,
    length: int | None = None,
    fn: str | None = None,
) -> list[Any]:
    """A non-empty list or tuple (a string is not a list of names) of ``length`` entries, each
    checked by ``item(f"{name}[i]", entry)``, which returns the entry to keep."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(_invalid(fn, name, value, expected))
    if not value or (length is not None and len(value) != length):
        count = f"{length} entries" if length is not None else "at least one entry"
        raise ValueError(f"{_invalid(fn, name, value, expected)} ({count})")
    return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]


def check_int_list(
    name: str,
    value: Any,
    *,
    low: int | None = 1,
    length: int | None = None,
    fn: str | None = None,
) -> list[int]:
    """A non-empty list or tuple of integers in ``[low, inf)``."""
    each = "positive integers" if low == 1 else "integers" if low is None else f"integers >= {low}"
    return check_list(
        name,
        value,
        item=lambda n, v: check_int(n, v, low=low, fn=fn),
        expected=f"a list of {each}",
        length=length,
        fn=fn,
    )


def check_tensor(
    name: str,
    value: Any,
    *,
    shape: tuple[Any, ...] | None = None,
    expected: str = "",
    fn: str | None = None,
) -> torch.Tensor:
    """A tensor whose shape matches ``shape``: sizes, ``None`` for any size and a leading
    ``...`` for any number of leading dimensions, e.g. ``(..., 4)`` for boxes. ``expected``
    describes it in the messages."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(_invalid(fn, name, value, f"a torch.Tensor {expected}".rstrip()))
    if shape is not None:
        free = bool(shape) and shape[0] is Ellipsis
        dims = shape[1:] if free else shape
        got = tuple(value.shape)
        fits = len(got) >= len(dims) if free else len(got) == len(dims)
        tail = got[len(got) - len(dims) :] if dims else ()
        if not fits or any(d is not None and d != g for d, g in zip(dims, tail)):
            raise ValueError(f"{_where(fn)}{name} has shape {got}; expected {expected}")
    return value


def check_module(
    name: str,
    value: Any,
    *,
    needs: tuple[str, ...] = (),
    expected: str = "a torch.nn.Module",
    fn: str | None = None,
) -> Any:
    """A ``torch.nn.Module`` with the attributes ``needs`` (what the caller reads from it)."""
    if not isinstance(value, torch.nn.Module) or not all(hasattr(value, a) for a in needs):
        raise TypeError(_invalid(fn, name, value, expected))
    return value


def check_path(name: str, value: Any, *, new: bool = False, fn: str | None = None) -> Path:
    """A ``str`` or ``os.PathLike`` path. ``new``: a path to write, which must name an entry
    (``''`` or ``'.'`` is the current folder, which cannot be replaced by a new one)."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(_invalid(fn, name, value, "a path (str or os.PathLike)"))
    path = Path(value)
    if new and path.name in ("", ".."):
        raise ValueError(
            _invalid(fn, name, str(value), "a path naming the folder to write, e.g. 'runs/best'")
        )
    return path


def check_device(name: str, value: Any, *, fn: str | None = None) -> torch.device:
    """A device torch can name and this machine has (``'cpu'``, ``'cuda:0'``, ``0``...)."""
    expected = "a device such as 'cpu' or 'cuda:0' (str, int or torch.device)"
    if isinstance(value, bool) or not isinstance(value, (str, int, torch.device)):
        raise TypeError(_invalid(fn, name, value, expected))
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{_invalid(fn, name, value, expected)} ({err})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(
                f"{_invalid(fn, name, value, expected)}: this machine has {count} CUDA devices"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{_invalid(fn, name, value, expected)}: MPS is not available here")
    return device


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


def coco_box_problem(bbox: Any) -> str | None:
    """What is wrong with a ground-truth COCO ``bbox`` ([x, y, width, height]) as the end of a
    sentence (``f"has bbox={bbox}{problem}"``), or None: one rule for the COCO dataset and
    ``evaluate_coco`` (the YOLO reader refuses non-finite coordinates too)."""
    values: list[float] = []
    if isinstance(bbox, (list, tuple)):
        try:
            values = [float(v) for v in bbox]
        except (TypeError, ValueError):
            values = []
    if len(values) != 4:
        return "; expected [x, y, width, height]"
    if not all(math.isfinite(v) for v in values):
        return "; expected four finite numbers [x, y, width, height]"
    if values[2] < 0 or values[3] < 0:
        return " with a negative width or height; COCO boxes are [x, y, width, height]"
    return None
