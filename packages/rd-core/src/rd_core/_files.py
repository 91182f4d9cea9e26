"""Atomic file writes: a temporary name in the same folder, then a rename.

Temporary files are ``.<name>.<pid>-<random>.tmp``, created with mode ``0o666`` so the umask
decides the final permissions (``0644`` under the usual ``022``; ``mkstemp`` would leave
``0600``). Leftovers of writers that were killed (the process in the name no longer runs) are
removed by the next write to the same name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "remove_stale_temporaries"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.<pid>-*.tmp`` beside ``path`` left by writers that are gone."""
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        pid = leftover.name[len(path.name) + 2 : -len(".tmp")].partition("-")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # a writer that is still running
        try:
            leftover.unlink()
            removed.append(leftover)
        except FileNotFoundError:  # removed by someone else meanwhile
            pass
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then rename it to ``path``.

    ``write`` must write into ``tmp`` (opening it for writing keeps its permissions), not
    replace it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
