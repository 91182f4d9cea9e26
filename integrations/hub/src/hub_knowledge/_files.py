"""Atomic writes: a reader never sees a half-written file, nor a half-written folder.

- :func:`atomic_path` writes one file under a temporary name beside it and renames it over the
  destination (a same-filesystem rename, atomic on POSIX and Windows).
- :func:`atomic_folder` writes a whole folder (weights, ``config.json``, card) into a sibling
  temporary folder and swaps it in at once, so a writer killed between two files leaves the old
  folder loadable.

Both respect the umask (files 0644, folders 0755 by default; never ``mkstemp``'s 0600), and
both remove what a killed writer left behind (``.<name>.<pid>.<random>.tmp`` whose process is
gone) the next time the same destination is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "atomic_path",
    "remove_stale",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(path: Path, *, folder: bool) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _tmp_prefix(path: Path) -> str:
    # the writer's pid in the name lets a later write tell a dead writer's leftover from a live one
    return f".{path.name}.{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files / folders that killed writers of ``path`` left beside it.

    Only leftovers whose writer process no longer exists are removed, so a concurrent writer is
    never disturbed. Returns what was removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        pid = entry.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _writer_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination folder so that the final ``os.replace`` is a
    same-filesystem rename. The file ends with the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _default_mode(tmp, folder=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------ whole folders
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if the
    platform or filesystem cannot."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _carry_over(old: Path, new: Path) -> None:
    """Give ``new`` the entries of ``old`` it does not write itself (a user's own files in the
    folder survive the swap); files are hard-linked where the filesystem allows."""
    for entry in old.iterdir():
        target = new / entry.name
        if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX):
            continue  # a killed writer's temporary, not the user's
        if target.exists() or target.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
            continue
        try:
            os.link(entry, target, follow_symlinks=False)
        except OSError:
            shutil.copy2(entry, target, follow_symlinks=False)


def _swap_in(tmp: Path, folder: Path) -> None:
    if not folder.exists():
        os.rename(tmp, folder)  # atomic: the folder appears complete
        return
    _carry_over(folder, tmp)
    if _exchange(tmp, folder):
        shutil.rmtree(tmp)  # now the old folder; if killed here, the next write removes it
        return
    # no atomic exchange (not Linux): move the old folder aside, the new one in, drop the old;
    # the folder is missing only between the two renames
    aside = folder.with_name(f"{_tmp_prefix(folder)}old{_TMP_SUFFIX}")
    os.rename(folder, aside)
    os.rename(tmp, folder)
    shutil.rmtree(aside)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling temporary folder; when the block succeeds it replaces ``folder``
    as a whole (entries of the old folder the block did not write are kept).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> target = Path(tempfile.mkdtemp()) / "repo"
        >>> with atomic_folder(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("a")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a directory")
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(folder)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(folder), suffix=_TMP_SUFFIX, dir=folder.parent))
    try:
        yield tmp
        _default_mode(tmp, folder=True)
        _swap_in(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
