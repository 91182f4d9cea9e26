"""Fold implicit layers into their neighbouring convolutions (YOLOR section 4.4).

Implicit knowledge does not depend on the input, so after training it is a constant, and a
constant next to a linear operator can move into that operator's parameters:

==================  ==========================================================  ===========
implicit layer      folded into                                                 exact?
==================  ==========================================================  ===========
add after conv      bias: ``b + a`` (equation 10)                               always
mul after conv      weight and bias: ``m W``, ``m b``                           always
mul before conv     weight, per input channel: ``W m`` (equation 9)             always
add before conv     bias: ``b + sum_{c,k} W a``                                 unpadded*
concat before conv  bias, dropping the constant channels' weights               unpadded*
==================  ==========================================================  ===========

\\* A convolution that pads with zeros sees the constant only inside the image, not on the
zero border, so folding would change the border outputs; with ``padding=0`` (any 1x1
convolution, every linear layer) or a padding mode that copies values (reflect, replicate,
circular) it is exact. An implicit layer that cannot be folded exactly stays where it is, as a
single constant (its prior reduced to a vector).

"Neighbouring" means adjacent in an ``nn.Sequential`` (or a subclass that keeps its forward),
the only container whose data flow is visible without tracing. Linear layers fold like 1x1
convolutions when the implicit layer works on the last axis (``dim=-1``).

    >>> import torch
    >>> from torch import nn
    >>> from implicit_knowledge import ImplicitAdd, ImplicitMul, fuse
    >>> model = nn.Sequential(ImplicitAdd(8), nn.Conv2d(8, 4, 1), ImplicitMul(4)).eval()
    >>> fused = fuse(model)
    >>> type(fused).__name__
    'Conv2d'
    >>> x = torch.randn(2, 8, 5, 5)
    >>> bool(torch.allclose(model(x), fused(x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .layers import ImplicitAdd, ImplicitConcat, ImplicitLayer, ImplicitMul

__all__ = ["fuse", "implicit_layers"]

Foldable = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
FoldFn = Callable[[Foldable, ImplicitLayer], "Foldable | None"]

# (implicit layer type, where it sits relative to the convolution) -> fold; None when not exact.
_FOLDS: dict[tuple[type[ImplicitLayer], str], FoldFn] = {}


def _register(kind: type[ImplicitLayer], position: str) -> Callable[[FoldFn], FoldFn]:
    def decorator(fn: FoldFn) -> FoldFn:
        if (kind, position) in _FOLDS:
            held = _FOLDS[kind, position]
            raise ValueError(
                f"folds registry: ({kind.__name__}, {position!r}) is already registered by "
                f"{held.__module__}.{held.__qualname__}"
            )
        _FOLDS[kind, position] = fn
        return fn

    return decorator


def _pads_with_zeros(layer: Foldable) -> bool:
    if isinstance(layer, nn.Linear) or layer.padding_mode != "zeros":
        return False
    if isinstance(layer.padding, str):  # "valid" pads nothing; "same" pads only for k > 1
        return layer.padding == "same" and any(k > 1 for k in layer.kernel_size)
    return any(p > 0 for p in layer.padding)


def _weight(layer: Foldable) -> torch.Tensor:
    """The weight as float64 ``[out, in_per_group, *kernel]`` (linear: no kernel axes)."""
    return layer.weight.detach().double()


def _bias(layer: Foldable) -> torch.Tensor:
    if layer.bias is None:
        return torch.zeros(layer.weight.shape[0], dtype=torch.float64, device=layer.weight.device)
    return layer.bias.detach().double()


def _set(layer: Foldable, weight: torch.Tensor, bias: torch.Tensor) -> Foldable:
    dtype = layer.weight.dtype
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(bias.to(dtype))
        else:
            layer.bias.copy_(bias.to(dtype))
    return layer


def _per_output(layer: Foldable, value: torch.Tensor) -> torch.Tensor:
    """An input-channel vector laid out as ``[out, in_per_group]`` to match the weight."""
    groups = getattr(layer, "groups", 1)
    out = layer.weight.shape[0]
    return value.view(groups, -1).repeat_interleave(out // groups, dim=0)


def _expand(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.reshape(value.shape + (1,) * (like.dim() - value.dim()))


def _sum_kernel(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(2).sum(2) if weight.dim() > 2 else weight


@_register(ImplicitAdd, "after")
def _add_after(layer: Foldable, implicit: ImplicitLayer) -> Foldable:
    return _set(layer, _weight(layer), _bias(layer) + implicit.implicit().detach().double())


@_register(ImplicitMul, "after")
def _mul_after(layer: Foldable, implicit: ImplicitLayer) -> Foldable:
    m = implicit.implicit().detach().double()
    weight = _weight(layer)
    return _set(layer, weight * _expand(m, weight), _bias(layer) * m)


@_register(ImplicitMul, "before")
def _mul_before(layer: Foldable, implicit: ImplicitLayer) -> Foldable:
    weight = _weight(layer)
    m = _per_output(layer, implicit.implicit().detach().double())
    return _set(layer, weight * _expand(m, weight), _bias(layer))


@_register(ImplicitAdd, "before")
def _add_before(layer: Foldable, implicit: ImplicitLayer) -> Foldable | None:
    if _pads_with_zeros(layer):
        return None
    a = _per_output(layer, implicit.implicit().detach().double())
    shift = (_sum_kernel(_weight(layer)) * a).sum(1)
    return _set(layer, _weight(layer), _bias(layer) + shift)


@_register(ImplicitConcat, "before")
def _concat_before(layer: Foldable, implicit: ImplicitLayer) -> Foldable | None:
    if _pads_with_zeros(layer) or getattr(layer, "groups", 1) != 1:
        return None
    weight, keep = _weight(layer), layer.weight.shape[1] - implicit.channels
    shift = (_sum_kernel(weight[:, keep:]) * implicit.implicit().detach().double()).sum(1)
    if isinstance(layer, nn.Linear):
        smaller = nn.Linear(keep, layer.out_features, bias=True)
    else:
        smaller = copy.deepcopy(layer)
        smaller.in_channels = keep
        smaller.weight = nn.Parameter(layer.weight.detach()[:, :keep].clone())
        smaller.bias = nn.Parameter(_bias(layer).to(layer.weight.dtype))
    smaller = smaller.to(device=layer.weight.device, dtype=layer.weight.dtype)
    return _set(smaller, weight[:, :keep], _bias(layer) + shift)


def _fits(layer: nn.Module, implicit: ImplicitLayer, position: str) -> bool:
    """Whether ``implicit`` acts on the channel axis of ``layer``'s input or output."""
    if isinstance(layer, nn.Linear):
        if implicit.dim != -1:
            return False
        width = layer.in_features if position == "before" else layer.out_features
    elif isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        if implicit.dim != 1:
            return False
        width = layer.in_channels if position == "before" else layer.out_channels
    else:
        return False
    if isinstance(implicit, ImplicitConcat):
        return position == "before" and width > implicit.channels
    return width == implicit.channels


def _fold_sequence(seq: nn.Sequential) -> bool:
    """Fold implicit layers into adjacent layers of ``seq``; True when any was removed."""
    names = list(seq._modules)
    removed = False
    index = 0
    while index < len(names):
        implicit = seq._modules[names[index]]
        if not isinstance(implicit, ImplicitLayer):
            index += 1
            continue
        neighbours = []
        if index > 0:
            neighbours.append((index - 1, "after"))
        if index + 1 < len(names):
            neighbours.append((index + 1, "before"))
        for at, position in neighbours:
            layer = seq._modules[names[at]]
            fold = _FOLDS.get((type(implicit), position))
            if fold is None or not _fits(layer, implicit, position):
                continue
            replacement = fold(layer, implicit)
            if replacement is None:
                continue
            setattr(seq, names[at], replacement)
            delattr(seq, names[index])
            del names[index]
            removed = True
            break
        else:
            index += 1
    return removed


def _fuse(module: nn.Module) -> nn.Module:
    if isinstance(module, ImplicitLayer):
        return module if module.prior_name == "vector" else module.reduced()
    for name, child in list(module.named_children()):
        fused = _fuse(child)
        if fused is not child:
            setattr(module, name, fused)
    # Only a Sequential that keeps Sequential's forward has a data flow we can read.
    sequential = isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
    if sequential and _fold_sequence(module) and len(module) == 1:
        return module[0]
    return module


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every implicit layer of ``model`` into its neighbouring convolution or linear layer.

    Returns the fused model (a copy unless ``inplace``). Priors are reduced to their constants,
    additions and multiplications are folded where exact (see the module docstring for the
    rules); an ``nn.Sequential`` left with a single layer by folding is replaced by that layer,
    so ``nn.Sequential(ImplicitAdd(c), nn.Conv2d(c, d, 1), ImplicitMul(d))`` becomes one
    ``nn.Conv2d``. What cannot be folded exactly (an addition before a zero-padded k x k
    convolution, a layer with no visible neighbour) stays as one constant: see
    :func:`implicit_layers` for what remains. Use it on a model in eval mode, after training.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={type(model).__name__} must be a torch.nn.Module")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace={inplace!r} must be True or False")
    if not inplace:
        model = copy.deepcopy(model)
    return _fuse(model)


def implicit_layers(model: nn.Module) -> dict[str, ImplicitLayer]:
    """The implicit layers in ``model`` by qualified name (after :func:`fuse`: the unfoldable)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={type(model).__name__} must be a torch.nn.Module")
    return {name: m for name, m in model.named_modules() if isinstance(m, ImplicitLayer)}
