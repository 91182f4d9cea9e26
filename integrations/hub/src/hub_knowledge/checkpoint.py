"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``.

Never unpickles arbitrary objects. A truncated file, or weights meant for another architecture,
fail with a :class:`CheckpointError` that says what was expected and what was found.

Example:
    >>> import tempfile, timm, torch
    >>> from hub_knowledge.checkpoint import save_weights, load_weights
    >>> model = timm.create_model("resnet10t", num_classes=3)
    >>> path = tempfile.mkdtemp() + "/model.safetensors"
    >>> path = save_weights(model, path, architecture="resnet10t")
    >>> clone = timm.create_model("resnet10t", num_classes=3)
    >>> _ = load_weights(clone, path, architecture="resnet10t")
    >>> bool(torch.equal(clone.fc.weight, model.fc.weight))
    True
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ._checks import as_path, check_module, check_text
from ._files import write_atomic

__all__ = [
    "CheckpointError",
    "check_folder",
    "check_state_dict",
    "load_weights",
    "read_json",
    "read_safetensors_metadata",
    "read_state_dict",
    "save_weights",
]

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_MAX_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, unreadable, or for another architecture."""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint={str(path)!r} does not exist") from None


def _safetensors_header(path: Path) -> dict:
    """Parse the header and check the file really holds every byte it announces."""
    size = _file_size(path)
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"checkpoint={str(path)!r} is truncated: {size} bytes, not even the 8-byte "
                "safetensors header length"
            )
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise CheckpointError(
                f"checkpoint={str(path)!r} is truncated: its header announces {header_len} bytes "
                f"of metadata but the file has {size} bytes in all"
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(
                f"checkpoint={str(path)!r} is not a safetensors file (header is not JSON: {e})"
            ) from None
    data_end = max(
        (info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"),
        default=0,
    )
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(
            f"checkpoint={str(path)!r} is truncated: expected {expected} bytes, found {size} "
            "(an interrupted download or copy; fetch it again)"
        )
    return header


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header (empty if there is none)."""
    return dict(_safetensors_header(Path(path)).get("__metadata__") or {})


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(state_dict, metadata)`` from a safetensors file or a weights-only torch file.

    torch files are read with ``weights_only=True``; a nested ``{"state_dict": ...}`` or
    ``{"model": ...}`` is returned as it is, for the caller (a converter) to unwrap.

    Raises:
        CheckpointError: missing, truncated or unreadable file, or one that needs pickle.
    """
    path = as_path("path", path)
    if path.suffix == SAFETENSORS_SUFFIX:
        header = _safetensors_header(path)
        try:
            state_dict = safetensors.torch.load_file(str(path), device="cpu")
        except safetensors.SafetensorError as e:
            raise CheckpointError(f"checkpoint={str(path)!r} cannot be read: {e}") from None
        return state_dict, dict(header.get("__metadata__") or {})
    if path.suffix in TORCH_SUFFIXES:
        size = _file_size(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, zipfile.BadZipFile, struct.error) as e:
            hint = "truncated or corrupt" if size else "empty"
            # some of these errors carry no message at all (an empty file: EOFError())
            reason = (str(e).splitlines() or [e.__class__.__name__])[0]
            raise CheckpointError(
                f"checkpoint={str(path)!r} ({size} bytes) is {hint} and cannot be read: {reason}"
            ) from None
        except Exception as e:  # pickle.UnpicklingError for objects weights_only refuses
            raise CheckpointError(
                f"checkpoint={str(path)!r} holds objects beyond tensors and plain containers; "
                "it is refused because loading it would need arbitrary pickle "
                f"({e.__class__.__name__})"
            ) from None
        return obj, {}
    raise CheckpointError(
        f"checkpoint={str(path)!r} has an unknown suffix {path.suffix!r}; "
        f"valid: {SAFETENSORS_SUFFIX!r} or one of {TORCH_SUFFIXES}"
    )


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``config.json`` or ``dictionary.json`` beside weights).

    Raises:
        CheckpointError: naming the file, when it is missing, not UTF-8, not JSON, or not an
            object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (not UTF-8 text: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); was it cut short?") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object with named fields"
        )
    return data


def check_folder(folder: str | os.PathLike) -> Path:
    """Check a folder before it is laid into a cache or pushed: every JSON file at its top level
    (``config.json``, ``dictionary.json``) is a JSON object and every safetensors file has a
    readable header and all the bytes it announces. Returns the folder.

    Raises:
        CheckpointError: naming the first file that is not so.
    """
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        read_json(path)
    for path in sorted(folder.rglob(f"*{SAFETENSORS_SUFFIX}")):
        _safetensors_header(path)
    return folder


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    architecture: str | None = None,
    found_architecture: str | None = None,
    source: str = "checkpoint",
) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` fits ``model`` key and shape alike.

    ``architecture`` is the model's name and ``found_architecture`` the one recorded with the
    weights; either may be unknown (``None``), in which case the keys and shapes decide alone.
    """
    if architecture and found_architecture and architecture != found_architecture:
        raise CheckpointError(
            f"{source} holds weights for architecture={found_architecture!r}, "
            f"but the model is {architecture!r}; build {found_architecture!r} instead"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        name = architecture or model.__class__.__name__
        held = f" (it says architecture={found_architecture!r})" if found_architecture else ""
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(
                f"{len(mismatched)} shapes differ (checkpoint vs model): {_listing(mismatched)}"
            )
        raise CheckpointError(
            f"{source}{held} does not fit architecture {name!r}: " + "; ".join(parts)
        )


def load_weights(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    architecture: str | None = None,
) -> nn.Module:
    """Load ``checkpoint`` (a path or a state dict) into ``model`` after :func:`check_state_dict`.

    Returns ``model`` for chaining.
    """
    check_module("model", model)
    check_text("architecture", architecture, optional=True)
    if isinstance(checkpoint, Mapping):
        state_dict, metadata, source = dict(checkpoint), {}, "state_dict"
    else:
        as_path("checkpoint", checkpoint)
        state_dict, metadata = read_state_dict(checkpoint)
        source = f"checkpoint={str(checkpoint)!r}"
    check_state_dict(
        model,
        state_dict,
        architecture=architecture,
        found_architecture=metadata.get("architecture"),
        source=source,
    )
    model.load_state_dict(state_dict, strict=True)
    return model


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights); give repeats their own copy.
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if ident in seen or not tensor.is_contiguous():
            tensor = tensor.clone().contiguous()
        seen.add(ident)
        out[key] = tensor.cpu()
    return out


def save_weights(
    weights: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    architecture: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a module's (or a state dict's) tensors to ``path`` as safetensors, atomically.

    ``architecture`` is stored in the header so that a later load into another model names both.
    """
    path = as_path("path", path)
    if not isinstance(weights, (nn.Module, Mapping)):
        raise TypeError(
            f"weights={type(weights).__name__} must be a torch.nn.Module or a state dict"
        )
    check_text("architecture", architecture, optional=True)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise ValueError(f"path={str(path)!r} must end in {SAFETENSORS_SUFFIX!r}")
    state_dict = weights.state_dict() if isinstance(weights, nn.Module) else weights
    header = {"format": "pt", **(metadata or {})}
    if architecture:
        header["architecture"] = architecture
    bad = {k: v for k, v in header.items() if not isinstance(v, str)}
    if bad:
        raise ValueError(f"metadata={bad!r}: safetensors metadata values must be strings")
    tensors = _unshared(state_dict)
    return write_atomic(
        path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=header)
    )
