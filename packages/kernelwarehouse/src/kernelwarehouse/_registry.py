"""The one rule every registry of the package follows: a taken name is refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_new_entry(
    fn: str, what: str, registry: Mapping[str, Any], name: Any, entry: Any, arg: str
) -> None:
    """Raise unless ``name`` is a free non-empty string and ``entry`` (the argument ``arg``)
    is callable.

    >>> check_new_entry("register_x", "x", {"a": len}, "b", len, "forward")
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"{fn}: name={name!r} must be a non-empty string")
    if not callable(entry):
        raise TypeError(f"{fn}({name!r}): {arg}={entry!r} is not callable")
    if name in registry:
        held = registry[name]
        holder = f"{getattr(held, '__module__', '?')}.{getattr(held, '__qualname__', held)!s}"
        raise ValueError(
            f"{fn}: {name!r} is already in the {what} registry (held by {holder}); "
            "pick another name"
        )
