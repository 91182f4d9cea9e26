"""Inference fusion: fold BatchNorm into the convolution before it, and implicit knowledge away.

Conv + BatchNorm pairs are found by running the model once, not by reading module names, so the
same code works on any timm backbone and on the project's necks, heads and RD modules: a
BatchNorm is folded into a convolution only when, in that forward pass,

- the BatchNorm received exactly the tensor the convolution returned (same object, not modified
  in place since),
- nothing else used that tensor (no residual, concatenation or return of the pre-norm map), and
- each module ran once (a module shared between two call sites is left alone).

The folding itself is :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`; the BatchNorm is replaced
by ``nn.Identity`` (or, for timm's ``BatchNormAct2d``, by its dropout and activation). Afterwards
the outputs on the probe input are compared with the unfused model's and a difference beyond the
tolerance raises :class:`FusionError`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import fusion
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from ._checks import check_module, check_number, check_tensor
from .knowledge import fuse_implicit

__all__ = ["FusionError", "conv_bn_pairs", "fuse_conv_bn", "fuse_for_inference"]


class FusionError(RuntimeError, ValueError):
    """Folding changed the model's outputs beyond the tolerance ``atol``.

    A ``RuntimeError`` (what it has always been) and a ``ValueError``: the failure is the
    model with the ``atol`` asked for, e.g. ``atol=0`` demands bit-identical outputs, which
    float32 folding gives only when there is nothing to fold. The message says by how much the
    outputs moved, so a caller can pick a tolerance.
    """


@dataclass
class _Watched:
    tensor: torch.Tensor
    conv: str
    version: int
    bn: str | None = None
    other_uses: int = 0


class _Recorder(TorchFunctionMode):
    """Sees every torch function call of one forward pass and counts who uses each conv output."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, _Watched] = {}
        self.inside_bn: _Watched | None = None

    def find(self, value: Any) -> _Watched | None:
        entry = self.watched.get(id(value)) if isinstance(value, torch.Tensor) else None
        return entry if entry is not None and entry.tensor is value else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Calls returning no tensor (x.shape, x.dim()) read metadata only; they are not uses.
        if self.watched and any(isinstance(o, torch.Tensor) for o in pytree.tree_leaves(out)):
            for leaf in pytree.tree_leaves((args, kwargs)):
                entry = self.find(leaf)
                if entry is not None and entry is not self.inside_bn:
                    entry.other_uses += 1
        return out


def _is_plain_conv(module: nn.Module) -> bool:
    # Subclasses that transform the weight in forward (timm's StdConv2d) would undo the folding.
    return isinstance(module, nn.Conv2d) and type(module).forward in (
        nn.Conv2d.forward,
        *_padding_convs(),
    )


def _padding_convs() -> tuple[Callable, ...]:
    try:  # timm's "same"-padding convolution pads the input, then runs a plain convolution.
        from timm.layers import Conv2dSame
    except ImportError:
        return ()
    return (Conv2dSame.forward,)


def _is_foldable_bn(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.BatchNorm2d)
        and module.track_running_stats
        and module.running_mean is not None
        and (type(module).forward is nn.BatchNorm2d.forward or _is_timm_norm_act(module))
    )


def _is_timm_norm_act(module: nn.Module) -> bool:
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:
        return False
    return type(module) is BatchNormAct2d


def _probe_input(fn: str, model: nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        return check_tensor("example", example, expected="(an input of the model)", fn=fn)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, _input_channels(model), 64, 64, generator=generator)
    return images.to(device)


def _input_channels(model: nn.Module) -> int:
    """``model.in_chans`` (a detector, a timm model), else the first convolution's input."""
    if isinstance(getattr(model, "in_chans", None), int):
        return model.in_chans
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _run(fn: str, model: nn.Module, example: torch.Tensor, defaulted: bool) -> Any:
    """``model(example)``; when the probe input was made up (``example=None``), a forward that
    refuses it is the caller's missing ``example``, said so, not a raw shape error."""
    try:
        return model(example)
    except Exception as err:
        if not defaulted:
            raise
        raise ValueError(
            f"{fn}: example=None probes {type(model).__name__} with random images of shape "
            f"{tuple(example.shape)}, which its forward refused ({type(err).__name__}: {err}); "
            "pass example= an input the model accepts"
        ) from err


def _check_model(fn: str, model: Any) -> nn.Module:
    return check_module("model", model, fn=fn)


def _check_atol(fn: str, atol: Any) -> float:
    # inf is a valid tolerance: fold without comparing.
    return check_number("atol", atol, low=0, finite=False, fn=fn)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv name, BatchNorm name)`` pairs of ``model`` that can be folded (see module docs).

    Runs one eval-mode forward pass on ``example`` (default: two random 64 px images with
    ``model.in_chans`` channels).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> conv_bn_pairs(net)
    [('0', '1')]
    """
    fn = "conv_bn_pairs"
    _check_model(fn, model)
    if model.training:
        raise ValueError(
            f"{fn}: model is in training mode; BatchNorm folds only with its running statistics, "
            "call model.eval() first"
        )
    defaulted = example is None
    example = _probe_input(fn, model, example)
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    calls: dict[str, int] = {}
    recorder = _Recorder()

    def after_conv(module, args, output):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor):
            recorder.watched[id(output)] = _Watched(output, name, output._version)

    def before_bn(module, args):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        entry = recorder.find(args[0]) if args else None
        if entry is not None and entry.version == entry.tensor._version and entry.bn is None:
            entry.bn = name
            recorder.inside_bn = entry

    def after_bn(module, args, output):
        recorder.inside_bn = None

    handles = []
    for module in names:
        if _is_plain_conv(module):
            handles.append(module.register_forward_hook(after_conv))
        elif _is_foldable_bn(module):
            handles.append(module.register_forward_pre_hook(before_bn))
            handles.append(module.register_forward_hook(after_bn))
    try:
        with torch.no_grad(), recorder:
            outputs = _run(fn, model, example, defaulted)
    finally:
        for handle in handles:
            handle.remove()
    # A pre-norm map returned by the model itself is a use no torch function saw.
    for leaf in pytree.tree_leaves(outputs):
        entry = recorder.find(leaf)
        if entry is not None:
            entry.other_uses += 1
    return [
        (e.conv, e.bn)
        for e in recorder.watched.values()
        if e.bn is not None and e.other_uses == 0 and calls[e.conv] == 1 and calls[e.bn] == 1
    ]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _max_difference(reference: Any, fused: Any) -> tuple[float, float]:
    """Largest absolute difference and largest difference relative to the reference's scale."""
    ref_leaves, fused_leaves = pytree.tree_leaves(reference), pytree.tree_leaves(fused)
    if len(ref_leaves) != len(fused_leaves):
        return float("inf"), float("inf")
    worst_abs = worst_rel = 0.0
    for a, b in zip(ref_leaves, fused_leaves):
        if not isinstance(a, torch.Tensor):
            continue
        if a.shape != b.shape:
            return float("inf"), float("inf")
        if not a.numel():
            continue
        diff = (a.float() - b.float()).abs().max().item()
        scale = a.float().abs().max().item()
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / max(scale, 1.0))
    return worst_abs, worst_rel


def _tolerance_for(difference: float) -> float:
    """``difference`` rounded up to two significant digits: a tolerance that accepts it."""
    if not math.isfinite(difference) or difference <= 0:
        return difference
    unit = 10 ** (math.floor(math.log10(difference)) - 1)
    return float(f"{math.ceil(difference / unit) * unit:.2g}")


def fuse_conv_bn(
    model: nn.Module,
    example: torch.Tensor | None = None,
    inplace: bool = False,
    atol: float = 1e-4,
) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d into that convolution.

    Returns the fused model in eval mode (a copy unless ``inplace``). ``example`` is the probe
    input used to find the pairs and to check the result (default: two random 64 px images).
    Raises :class:`FusionError` when an output moved by more than ``atol`` (relative to the
    output's magnitude when that exceeds 1).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> fused = fuse_conv_bn(net)
    >>> [type(m).__name__ for m in fused]
    ['Conv2d', 'Identity', 'ReLU']
    """
    fn = "fuse_conv_bn"
    _check_model(fn, model)
    _check_atol(fn, atol)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    defaulted = example is None
    example = _probe_input(fn, model, example)
    with torch.no_grad():
        reference = _run(fn, model, example, defaulted)
    for conv_name, bn_name in conv_bn_pairs(model, example):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        _set_module(model, conv_name, fusion.fuse_conv_bn_eval(conv, bn))
        after = nn.Sequential(bn.drop, bn.act) if _is_timm_norm_act(bn) else nn.Identity()
        _set_module(model, bn_name, after)
    with torch.no_grad():
        fused = model(example)
    worst_abs, worst_rel = _max_difference(reference, fused)
    if not worst_rel <= atol:
        raise FusionError(
            f"{fn}: folding BatchNorm into convolutions changed {type(model).__name__}'s outputs "
            f"by up to {worst_abs:.3g} (relative {worst_rel:.3g}) on the probe input, more than "
            f"atol={atol}; the model may use a pre-norm map in a way the probe pass did not see "
            f"(or atol is tighter than float rounding: atol={_tolerance_for(worst_rel)} accepts "
            "this)"
        )
    return model


def fuse_for_inference(
    model: nn.Module, example: torch.Tensor | None = None, atol: float = 1e-4
) -> nn.Module:
    """A deep copy of ``model`` in eval mode with implicit knowledge and conv + BN folded.

    The authors' architectures (:class:`~yolo_heads.architectures.GraphDetector`) also lose
    PGI's auxiliary branch and have every RepConv re-parameterised into one convolution.

    Implicit layers (YOLOR) are folded first by :func:`yolo_heads.knowledge.fuse_implicit`
    (when the model has any), then BatchNorm by :func:`fuse_conv_bn`; the result is checked
    against the unfused model on the probe input.

    >>> import yolo_heads
    >>> det = yolo_heads.YOLODetector("resnet18", num_classes=2, neck_channels=16, implicit=True,
    ...                               channels=(8, 16, 32, 64), stem_width=8)
    >>> fused = fuse_for_inference(det)
    >>> any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    False
    """
    fn = "fuse_for_inference"
    _check_model(fn, model)
    _check_atol(fn, atol)
    model = copy.deepcopy(model).eval()
    defaulted = example is None
    example = _probe_input(fn, model, example)
    with torch.no_grad():
        reference = _run(fn, model, example, defaulted)
    if hasattr(model, "reparameterize"):  # the authors' architectures: deploy form
        model.drop_auxiliary().reparameterize()
    model = fuse_implicit(model)  # a no-op copy for a model without implicit layers
    model = fuse_conv_bn(model, example, inplace=True, atol=atol)
    with torch.no_grad():
        worst_abs, worst_rel = _max_difference(reference, model(example))
    if not worst_rel <= atol:
        raise FusionError(
            f"{fn}: fusing implicit knowledge and BatchNorm changed {type(model).__name__}'s "
            f"outputs by up to {worst_abs:.3g} (relative {worst_rel:.3g}) on the probe input, more "
            f"than atol={atol} (atol={_tolerance_for(worst_rel)} accepts this)"
        )
    return model
