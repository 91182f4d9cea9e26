"""Publish and load Retriever-Dictionary atoms built by ``dict-init``.

A dictionary repository holds the two files ``Dictionary.save`` writes,
``dictionary.safetensors`` (the atoms, extra tensors, metadata in the header) and
``dictionary.json`` (the same metadata, for people and tools), plus a README card listing how
the atoms were made (encoder, layer, data, N, normalisation, seed, feature count).

Needs the ``dict-init`` package (the ``dictionaries`` extra; from a checkout
``pip install ./packages/dict-init "./integrations/hub[dictionaries]"``).

Example:
    >>> import tempfile, torch
    >>> from dict_init import Dictionary
    >>> from hub_knowledge import load_dictionary, save_dictionary_for_hub
    >>> atoms = Dictionary(torch.randn(16, 8), {"encoder": {"model": "resnet18"}, "seed": 0})
    >>> folder = save_dictionary_for_hub(atoms, tempfile.mkdtemp(), name="me/rd-dict-16")
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'dictionary.json', 'dictionary.safetensors']
    >>> again = load_dictionary(folder)
    >>> again.num_atoms, bool(torch.equal(again.atoms, atoms.atoms))
    (16, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import CommitInfo, ModelCard, ModelCardData

from ._checks import as_path, check_text
from ._files import atomic_folder, write_text_atomic
from .checkpoint import CheckpointError, read_json, read_safetensors_metadata
from .load import resolve_files
from .methods import method_for
from .push import push_folder

if TYPE_CHECKING:
    from dict_init import Dictionary

__all__ = [
    "DICTIONARY_FILES",
    "dictionary_card",
    "load_dictionary",
    "push_dictionary_to_hub",
    "save_dictionary_for_hub",
]

DICTIONARY_WEIGHTS = "dictionary.safetensors"
DICTIONARY_METADATA = "dictionary.json"
DICTIONARY_FILES = (DICTIONARY_WEIGHTS, DICTIONARY_METADATA)


def _dict_init():
    try:
        import dict_init
    except ImportError:
        raise ImportError(
            "dictionaries need the dict-init package (the hub-knowledge[dictionaries] extra; "
            "from a checkout: pip install ./packages/dict-init)"
        ) from None
    return dict_init


def _check(dictionary: Any) -> None:
    cls = _dict_init().Dictionary
    if not isinstance(dictionary, cls):
        raise TypeError(
            f"dictionary={type(dictionary).__name__} must be a dict_init.Dictionary "
            "(Dictionary(atoms, metadata) or Dictionary.load(path))"
        )


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def dictionary_card(
    dictionary: Dictionary,
    *,
    name: str,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    tags: Sequence[str] = (),
    description: str | None = None,
) -> str:
    """README.md text for a dictionary repository: Hub metadata plus how the atoms were made."""
    _dict_init()
    method = method_for("dict_init")  # dict-init describes the method its atoms are for
    data = ModelCardData(
        license=license,
        tags=list(dict.fromkeys([*method.tags, method.tag, "knowledge-vision", *tags])),
        datasets=list(datasets) or None,
    )
    lines = [f"# {name.split('/')[-1]}", ""]
    lines.append(
        description
        or f"{dictionary.num_atoms} dictionary atoms of dimension {dictionary.dim} for a "
        "YOLO-RD Retriever-Dictionary, built with dict-init."
    )
    lines += ["", "## How the atoms were made", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_flat(v)} |" for k, v in sorted(dictionary.metadata.items())]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import timm, timm_knowledge",
        "from hub_knowledge import load_dictionary",
        "",
        f'atoms = load_dictionary("{name}")',
        'model = timm.create_model("rd_resnet50", num_atoms=atoms.num_atoms, dictionary=atoms)',
        "```",
        "",
        "## Citation",
        "",
        f"[{method.paper}]({method.paper_url})" if method.paper_url else method.paper,
        "",
        f"```bibtex\n{method.citation}\n```",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def save_dictionary_for_hub(
    dictionary: Dictionary,
    folder: str | os.PathLike,
    *,
    name: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    tags: Sequence[str] = (),
    description: str | None = None,
) -> Path:
    """Write ``dictionary`` and its card into ``folder`` (as a whole, atomically); return it."""
    _check(dictionary)
    folder = as_path("folder", folder)
    check_text("name", name, optional=True)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a directory")
    card = dictionary_card(
        dictionary,
        name=name or folder.resolve().name,
        license=license,
        datasets=datasets,
        tags=tags,
        description=description,
    )
    # written as a whole: a sibling temporary folder replaces ``folder`` in one step
    with atomic_folder(folder) as tmp:
        dictionary.save(tmp / DICTIONARY_WEIGHTS)  # writes dictionary.json beside it
        write_text_atomic(tmp / "README.md", card)
    return folder


def push_dictionary_to_hub(
    dictionary: Dictionary,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Add dictionary",
    endpoint: str | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Save ``dictionary`` as :func:`save_dictionary_for_hub` does and commit it to ``repo_id``."""
    import tempfile

    _check(dictionary)
    with tempfile.TemporaryDirectory(prefix="hub-knowledge-dict-") as tmp:
        save_dictionary_for_hub(dictionary, tmp, name=repo_id, **card_kwargs)
        return push_folder(
            tmp,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            endpoint=endpoint,
        )


def load_dictionary(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Dictionary:
    """The ``dict_init.Dictionary`` in a folder, ``org/name`` or ``hf-hub:org/name``.

    Raises:
        CheckpointError: a truncated file, or one that holds no ``atoms``.
    """
    dict_init = _dict_init()
    files = resolve_files(
        source, revision=revision, cache_dir=cache_dir, token=token, filenames=DICTIONARY_FILES
    )
    weights = files[DICTIONARY_WEIGHTS]
    header = read_safetensors_metadata(weights)  # raises on a truncated file
    if header.get("format", "").split("/")[0] != "dict-init":
        raise CheckpointError(
            f"{weights} is not a dict-init dictionary (format={header.get('format')!r}); "
            "a model repository? load it with hub_knowledge.load"
        )
    read_json(files[DICTIONARY_METADATA])  # a corrupt companion is named before dict-init reads it
    return dict_init.Dictionary.load(weights)
