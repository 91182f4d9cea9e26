"""Load the YOLO-RD authors' Retriever-Dictionary weights (MultimediaTechLab/YOLO ``DConv``).

Their module has three ``Conv`` blocks (convolution without bias + BatchNorm, eps 1e-3, momentum
0.03): ``CG`` (1x1, ``f -> N``, SiLU), ``GIE`` (depth-wise ``k x k`` on ``N`` channels) and ``D``
(1x1, ``N -> f``), and PONO without learned terms. That is ``variant="authors"`` of
:class:`~rd_core.RetrieverDictionary` (see :mod:`rd_core.variants`); each block maps one to one:

========  ==============================  =========================================
theirs    rd-core                         shape
========  ==============================  =========================================
``CG``    ``retriever.generator``         conv ``[N, f, 1, 1]`` + BN ``N``
``GIE``   ``retriever.exchanger``         conv ``[N, 1, k, k]`` + BN ``N``
``D``     ``dictionary``                  conv ``[f, N, 1, 1]`` + BN ``f``
========  ==============================  =========================================

Their mixing weight ``alpha`` (0.8 in every released configuration) is a constructor argument,
not a tensor, so it comes in as ``residual`` (default 0.8). In their rd-9c model the module sits
at ``4.dconv.`` (512 channels, stride 8); their trainer writes ``{"state_dict": ...}`` files
with Lightning's ``model.model.`` prefix, and plain ``{"model": ...}`` files also occur. All
are unwrapped here.

Example:
    >>> import torch
    >>> from rd_core import RetrieverDictionary
    >>> theirs = RetrieverDictionary(16, num_atoms=8, variant="authors").state_dict()
    >>> rename = {"retriever.generator": "CG", "retriever.exchanger": "GIE", "dictionary": "D"}
    >>> ckpt = {"state_dict": {}}
    >>> for key, value in theirs.items():
    ...     head = next(h for h in rename if key.startswith(h))
    ...     ckpt["state_dict"]["model.model.4.dconv." + rename[head] + key[len(head):]] = value
    >>> find(ckpt)
    ['model.model.4.dconv.']
    >>> rd = load(ckpt, prefix="4.dconv.")
    >>> rd.in_channels, rd.num_atoms, rd.kernel_size, rd.variant
    (16, 8, 5, 'authors')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .module import RetrieverDictionary

__all__ = ["BLOCKS", "find", "load", "read_checkpoint"]

# their attribute -> the rd-core module it maps onto
BLOCKS = {"CG": "retriever.generator", "GIE": "retriever.exchanger", "D": "dictionary"}
_MARKER = "CG.conv.weight"
# prefixes their trainers put in front of the YOLO model's own keys (Lightning, DDP)
_WRAPPERS = ("", "model.", "model.model.", "module.", "module.model.")


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The flat state dict in ``source``: a path or an in-memory checkpoint, unwrapped.

    Paths are read with safetensors (``.safetensors``) or ``torch.load(weights_only=True)``,
    never arbitrary pickle. ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers are removed
    (nested ones too); non-tensor entries beside the tensors (an EMA step counter) are dropped.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"state_dict_or_path={str(path)!r}: no such file")
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                source = load_file(str(path))
            except SafetensorError as error:
                raise ValueError(
                    f"official.read_checkpoint: {path} is not a readable safetensors file ({error})"
                ) from None
        elif path.stat().st_size == 0:
            raise ValueError(
                f"state_dict_or_path={str(path)!r} is an empty file (0 bytes); an interrupted "
                "download or copy? fetch it again"
            )
        else:
            try:
                source = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # pickle of objects beyond tensors and containers
                raise ValueError(
                    f"state_dict_or_path={str(path)!r} cannot be read with "
                    f"torch.load(weights_only=True) ({error.__class__.__name__}: {error}); "
                    "re-save its state dict (torch.save(ckpt['state_dict'], ...)) or as "
                    "safetensors"
                ) from None
    if not isinstance(source, Mapping):
        raise TypeError(
            f"state_dict_or_path: expected a path or a mapping, got {type(source).__name__}"
        )
    current: Mapping[str, Any] = source
    for _ in range(4):  # {"state_dict": {"model": {...}}} and the like
        if _is_state_dict(current):
            break
        inner = next(
            (current[k] for k in ("state_dict", "model") if isinstance(current.get(k), Mapping)),
            None,
        )
        if inner is None:
            break
        current = inner
    tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"state_dict_or_path holds no tensors (top-level keys: {sorted(source)[:10]}); "
            "expected a state dict, or one under 'state_dict' or 'model'"
        )
    return tensors


def find(state_dict_or_path: str | os.PathLike | Mapping[str, Any]) -> list[str]:
    """Key prefixes of every authors' RD module (found by their ``CG.conv.weight`` key)."""
    state_dict = read_checkpoint(state_dict_or_path)
    return [k[: -len(_MARKER)] for k in state_dict if k.endswith(_MARKER)]


def _resolve_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str | None) -> str:
    found = [k[: -len(_MARKER)] for k in state_dict if k.endswith(_MARKER)]
    if prefix is None:
        if len(found) == 1:
            return found[0]
        if not found:
            sample = list(state_dict)[:8]
            raise ValueError(
                f"state_dict_or_path: no authors' RD module (no key ending in {_MARKER!r}); "
                f"first keys: {sample}"
            )
        raise ValueError(
            f"state_dict_or_path holds {len(found)} authors' RD modules at {found}; choose one "
            "with prefix="
        )
    if prefix and not prefix.endswith("."):
        prefix += "."
    matches = [w + prefix for w in _WRAPPERS if w + prefix in found]
    if not matches:
        raise ValueError(
            f"prefix={prefix!r}: no authors' RD module there (also tried behind the trainer's "
            f"wrappers {[w for w in _WRAPPERS if w]}); RD modules found at {found}"
        )
    return matches[0]


def load(
    state_dict_or_path: str | os.PathLike | Mapping[str, Any],
    prefix: str | None = None,
    **rd_kwargs: Any,
) -> RetrieverDictionary:
    """The authors' RD module in ``state_dict_or_path`` as an authors-variant RD module.

    Args:
        state_dict_or_path: a checkpoint file (``.safetensors``, or a torch file readable with
            ``weights_only=True``) or an in-memory state dict / checkpoint.
        prefix: the module's key prefix, e.g. ``"4.dconv."`` in their rd-9c model (the
            trainer's ``model.`` / ``model.model.`` wrappers in front are found by themselves).
            ``None`` finds the one RD module the checkpoint holds.
        **rd_kwargs: further :class:`RetrieverDictionary` arguments: ``residual`` (their
            ``alpha``, default 0.8), ``trainable_dictionary``. ``in_channels``, ``num_atoms`` and
            ``kernel_size`` come from the weights.

    Raises:
        ValueError: no RD module, several without a ``prefix``, or tensors that do not form
            their module (missing, extra or wrongly shaped).
    """
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"official.load: prefix must be a str or None, got {type(prefix).__name__}")
    for fixed in ("in_channels", "num_atoms", "kernel_size", "variant"):
        if fixed in rd_kwargs:
            raise TypeError(f"official.load: {fixed} comes from the weights; do not pass it")
    state_dict = read_checkpoint(state_dict_or_path)
    prefix = _resolve_prefix(state_dict, prefix)
    theirs = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    renamed: dict[str, torch.Tensor] = {}
    extra: list[str] = []
    for key, value in theirs.items():
        head, _, rest = key.partition(".")
        if head in BLOCKS:
            renamed[f"{BLOCKS[head]}.{rest}"] = value
        else:
            extra.append(prefix + key)
    g, e = theirs.get("CG.conv.weight"), theirs.get("GIE.conv.weight")
    if e is None or e.dim() != 4 or e.shape[1] != 1 or e.shape[2] != e.shape[3]:
        raise ValueError(
            f"state_dict_or_path: {prefix}GIE.conv.weight must be a depth-wise k x k kernel "
            f"[N, 1, k, k], got {None if e is None else tuple(e.shape)}"
        )
    residual = rd_kwargs.pop("residual", 0.8)
    rd = RetrieverDictionary(
        int(g.shape[1]),
        num_atoms=int(g.shape[0]),
        kernel_size=int(e.shape[-1]),
        residual=residual,
        variant="authors",
        **rd_kwargs,
    )
    expected = rd.state_dict()
    missing = sorted(k for k in expected if k not in renamed)
    wrong = sorted(
        f"{k}: {tuple(renamed[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in renamed and renamed[k].shape != v.shape
    )
    extra += sorted(prefix + k for k in renamed if k not in expected)
    if missing or wrong or extra:
        raise ValueError(
            f"state_dict_or_path: the tensors under {prefix!r} are not the authors' RD module "
            f"(missing {missing}, wrong shapes {wrong}, unexpected {extra})"
        )
    rd.load_state_dict(renamed)
    return rd
