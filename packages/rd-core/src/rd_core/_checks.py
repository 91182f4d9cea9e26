"""Argument checks for the public entry points: each error names the function, the argument,
the value it got and what would be valid, e.g.
``compress: lr=nan is invalid: expected a finite float > 0``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def bad(fn: str, name: str, value: Any, valid: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ValueError(f"{fn}: {name}={shown} is invalid: expected {valid}")


def check_int(fn: str, name: str, value: Any, minimum: int, *, optional: bool = False) -> Any:
    if optional and value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad(fn, name, value, f"an int >= {minimum}" + (" or None" if optional else ""))
    return value


def check_float(fn: str, name: str, value: Any, *, positive: bool = True) -> float:
    """A finite real number, > 0 (``positive``) or >= 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(value) and (value > 0 if positive else value >= 0):
        return float(value)
    raise bad(fn, name, value, f"a finite float {'>' if positive else '>='} 0")


def check_bool(fn: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad(fn, name, value, "True or False")
    return value


def check_tensor(fn: str, name: str, value: Any, dims: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() not in dims:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        wanted = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{fn}: {name} must be a {wanted} tensor, got {got}")
    return value


def check_rd(fn: str, rd: Any, name: str = "rd") -> Any:
    from .module import RetrieverDictionary  # here: module imports these checks

    if not isinstance(rd, RetrieverDictionary):
        raise TypeError(f"{fn}: {name} must be a RetrieverDictionary, got {type(rd).__name__}")
    return rd


def check_module(fn: str, value: Any, name: str = "model", *, optional: bool = False) -> Any:
    if optional and value is None:
        return value
    if not isinstance(value, nn.Module):
        valid = "an nn.Module" + (" or None" if optional else "")
        raise TypeError(f"{fn}: {name} must be {valid}, got {type(value).__name__}")
    return value


def check_data(fn: str, data: Any, name: str = "data") -> Any:
    """A tensor (one batch) or an iterable of batches (a list, a DataLoader)."""
    if not isinstance(data, (torch.Tensor, Iterable)) or isinstance(data, (str, bytes)):
        raise TypeError(
            f"{fn}: {name} must be a tensor or an iterable of batches (list, DataLoader), "
            f"got {type(data).__name__}"
        )
    return data


def check_path(fn: str, name: str, value: Any) -> Path:
    """A file path (``str`` or ``os.PathLike``), not ``""`` (that would mean the current folder)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{fn}: {name} must be a file path (str or os.PathLike), got {type(value).__name__}"
        )
    if not os.fspath(value):
        raise bad(fn, name, value, "a non-empty file path")
    return Path(value)


def check_free_name(fn: str, what: str, registry: dict[str, Any], name: str, holder: str) -> None:
    """Raise ``ValueError`` if ``name`` is taken in ``registry``: registries never overwrite.

    ``holder`` describes what holds the name, for the message.
    """
    if name in registry:
        raise ValueError(
            f"{fn}: {name!r} is already in the {what} registry (held by {holder}); "
            "pick another name"
        )
