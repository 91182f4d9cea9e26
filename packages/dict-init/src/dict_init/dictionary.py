"""The dictionary artifact: atoms ``[N, f]`` in safetensors plus JSON metadata.

``save("atoms.safetensors")`` writes ``atoms.safetensors`` (the ``atoms`` tensor, any extra
tensors such as normalisation statistics or the projection matrix, and the metadata as a JSON
string in the safetensors header) and ``atoms.json`` beside it (the same metadata, readable by
people and tools). The two are written as a set: both go to temporary names first, then the
JSON is renamed into place and the safetensors file last, so a save that is interrupted at any
point leaves the previous safetensors file whole. The metadata inside the safetensors file is
the authority: :meth:`Dictionary.load` checks the JSON against it and, when they differ (a save
killed between the two renames, or a hand-edited JSON), warns and uses the embedded copy.
rd-core's ``RetrieverDictionary`` takes a ``Dictionary`` directly: it reads ``.atoms``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ._io import atomic_write_all, json_writer, safetensors_writer
from ._validation import bad_value, check_finite

FORMAT = "dict-init/dictionary-v1"
ATOMS_KEY = "atoms"


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON file beside a dictionary's safetensors file."""
    return Path(path).with_suffix(".json")


@dataclass
class Dictionary:
    """Dictionary atoms and how they were made.

    Attributes:
        atoms: ``[N, f]`` float32 atoms, one per row.
        metadata: encoder, layer, data, N, feature count, normalisation, seed, ...
        extras: other tensors kept with the atoms (normalisation statistics, projection).

    Example:
        >>> import tempfile, torch
        >>> d = Dictionary(torch.randn(8, 4), {"seed": 0})
        >>> path = d.save(tempfile.mkdtemp() + "/atoms.safetensors")
        >>> e = Dictionary.load(path)
        >>> e.num_atoms, e.dim, bool(torch.equal(e.atoms, d.atoms)), e.metadata["seed"]
        (8, 4, True, 0)
    """

    atoms: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.atoms, torch.Tensor) or self.atoms.ndim != 2:
            shape = tuple(self.atoms.shape) if isinstance(self.atoms, torch.Tensor) else None
            raise bad_value("atoms", shape or type(self.atoms).__name__, "a tensor [N, f]")
        if self.atoms.shape[0] == 0 or self.atoms.shape[1] == 0:
            raise bad_value("atoms.shape", tuple(self.atoms.shape), "N >= 1 atoms of f >= 1")
        self.atoms = self.atoms.detach().float().cpu().contiguous()
        check_finite("atoms", self.atoms)
        if not isinstance(self.metadata, Mapping):
            raise bad_value(
                "metadata", self.metadata, "a mapping (dict) of JSON-serialisable values"
            )
        self.metadata = {**self.metadata, "num_atoms": self.num_atoms, "feature_dim": self.dim}

    @property
    def num_atoms(self) -> int:
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        return self.atoms.shape[1]

    def __len__(self) -> int:
        return self.num_atoms

    def __repr__(self) -> str:
        encoder = self.metadata.get("encoder", {})
        name = encoder.get("model") if isinstance(encoder, dict) else encoder
        return f"Dictionary(num_atoms={self.num_atoms}, dim={self.dim}, encoder={name!r})"

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (safetensors) and its ``.json`` metadata as one atomic set.

        Leftover temporary files of earlier saves that were killed are removed first; the
        files get the permissions the umask allows (``0644`` by default).
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            raise bad_value("path", str(path), "a file name ending in .safetensors")
        meta = json.loads(json.dumps({"format": FORMAT, **self.metadata}, default=str))
        tensors = {ATOMS_KEY: self.atoms, **self.extras}
        header = {"format": FORMAT, "metadata": json.dumps(meta, sort_keys=True)}
        # the safetensors file (the authority on load) is renamed last
        atomic_write_all(
            [(metadata_path(path), json_writer(meta)), (path, safetensors_writer(tensors, header))]
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dictionary:
        """Read a dictionary written by :meth:`save` (safetensors only, no pickle).

        Raises:
            ValueError: ``path`` is missing, is not a readable safetensors file (truncated,
                another format), holds no ``atoms`` tensor, or its ``.json`` is not valid JSON.
        """
        path = Path(path)
        if not path.is_file():
            raise bad_value("path", str(path), "an existing .safetensors dictionary file")
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = f.keys()  # a safe_open handle is not iterable
                tensors = {k: f.get_tensor(k) for k in keys}
                header = f.metadata() or {}
        except SafetensorError as error:
            raise ValueError(
                f"Dictionary.load: {path} is not a readable safetensors file ({error})"
            ) from None
        if ATOMS_KEY not in tensors:
            raise bad_value("path", str(path), f"a safetensors file with an '{ATOMS_KEY}' tensor")
        meta = None
        if "metadata" in header:
            meta = _parse_metadata(header["metadata"], f"the metadata inside {path}")
        json_path = metadata_path(path)
        if json_path.is_file():
            try:
                text = json_path.read_text()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"Dictionary.load: cannot read {json_path} ({error})") from None
            companion = _parse_metadata(text, str(json_path), companion_of=path)
            if meta is None:
                meta = companion
            elif json.dumps(companion, sort_keys=True) != json.dumps(meta, sort_keys=True):
                warnings.warn(
                    f"Dictionary.load: {json_path} does not match the metadata inside {path} "
                    "(a save interrupted between its two files, or an edited JSON); using the "
                    "metadata inside the safetensors file",
                    stacklevel=2,
                )
        meta = dict(meta or {})
        meta.pop("format", None)
        atoms = tensors.pop(ATOMS_KEY)
        return cls(atoms, meta, tensors)


def _parse_metadata(text: str, where: str, companion_of: Path | None = None) -> dict[str, Any]:
    """``text`` as a JSON object, or a ValueError that names ``where`` it came from."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        meta, reason = None, f"not valid JSON: {error}"
    else:
        reason = f"a JSON {type(meta).__name__}, not an object"
    if isinstance(meta, dict):
        return meta
    hint = ""
    if companion_of is not None:
        hint = f"; restore it, or delete it to use the copy of the metadata inside {companion_of}"
    raise ValueError(f"Dictionary.load: {where} is {reason}{hint}")
