"""Atomic writes: a file or a whole folder appears complete or not at all.

Temporary names start with ``.`` and end in ``.tmp`` beside the target, so a write killed
half-way leaves only such a name, which the next write to the same target removes. Files get
the permissions the umask gives (``mkstemp`` alone would make them 0600).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _clean_stale(target: Path) -> None:
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_folder_atomic(folder: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_folder)`` on a new sibling folder, then swap it in for ``folder``.

    The old folder is renamed aside before the new one takes its name and is removed after, so
    at every instant ``folder`` is either the complete old set of files or the complete new
    one (between the two renames only the aside copy exists; :func:`existing_folder` finds it).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recovered = existing_folder(folder)
    if recovered != folder and recovered.is_dir():  # a swap was killed between its renames
        os.replace(recovered, folder)
    _clean_stale(folder)
    tag = uuid.uuid4().hex[:8]
    tmp = folder.parent / f".{folder.name}.{tag}.tmp"
    tmp.mkdir(mode=_umask_mode(0o777))
    try:
        fill(tmp)
        for child in tmp.iterdir():
            os.chmod(child, _umask_mode(0o666))
        aside = folder.parent / f".{folder.name}.{tag}.old.tmp"
        if folder.exists():
            os.replace(folder, aside)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return folder


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries killed writes left in ``folder`` (not recursive); returns them.

    A write that is never repeated (the best checkpoint of an epoch no later epoch beats, the
    last epoch's plots) never cleans its own stale temporaries, so a finished run does it. The
    complete old copy of a folder whose swap was killed between its two renames is renamed back
    to its name when nothing took that name, never deleted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for stale in sorted(folder.glob(".*.tmp")):
        name = _target_name(stale)
        if stale.name.endswith(".old.tmp") and stale.is_dir() and name is not None:
            target = folder / name
            if not target.exists():
                os.replace(stale, target)
                continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _target_name(stale: Path) -> str | None:
    """``best`` for ``.best.1a2b3c4d.old.tmp``: the name before the tag of a folder swap."""
    parts = stale.name[1:].removesuffix(".old.tmp").rsplit(".", 1)
    return parts[0] if len(parts) == 2 and parts[0] else None


def existing_folder(folder: str | os.PathLike) -> Path:
    """``folder``, or the complete old copy a swap killed between its two renames left."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    aside = sorted(folder.parent.glob(f".{folder.name}.*.old.tmp"))
    return aside[-1] if aside else folder
