"""The dictionary artifact: atoms ``[N, f]`` in safetensors plus JSON metadata.

``save("atoms.safetensors")`` writes ``atoms.safetensors`` (the ``atoms`` tensor, any extra
tensors such as normalisation statistics or the projection matrix, and the metadata as a JSON
string in the safetensors header) and ``atoms.json`` beside it (the same metadata, readable by
people and tools). Both are written atomically. rd-core's ``RetrieverDictionary`` takes a
``Dictionary`` directly: it reads ``.atoms``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ._io import write_json, write_safetensors
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
        """Write ``path`` (safetensors) and its ``.json`` metadata, atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise bad_value("path", str(path), "a file name ending in .safetensors")
        meta = {"format": FORMAT, **self.metadata}
        tensors = {ATOMS_KEY: self.atoms, **self.extras}
        write_safetensors(path, tensors, {"format": FORMAT, "metadata": json.dumps(meta)})
        write_json(metadata_path(path), meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dictionary:
        """Read a dictionary written by :meth:`save` (safetensors only, no pickle)."""
        path = Path(path)
        if not path.is_file():
            raise bad_value("path", str(path), "an existing .safetensors dictionary file")
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if ATOMS_KEY not in keys:
                raise bad_value(
                    "path", str(path), f"a safetensors file with an '{ATOMS_KEY}' tensor"
                )
            tensors = {k: f.get_tensor(k) for k in keys}
            header = f.metadata() or {}
        json_path = metadata_path(path)
        if json_path.is_file():
            meta = json.loads(json_path.read_text())
        else:
            meta = json.loads(header.get("metadata", "{}"))
        meta.pop("format", None)
        atoms = tensors.pop(ATOMS_KEY)
        return cls(atoms, meta, tensors)
