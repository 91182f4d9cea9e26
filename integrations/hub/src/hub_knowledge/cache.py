"""Place a saved folder into a Hugging Face cache, so ``hf-hub:`` names resolve offline.

For air-gapped machines: a folder written by :func:`hub_knowledge.save_for_hub` (or copied from
a Hub repository) is laid out as ``huggingface_hub`` lays out downloads (content-addressed
``blobs/``, a ``snapshots/<commit>/`` tree of links, ``refs/<revision>``), after which
``HF_HUB_OFFLINE=1`` and ``timm.create_model("hf-hub:<repo_id>", pretrained=True)`` find it.

Example:
    >>> import tempfile, timm
    >>> from hub_knowledge import add_to_cache, save_for_hub
    >>> folder = save_for_hub(timm.create_model("resnet10t"), tempfile.mkdtemp())
    >>> snapshot = add_to_cache(folder, "me/resnet10t", cache_dir=tempfile.mkdtemp())
    >>> snapshot.parent.parent.name
    'models--me--resnet10t'
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name

from ._checks import as_path, check_text
from ._files import atomic_path, write_text_atomic
from .checkpoint import check_folder

__all__ = ["add_to_cache"]

_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        # relative, as huggingface_hub makes them, so the cache can be moved as a whole
        target.symlink_to(os.path.relpath(blob, target.parent))
    except OSError:  # no symlinks (Windows without developer mode): copy, as the client does
        shutil.copy2(blob, target)


def add_to_cache(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str = "main",
    cache_dir: str | os.PathLike | None = None,
    repo_type: str = "model",
) -> Path:
    """Copy every file of ``folder`` into the cache as repository ``repo_id`` at ``revision``.

    The commit id is derived from the content (sha1 over paths and sha256 digests), so the same
    folder always maps to the same snapshot. Returns the snapshot folder.
    """
    folder = as_path("folder", folder)
    check_text("repo_id", repo_id)
    check_text("revision", revision)
    check_text("repo_type", repo_type)
    if cache_dir is not None:
        cache_dir = as_path("cache_dir", cache_dir)
    if not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory")
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id={repo_id!r} must be 'org/name'")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"folder={str(folder)!r} is empty")
    check_folder(folder)  # a broken file would only fail at a later load, from the cache
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)

    digests = {p.relative_to(folder).as_posix(): _sha256(p) for p in files}
    commit = hashlib.sha1(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(digests.items())).encode()
    ).hexdigest()
    snapshot = storage / "snapshots" / commit
    for path in files:
        name = path.relative_to(folder).as_posix()
        blob = storage / "blobs" / digests[name]
        if not blob.exists():
            with atomic_path(blob) as tmp:
                shutil.copyfile(path, tmp)
        _link_or_copy(blob, snapshot / name)
    # the ref last: until it names the snapshot, lookups do not see a partial one
    write_text_atomic(storage / "refs" / revision, commit)
    return snapshot
