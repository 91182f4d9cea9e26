"""The YOLO-RD authors' Retriever-Dictionary weights into ``rd_core``'s ``variant="authors"``.

What maps. The authors' module (MultimediaTechLab/YOLO) is, as the paper and rd-core describe
it: G = 1x1 convolution f -> N + BatchNorm + SiLU, E = depth-wise k x k convolution on N
channels + BatchNorm, PONO without learned terms, D = 1x1 convolution N -> f + BatchNorm (no
weight normalisation). Each of the three convolutions and its BatchNorm map one to one onto
``retriever.generator``, ``retriever.exchanger`` and ``dictionary`` of
``RetrieverDictionary(f, num_atoms=N, kernel_size=k, variant="authors")``; PONO has nothing to
map. The tensors are recognised by shape, not by name, so the mapping holds whatever the module
paths in their checkpoint are called:

* E: the one convolution of shape ``[N, 1, k, k]`` with k > 1 (gives N and k);
* G: the 1x1 convolution ``[N, f, 1, 1]``; D: the 1x1 convolution ``[f, N, 1, 1]``; when
  f = N the two have the same shape and the first in the checkpoint's order is G (the
  retriever runs before the dictionary in the authors' module, and state dicts keep
  definition order);
* each BatchNorm belongs to the convolution in the same parent module with as many channels.

What does not map. The paper variant (weight-normalised atoms, PONO with gamma/beta, the 0.8
weight on the input) has other parameters: a checkpoint holding PONO affine terms or anything
else beyond the six tensors above is refused with the keys listed. No authors' RD checkpoint
ships with this project, so the tests check the mapping on modules laid out like theirs.

Example:
    >>> import torch
    >>> from rd_core import RetrieverDictionary
    >>> theirs = RetrieverDictionary(16, num_atoms=8, variant="authors").eval()
    >>> renamed = {k.replace("retriever.generator", "gen").replace("retriever.exchanger", "dw")
    ...            .replace("dictionary", "dict"): v for k, v in theirs.state_dict().items()}
    >>> ours, mapping = convert_yolo_rd(renamed)
    >>> mapping["dw.conv.weight"]
    'retriever.exchanger.conv.weight'
    >>> x = torch.randn(1, 16, 6, 6)
    >>> bool(torch.equal(ours.eval()(x), theirs(x)))
    True
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, read_state_dict

__all__ = ["RD_ROLES", "convert_yolo_rd", "find_rd_modules"]

# role -> the module of rd_core's authors variant it maps onto
RD_ROLES = {
    "generator": "retriever.generator",
    "exchanger": "retriever.exchanger",
    "dictionary": "dictionary",
}
_BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _depthwise(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [
        k
        for k, v in state_dict.items()
        if k.endswith("weight")
        and v.ndim == 4
        and v.shape[1] == 1
        and v.shape[2] > 1
        and v.shape[2] == v.shape[3]
    ]


def find_rd_modules(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Prefixes of modules in a whole-model checkpoint that look like an authors' RD.

    A candidate is the grandparent of a depth-wise convolution weight (``<rd>.<E>.conv.weight``)
    under which a 1x1 convolution to and from its N channels also lies.

    Example:
        >>> from rd_core import RetrieverDictionary
        >>> sd = {"neck.rd." + k: v for k, v in
        ...       RetrieverDictionary(16, num_atoms=8, variant="authors").state_dict().items()}
        >>> find_rd_modules(sd)
        ['neck.rd.']
    """
    found = []
    for key in _depthwise(state_dict):
        n = state_dict[key].shape[0]
        path = _parent(_parent(key))
        while path:
            prefix = path + "."
            convs = [
                v
                for k, v in state_dict.items()
                if k.startswith(prefix) and v.ndim == 4 and v.shape[2:] == (1, 1)
            ]
            if any(v.shape[0] == n for v in convs) and any(v.shape[1] == n for v in convs):
                if prefix not in found:
                    found.append(prefix)
                break
            path = _parent(path)
    return found


def _bn_for(conv_key: str, channels: int, keys: dict[str, torch.Tensor]) -> str:
    parent = _parent(_parent(conv_key))
    candidates = sorted(
        _parent(k)
        for k, v in keys.items()
        if k.endswith(".running_var") and _parent(_parent(k)) == parent and v.shape == (channels,)
    )
    if len(candidates) != 1:
        raise CheckpointError(
            f"no single BatchNorm with {channels} channels beside {conv_key!r} "
            f"(found {candidates}); not the authors' RD layout"
        )
    return candidates[0]


def convert_yolo_rd(
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    prefix: str = "",
    **rd_kwargs: Any,
) -> tuple[nn.Module, dict[str, str]]:
    """Map an authors' RD module onto ``RetrieverDictionary(variant="authors")``.

    Args:
        checkpoint: path (safetensors / weights-only torch) or state dict holding the module.
        prefix: the module's prefix in a whole-model checkpoint (see :func:`find_rd_modules`);
            ``""`` when the state dict is the module alone.
        **rd_kwargs: further ``RetrieverDictionary`` arguments (``residual``,
            ``trainable_dictionary``); in_channels, num_atoms and kernel_size come from the
            weights.

    Returns:
        ``(rd, mapping)``: the module with the weights loaded, and authors' key -> rd-core key.

    Raises:
        CheckpointError: tensors that do not form the authors' RD.
    """
    rd_core = importlib.import_module("rd_core")
    if isinstance(checkpoint, Mapping):
        state_dict = dict(checkpoint)
    else:
        state_dict, _ = read_state_dict(checkpoint)
    keys = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not keys:
        raise CheckpointError(f"prefix={prefix!r}: no key of the checkpoint starts with it")
    depthwise = _depthwise(keys)
    if len(depthwise) != 1:
        hint = f"; RD modules found: {find_rd_modules(keys)}" if len(depthwise) > 1 else ""
        raise CheckpointError(
            f"expected one depth-wise k x k convolution (E) under prefix={prefix!r}, found "
            f"{len(depthwise)}{hint}"
        )
    e_key = depthwise[0]
    n, _, k, _ = keys[e_key].shape
    pointwise = [
        key
        for key, v in keys.items()
        if key.endswith("weight") and v.ndim == 4 and v.shape[2:] == (1, 1)
    ]
    g_keys = [key for key in pointwise if keys[key].shape[0] == n]
    g_key = g_keys[0] if g_keys else None
    d_keys = [key for key in pointwise if keys[key].shape[1] == n and key != g_key]
    if g_key is None or len(d_keys) != 1 or len(pointwise) != 2:
        raise CheckpointError(
            f"expected a 1x1 convolution f -> {n} (G) and one {n} -> f (D) beside E "
            f"{e_key!r}; found 1x1 convolutions {[(p, tuple(keys[p].shape)) for p in pointwise]}"
        )
    d_key = d_keys[0]
    f = keys[g_key].shape[1]
    if keys[d_key].shape[0] != f:
        raise CheckpointError(
            f"G {g_key!r} reads {f} channels but D {d_key!r} writes {keys[d_key].shape[0]}"
        )

    mapping: dict[str, str] = {}
    for role, conv_key, channels in (
        ("generator", g_key, n),
        ("exchanger", e_key, n),
        ("dictionary", d_key, f),
    ):
        target = RD_ROLES[role]
        mapping[conv_key] = f"{target}.conv.weight"
        bn = _bn_for(conv_key, channels, keys)
        for part in _BN_PARTS:
            if f"{bn}.{part}" in keys:
                mapping[f"{bn}.{part}"] = f"{target}.bn.{part}"
    unmapped = sorted(set(keys) - set(mapping))
    if unmapped:
        raise CheckpointError(
            f"tensors beyond the authors' RD (PONO affine terms? the paper variant?): {unmapped}"
        )
    rd = rd_core.RetrieverDictionary(f, num_atoms=n, kernel_size=k, variant="authors", **rd_kwargs)
    converted = {mapping[key]: keys[key] for key in mapping}
    missing = [key for key in rd.state_dict() if key not in converted]
    if [m for m in missing if not m.endswith("num_batches_tracked")]:
        raise CheckpointError(f"the authors' RD lacks {missing}")
    rd.load_state_dict(converted, strict=False)
    return rd, mapping
