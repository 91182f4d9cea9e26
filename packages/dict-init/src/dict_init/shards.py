"""Features on disk: safetensors shards plus a JSON manifest, written and read in chunks.

``extract_features`` writes here so that feature sets larger than memory can be clustered;
every shard and the manifest are written atomically. Under ``torch.distributed`` each rank
writes its own shards (``rank<r>-<i>.safetensors``) and rank 0 merges the manifests, so the
global row order is rank 0's rows, then rank 1's, and so on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ._io import write_json, write_safetensors
from ._validation import bad_value, check_path

MANIFEST = "manifest.json"
FORMAT = "dict-init/features-v1"


class ShardWriter:
    """Buffer rows and flush them as shards of ``shard_size`` rows.

    Example:
        >>> import tempfile, torch
        >>> root = tempfile.mkdtemp()
        >>> writer = ShardWriter(root, shard_size=3)
        >>> writer.add(torch.randn(5, 2), torch.arange(5))
        >>> FeatureShards.from_parts(root, [writer.close()]).num_vectors
        5
    """

    def __init__(self, root: str | os.PathLike, shard_size: int = 65536, prefix: str = "rank0"):
        self.root = check_path("root", root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.prefix = prefix
        self._rows: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._buffered = 0
        self.shards: list[dict[str, Any]] = []
        self.dim: int | None = None

    def add(self, rows: torch.Tensor, source_index: torch.Tensor) -> None:
        """Append ``rows [n, d]`` whose items came from ``source_index [n]`` (image or text)."""
        if self.dim is None:
            self.dim = rows.shape[1]
        elif rows.shape[1] != self.dim:
            raise bad_value("rows.shape", tuple(rows.shape), f"[n, {self.dim}] like earlier rows")
        self._rows.append(rows.detach().to("cpu", torch.float32))
        self._index.append(source_index.detach().to("cpu", torch.int64))
        self._buffered += rows.shape[0]
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, count: int) -> None:
        rows, index = torch.cat(self._rows), torch.cat(self._index)
        name = f"{self.prefix}-{len(self.shards):05d}.safetensors"
        write_safetensors(
            self.root / name, {"features": rows[:count], "source_index": index[:count]}
        )
        self.shards.append({"file": name, "rows": count})
        self._rows, self._index = [rows[count:]], [index[count:]]
        self._buffered -= count

    def close(self) -> dict[str, Any]:
        """Flush what is left; return this writer's part of the manifest."""
        if self._buffered:
            self._flush(self._buffered)
        return {"dim": self.dim, "shards": self.shards}


class FeatureShards:
    """A folder of feature shards as a :class:`~dict_init.sources.VectorSource`.

    Only one shard is in memory at a time while iterating.

    Args:
        root: the folder holding ``manifest.json`` and the shards.
        shards: restrict to these shard entries (used for one rank's local part).
    """

    def __init__(self, root: str | os.PathLike, shards: list[dict[str, Any]] | None = None):
        self.root = check_path("root", root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise bad_value(
                "root", str(root), f"a folder holding {MANIFEST} (from extract_features)"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
            if not isinstance(self.manifest, dict) or not {"shards", "dim"} <= set(self.manifest):
                raise KeyError("'shards' and 'dim'")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as error:
            raise ValueError(
                f"FeatureShards: {manifest_path} is not a feature manifest ({error!r}); "
                "extract the features again"
            ) from None
        self.shards = self.manifest["shards"] if shards is None else shards
        self._dim = int(self.manifest["dim"])
        self._starts = [0]
        for shard in self.shards:
            self._starts.append(self._starts[-1] + int(shard["rows"]))

    @classmethod
    def from_parts(
        cls, root: str | os.PathLike, parts: list[dict[str, Any]], metadata: dict | None = None
    ) -> FeatureShards:
        """Write the manifest joining writer parts (in rank order) and open the result."""
        dims = {p["dim"] for p in parts if p["dim"] is not None}
        if len(dims) > 1:
            raise ValueError(f"feature shards disagree on the dimension: {sorted(dims)}")
        shards = [s for p in parts for s in p["shards"]]
        write_json(
            Path(root) / MANIFEST,
            {
                "format": FORMAT,
                "dim": dims.pop() if dims else 0,
                "num_vectors": sum(s["rows"] for s in shards),
                "shards": shards,
                "parts": [[s["file"] for s in p["shards"]] for p in parts],
                "metadata": metadata or {},
            },
        )
        return cls(root)

    def part(self, index: int) -> FeatureShards:
        """The shards written by writer ``index`` (a rank's local features)."""
        files = set(self.manifest["parts"][index])
        return FeatureShards(self.root, [s for s in self.shards if s["file"] in files])

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.get("metadata", {})

    @property
    def num_vectors(self) -> int:
        return self._starts[-1]

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return self.num_vectors

    def __repr__(self) -> str:
        return f"FeatureShards({str(self.root)!r}, num_vectors={self.num_vectors}, dim={self.dim})"

    def _read(self, shard: dict[str, Any], key: str = "features") -> torch.Tensor:
        path = self.root / shard["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)
        except (SafetensorError, FileNotFoundError) as error:
            raise ValueError(
                f"FeatureShards: {path} is not a readable safetensors file ({error}); "
                "extract the features again"
            ) from None

    def iter_shards(self) -> Iterator[torch.Tensor]:
        for shard in self.shards:
            yield self._read(shard)

    def iter_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        for rows in self.iter_shards():
            for start in range(0, rows.shape[0], chunk_size):
                yield rows[start : start + chunk_size]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        out = torch.empty(indices.numel(), self.dim)
        starts = torch.tensor(self._starts)
        which = torch.bucketize(indices, starts, right=True) - 1
        for shard_id in torch.unique(which).tolist():
            mask = which == shard_id
            rows = self._read(self.shards[shard_id])
            out[mask] = rows[indices[mask] - self._starts[shard_id]]
        return out

    def source_index(self) -> torch.Tensor:
        """The image (or text) index of every row, in row order."""
        parts = [self._read(s, "source_index") for s in self.shards]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def load(self) -> torch.Tensor:
        """All rows in memory ``[num_vectors, dim]``."""
        parts = list(self.iter_shards())
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)
