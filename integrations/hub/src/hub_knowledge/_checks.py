"""Argument checks shared by the public functions: a bad value is named, with what is valid."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["as_path", "check_mapping", "check_module", "check_names", "check_text"]


def as_path(name: str, value: Any) -> Path:
    """``value`` as a ``Path``; a non-path or an empty string is a ``TypeError`` / ``ValueError``
    naming the argument."""
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={value!r} must be a path (str or os.PathLike)")
    if os.fspath(value) == "":
        raise ValueError(f"{name}='' is invalid: expected a path")
    return Path(value)


def check_text(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        valid = "a non-empty string" + (" or None" if optional else "")
        raise TypeError(f"{name}={value!r} must be {valid}")


def check_mapping(name: str, value: Any) -> None:
    """``None`` or a mapping with string keys."""
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"{name}={value!r} must be a dict or None")


def check_names(name: str, value: Any) -> None:
    """``None`` or a list of strings."""
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}={value!r} must be a list of strings or None")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name}: entries {bad!r} must be strings")


def check_module(name: str, value: Any) -> None:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name}={type(value).__name__} must be a torch.nn.Module")
