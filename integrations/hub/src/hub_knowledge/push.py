"""Publish to the Hugging Face Hub through ``huggingface_hub``'s own client.

Everything :func:`hub_knowledge.save_for_hub` writes goes up in one commit, so a repository never
holds new weights beside an old config.

Example (needs a Hub token and network, so not run here):
    >>> import timm
    >>> from hub_knowledge import push_to_hub
    >>> model = timm.create_model("resnet10t", num_classes=10)
    >>> push_to_hub(model, "my-org/resnet10t-digits", metrics={"top1": 97.1})  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from torch import nn

from .checkpoint import check_folder
from .save import save_for_hub

__all__ = ["push_folder", "push_to_hub"]


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Add model",
    create_pr: bool = False,
    endpoint: str | None = None,
    repo_type: str = "model",
) -> CommitInfo:
    """Create ``repo_id`` if needed and commit every file of ``folder`` to it in one commit."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"folder={str(folder)!r} is empty; nothing to push")
    check_folder(folder)  # before the network: a broken file is named, not a connection error
    api = HfApi(endpoint=endpoint, token=token, library_name="hub-knowledge")
    # create_repo may resolve a bare name to "<user>/<name>"
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type).repo_id
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in files
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
        repo_type=repo_type,
    )


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Add model",
    create_pr: bool = False,
    endpoint: str | None = None,
    save: Callable[..., Path] = save_for_hub,
    **save_kwargs: Any,
) -> CommitInfo:
    """Save ``model`` as :func:`hub_knowledge.save_for_hub` does and commit it to ``repo_id``.

    ``save_kwargs`` (metrics, datasets, lineage, ...) go to ``save``; ``model_name`` defaults to
    ``repo_id``. ``endpoint`` selects another Hub deployment (default: ``HF_ENDPOINT``).
    """
    if not isinstance(repo_id, str) or not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"repo_id={repo_id!r} must be 'name' or 'org/name'")
    save_kwargs.setdefault("model_name", repo_id)
    with tempfile.TemporaryDirectory(prefix="hub-knowledge-") as tmp:
        save(model, tmp, **save_kwargs)
        return push_folder(
            tmp,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            endpoint=endpoint,
        )
