"""Atomic file writes: every artifact goes to a temporary name in the same folder, then is renamed.

A crash or an interrupted run therefore never leaves a half-written file under the final name.
Temporary files are ``.<name>.<pid>-<random>.tmp``, created with mode ``0o666`` so the umask
decides the final permissions (``0644`` under the usual ``022``; ``mkstemp`` would leave
``0600``). Leftovers of writers that were killed are removed by the next write to the same name
(a leftover counts as stale when the process in its name no longer runs).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

__all__ = ["atomic_write", "atomic_write_all", "remove_stale_temporaries"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.<pid>-*.tmp`` beside ``path`` left by writers that are gone."""
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        tag = leftover.name[len(path.name) + 2 : -len(".tmp")]
        pid = tag.partition("-")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # a writer that is still running (this process's other threads too)
        try:
            leftover.unlink()
            removed.append(leftover)
        except FileNotFoundError:  # removed by someone else meanwhile
            pass
    return removed


def _temporary(path: Path) -> Path:
    """A new empty file beside ``path`` that the umask governs (``O_EXCL``: never shared)."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            raise OSError(
                error.errno, f"cannot write {path} ({error.strerror} in {path.parent})"
            ) from None
        os.close(fd)
        return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_all(writes: Iterable[tuple[str | os.PathLike, Callable[[Path], None]]]) -> None:
    """Write several files as one step: all to temporary names first, then rename in order.

    Nothing is renamed until every file is complete, so a failure or a kill while writing
    leaves every final name as it was. The renames run in the order given: put the file that
    makes the set valid (the one the reader trusts) last.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, write in writes:
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(target)
            tmp = _temporary(target)
            staged.append((tmp, target))
            write(tmp)
            _fsync(tmp)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder, atomic)."""
    atomic_write_all([(path, write)])
    return Path(path)


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def json_writer(obj: Any) -> Callable[[Path], None]:
    text = json_text(obj)
    return lambda tmp: tmp.write_text(text)


def safetensors_writer(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Callable[[Path], None]:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # bytes written into our own temporary file: safetensors' save_file makes its own
    # temporary (mode 0600, a name the stale-file cleanup does not know) and renames it
    return lambda tmp: tmp.write_bytes(save(tensors, metadata=metadata))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json_writer(obj))


def write_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> Path:
    return atomic_write(path, safetensors_writer(tensors, metadata))
