"""Argument checks shared by the public entry points.

Every error names the argument, the value it got and what would be valid, so a user can fix the
call without reading the source.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def bad_value(name: str, value: Any, valid: str) -> ValueError:
    """A ``ValueError`` in the project's format: argument, value, what is valid."""
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ValueError(f"{name}={shown} is invalid: expected {valid}.")


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad_value(name, value, "a positive integer")
    return value


def check_int(name: str, value: Any) -> int:
    """Any integer (a seed): ``bool`` is refused, it is almost always a slip."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_value(name, value, "an integer")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    if value not in choices:
        raise bad_value(name, value, f"one of {choices}")
    return value


def check_path(name: str, value: Any) -> Path:
    """A file or folder path: ``str`` or ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)):
        raise bad_value(name, value, "a path (str or os.PathLike)")
    return Path(value)


def check_finite(name: str, x: torch.Tensor, rows_per_check: int = 65536) -> None:
    """Raise when ``x`` holds NaN or infinity, saying how many and where the first one is.

    The check is a min / max per block of rows (NaN and infinities propagate to them), so it
    allocates nothing the size of ``x``: ``torch.isfinite`` would build a same-sized mask, and on
    CPU an ``abs`` copy of the block as well. Only when a block fails is the mask built, to say
    where.
    """
    if x.numel() == 0 or not (x.is_floating_point() or x.is_complex()):
        return
    flat = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
    for start in range(0, flat.shape[0], rows_per_check):
        block = flat[start : start + rows_per_check]
        if not x.is_complex():
            low, high = torch.aminmax(block)
            if bool(torch.isfinite(low) & torch.isfinite(high)):
                continue
        elif bool(torch.isfinite(block).all()):
            continue
        bad = ~torch.isfinite(x)
        count = int(bad.sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} holds {count} non-finite value(s) (NaN or inf), first at index {first}: "
            "expected finite features; check the encoder's input images and normalisation."
        )


def check_matrix(name: str, x: Any) -> torch.Tensor:
    """Return ``x`` as a floating 2-D tensor ``[n, d]`` or raise."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as error:
            raise bad_value(name, type(x).__name__, "a 2-D tensor or array [n, d]") from error
    if x.ndim != 2:
        raise bad_value(f"{name}.shape", tuple(x.shape), "a 2-D tensor [n, d]")
    if not x.is_floating_point():
        x = x.float()
    return x


def deprecated_alias(fn: str, old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of ``new`` when a caller may still pass it under its old name ``old``.

    ``old_value`` is what came in under the old name (``None``: not passed). Passing both raises
    ``TypeError``; the old name alone works with a ``FutureWarning`` (for one release).
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{fn}: pass '{new}' only ('{old}' is its deprecated name)")
    warnings.warn(f"{fn}: '{old}' is deprecated, use '{new}'", FutureWarning, stacklevel=3)
    return old_value
