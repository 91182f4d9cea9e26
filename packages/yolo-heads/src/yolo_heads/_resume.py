"""A run folder's best checkpoint across restarts.

Each epoch that improves writes ``weights/last`` (its trainer state records ``best_epoch``)
and then ``weights/best``; a kill between the two leaves a ``last`` that knows of a best epoch
``best`` does not hold. ``last`` holds the same weights and config that ``best`` was being
written with, so a resumed run copies them over (:func:`restore_best`).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from ._files import existing_folder, write_folder_atomic
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch a training run recorded in a checkpoint folder, or None (absent or unreadable)."""
    try:
        epoch = read_config(existing_folder(folder)).get("knowledge", {}).get("epoch")
    except (OSError, ValueError):
        return None
    return epoch if isinstance(epoch, int) else None


def restore_best(
    last: Path, state: dict[str, Any], *, write: bool = True
) -> tuple[Path | None, int | None]:
    """The run's best checkpoint folder and its epoch, as ``last``'s trainer ``state`` says.

    When ``best`` lacks the epoch ``state`` names and that epoch is the one ``last`` holds, the
    kill came between the two writes: ``best`` is written from ``last`` (``write=False``: not).

    >>> restore_best(Path("/no/run/weights/last"), {"epoch": 1, "best_epoch": None})
    (None, None)
    """
    best = last.parent / "best"
    found = checkpoint_epoch(best)
    wanted = state.get("best_epoch")
    if "best_epoch" not in state:  # a state saved before best_epoch was recorded
        return (best if found is not None else None), found
    if wanted is None or found == wanted:
        return (best if found is not None else None), found
    if wanted == state["epoch"] and checkpoint_epoch(last) == wanted:
        if write:
            source = existing_folder(last)

            def fill(tmp: Path) -> None:
                for name in (CONFIG_NAME, WEIGHTS_NAME):
                    shutil.copyfile(source / name, tmp / name)

            write_folder_atomic(best, fill)
        return best, wanted
    warnings.warn(
        f"resume: {str(last)!r} records epoch {wanted} as the best, but {str(best)!r} holds "
        f"epoch {found} and cannot be rebuilt (it was changed outside the run)",
        stacklevel=3,
    )
    return (best if found is not None else None), found
