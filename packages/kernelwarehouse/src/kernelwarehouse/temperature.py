"""The attention temperature tau: a buffer in every KW attention, and a linear schedule.

The paper takes tau linearly from 1 to 0 over the first epochs (10 with the traditional
training recipe, 20 with the advanced one) and keeps it at 0 afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_module, check_number
from .attention import KWAttention

__all__ = ["TemperatureScheduler", "get_temperature", "set_temperature"]


def set_temperature(model: nn.Module, tau: float) -> int:
    """Set tau in every KW attention of ``model``; returns how many were set.

    Example:
        >>> from kernelwarehouse import KWConv2d
        >>> set_temperature(nn.Sequential(KWConv2d(8, 8, 3)), 0.5)
        1
    """
    check_module("set_temperature", "model", model)
    if isinstance(tau, torch.Tensor) and tau.numel() == 1:
        tau = tau.item()  # a scheduler's 0-d tensor
    tau = check_number("set_temperature", "tau", tau, 0.0, 1.0)
    count = 0
    for module in model.modules():
        if isinstance(module, KWAttention):
            module.temperature.fill_(tau)
            count += 1
    return count


def get_temperature(model: nn.Module) -> float | None:
    """tau of the first KW attention of ``model`` (``None`` if it has none)."""
    check_module("get_temperature", "model", model)
    for module in model.modules():
        if isinstance(module, KWAttention):
            return float(module.temperature)
    return None


class TemperatureScheduler:
    """Linear tau schedule from ``start`` to ``end`` over ``total`` calls of :meth:`step`.

    Call :meth:`step` once per epoch (``total`` = epochs) or once per optimiser step
    (``total`` = steps); it sets ``tau = start + (end - start) * min(t / total, 1)`` for the
    step count ``t`` so far. ``state_dict`` / ``load_state_dict`` resume it.

    Example:
        >>> from kernelwarehouse import KWConv2d
        >>> model = nn.Sequential(KWConv2d(8, 8, 3))
        >>> sched = TemperatureScheduler(model, total=4)
        >>> [round(sched.step(), 2) for _ in range(5)]
        [0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def __init__(self, model: nn.Module, total: int, start: float = 1.0, end: float = 0.0) -> None:
        if not isinstance(total, int) or total < 1:
            raise ValueError(f"total={total!r} is invalid: expected a positive number of steps")
        check_module("TemperatureScheduler", "model", model)
        for name, value in (("start", start), ("end", end)):
            check_number("TemperatureScheduler", name, value, 0.0, 1.0)
        self.model = model
        self.total = total
        self.start = float(start)
        self.end = float(end)
        self.count = 0
        if set_temperature(model, self.start) == 0:
            raise ValueError("model has no KW layers: nothing to schedule")

    @property
    def value(self) -> float:
        frac = min(self.count / self.total, 1.0)
        return self.start + (self.end - self.start) * frac

    def step(self) -> float:
        """Advance one step (or epoch) and set the new tau; returns it."""
        self.count += 1
        tau = self.value
        set_temperature(self.model, tau)
        return tau

    def state_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "total": self.total, "start": self.start, "end": self.end}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.count = int(state["count"])
        self.total = int(state["total"])
        self.start = float(state["start"])
        self.end = float(state["end"])
        set_temperature(self.model, self.value)
