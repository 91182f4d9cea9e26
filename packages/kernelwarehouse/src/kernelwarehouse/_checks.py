"""Argument checks of the public entry points: each error names the function, the argument, the
value it got and what is valid (``TypeError`` for a wrong type, ``ValueError`` for a bad
value), e.g. ``KWConv2d: in_channels=0 is invalid: expected an int >= 1``. They run when a
layer is built or a function is called, never in a forward pass."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def invalid(fn: str, name: str, value: Any, valid: str, kind: type = ValueError) -> Exception:
    return kind(f"{fn}: {name}={_shown(value)} is invalid: expected {valid}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(fn: str, name: str, value: Any, minimum: int = 1) -> int:
    """An ``int`` (not a ``bool``) ``>= minimum``."""
    valid = f"an int >= {minimum}"
    if not is_int(value):
        raise invalid(fn, name, value, valid, TypeError)
    if value < minimum:
        raise invalid(fn, name, value, valid)
    return value


def check_number(
    fn: str, name: str, value: Any, low: float, high: float | None = None, *, open_low=False
) -> float:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    bounds = f"{'(' if open_low else '['}{low}, {'inf)' if high is None else f'{high}]'}"
    valid = f"a finite number in {bounds}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(fn, name, value, valid, TypeError)
    number = float(value)
    if (
        not math.isfinite(number)
        or (number <= low if open_low else number < low)
        or (high is not None and number > high)
    ):
        raise invalid(fn, name, value, valid)
    return number


def check_module(fn: str, name: str, value: Any) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise invalid(fn, name, value, "a torch.nn.Module", TypeError)
    return value


def check_tensor(fn: str, name: str, value: Any, min_dims: int = 1) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise invalid(fn, name, value, f"a tensor with >= {min_dims} dims", TypeError)
    if value.dim() < min_dims:
        raise invalid(fn, name, value, f"a tensor with >= {min_dims} dims")
    return value


def check_ints(fn: str, name: str, value: Any, dims: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``dims`` ints (a 1-tuple is repeated), each ``>= minimum``."""
    values = (value,) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) == 1:
        values = values * dims
    valid = f"an int >= {minimum} or {dims} such ints"
    if len(values) != dims or not all(is_int(v) for v in values):
        raise invalid(fn, name, value, valid, TypeError if len(values) == dims else ValueError)
    if any(v < minimum for v in values):
        raise invalid(fn, name, value, valid)
    return values
