"""Insert a Retriever-Dictionary after any named module of a timm model.

The named module is replaced in its parent by an :class:`RDInsertion` that runs the original
module and then the RD on its output, so ``features_only`` models still collect the stage's
output by name. Outputs in other layouts are turned into ``[B, C, H, W]`` maps and back by a
registered layout: ``"nchw"`` (CNN stages), ``"nhwc"`` (models whose stages output channels
last, e.g. Swin; timm marks them with ``output_fmt="NHWC"``) and ``"tokens"`` (ViT / DeiT blocks:
prefix tokens pass through untouched, patch tokens are reshaped to the patch grid).
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._checks import check_free_name, check_module
from .module import RetrieverDictionary

__all__ = [
    "LAYOUTS",
    "RDInsertion",
    "attach",
    "attached",
    "attachments",
    "detach",
    "reattach",
    "register_layout",
]


# --------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    """How to turn a module's output into a ``[B, C, H, W]`` map and back."""

    name: str
    channels: Callable[[torch.Size], int]
    to_map: Callable[[torch.Tensor, RDInsertion], tuple[torch.Tensor, Any]]
    from_map: Callable[[torch.Tensor, Any], torch.Tensor]


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    """Make ``layout`` available to :func:`attach` under ``layout.name``.

    A name is registered once: registering it again raises ``ValueError``.

    Example:
        >>> register_layout(Layout("nchw", lambda s: s[1], None, None))
        Traceback (most recent call last):
        ...
        ValueError: register_layout: 'nchw' is already in the layout registry (held by ...
    """
    if not isinstance(layout, Layout):
        raise TypeError(f"register_layout: layout must be a Layout, got {type(layout).__name__}")
    held = LAYOUTS.get(layout.name)
    check_free_name("register_layout", "layout", LAYOUTS, layout.name, repr(held))
    LAYOUTS[layout.name] = layout
    return layout


def _tokens_to_map(y: torch.Tensor, insertion: RDInsertion) -> tuple[torch.Tensor, Any]:
    prefix = insertion.num_prefix_tokens
    b, t, c = y.shape
    patches = t - prefix
    grid = insertion.grid_size
    if grid is None or grid[0] * grid[1] != patches:
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(
                f"attach: cannot lay {patches} patch tokens (of {t}, {prefix} prefix) on a grid; "
                "pass grid_size=(H, W) to attach()"
            )
        grid = (side, side)
    feature_map = y[:, prefix:].transpose(1, 2).reshape(b, c, grid[0], grid[1])
    return feature_map, y[:, :prefix]


def _map_to_tokens(z: torch.Tensor, prefix_tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([prefix_tokens, z.flatten(2).transpose(1, 2)], dim=1)


register_layout(Layout("nchw", lambda s: s[1], lambda y, _: (y, None), lambda z, _: z))
register_layout(
    Layout(
        "nhwc",
        lambda s: s[-1],
        lambda y, _: (y.permute(0, 3, 1, 2), None),
        lambda z, _: z.permute(0, 2, 3, 1),
    )
)
register_layout(Layout("tokens", lambda s: s[-1], _tokens_to_map, _map_to_tokens))


# --------------------------------------------------------------------------- insertion
class RDInsertion(nn.Module):
    """Runs ``module`` and then ``rd`` on its output (converted through ``layout``).

    Example:
        >>> import torch
        >>> block = RDInsertion(nn.Conv2d(3, 8, 3, padding=1), RetrieverDictionary(8, num_atoms=16))
        >>> block(torch.randn(1, 3, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(
        self,
        module: nn.Module,
        rd: RetrieverDictionary,
        layout: str = "nchw",
        num_prefix_tokens: int = 0,
        grid_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"RDInsertion: unknown layout {layout!r}; valid: {sorted(LAYOUTS)}")
        self.module = module
        self.rd = rd
        self.layout = layout
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid_size = None if grid_size is None else (int(grid_size[0]), int(grid_size[1]))

    # State-dict keys: the wrapped module's entries keep their original names (``layer3.0.conv1
    # .weight``, not ``layer3.module.0.conv1.weight``), so checkpoints of the plain model load
    # into the model with an RD (``strict=False`` reports only the RD's keys as missing) and
    # the other way round. The RD's own entries live under ``<name>.rd.``.
    def state_dict(
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ):
        if args:  # legacy positional form: keep torch's behaviour
            return super().state_dict(
                *args, destination=destination, prefix=prefix, keep_vars=keep_vars
            )
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()  # type: ignore[attr-defined]
        self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        self.rd.state_dict(destination=destination, prefix=prefix + "rd.", keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Runs before the children load from this same dict: nest the wrapped module's keys.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            if not rest.startswith(("rd.", "module.")):
                state_dict[prefix + "module." + rest] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def apply_rd(self, y: torch.Tensor) -> torch.Tensor:
        """The RD on the wrapped module's output ``y`` (through the layout)."""
        layout = LAYOUTS[self.layout]
        feature_map, context = layout.to_map(y, self)
        return layout.from_map(self.rd(feature_map), context)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.apply_rd(self.module(*args, **kwargs))

    # The insertion stands where the module stood, so the model's own code that walks or
    # flags its stages must reach the module: timm's checkpoint_seq(flatten=True) iterates a
    # stage's blocks (then the RD runs as one more step), ``set_grad_checkpointing`` sets
    # ``stage.grad_checkpointing``, and other attributes read through to the module.
    def __iter__(self):
        steps = list(self.module) if isinstance(self.module, nn.Sequential) else [self.module]
        return iter([*steps, self.apply_rd])

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self.module, "grad_checkpointing", False))

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self.module.grad_checkpointing = enable

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__["_modules"].get("module")
            if module is None:
                raise
            return getattr(module, name)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}"


def _feature_wrapper_name(modules: dict[str, nn.Module], name: str) -> str | None:
    """``name`` as timm's ``features_only`` wrappers spell it, or ``None``.

    ``FeatureListNet`` / ``FeatureDictNet`` flatten the top-level sequential containers of the
    model they wrap (``stages.2`` becomes ``stages_2``) while ``feature_info.module_name()`` keeps
    the dotted name, so a name read from ``feature_info`` must be mapped before it is looked up.
    ``FeatureGetterNet`` (ViTs) keeps the model whole under ``model.``.
    """
    if f"model.{name}" in modules:
        return f"model.{name}"
    head, dot, rest = name.partition(".")
    if not dot:
        return None
    child, dot, deeper = rest.partition(".")
    flat = f"{head}_{child}" + (f".{deeper}" if dot else "")
    return flat if flat in modules else None


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str, nn.Module]:
    modules = dict(model.named_modules())
    if name and name not in modules:
        name = _feature_wrapper_name(modules, name) or name
    if not name or name not in modules:
        candidates = [n for n in modules if n]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
        hint = f"; close matches: {close}" if close else ""
        top = [n for n, _ in model.named_children()]
        raise ValueError(
            f"attach: at={name!r} is not a module of {type(model).__name__}{hint} "
            f"(top-level modules: {top})"
        )
    parent_name, _, child = name.rpartition(".")
    return modules[parent_name] if parent_name else model, child, modules[name]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _probe_shape(
    model: nn.Module,
    image_size: int | tuple[int, int] | None,
    in_chans: int,
    input_size: tuple[int, int, int] | None,
) -> tuple[int, int, int]:
    """``(C, H, W)`` of the probing input, from ``image_size`` / ``in_chans`` (checked), the
    deprecated ``input_size``, or the model's ``pretrained_cfg``."""
    if input_size is not None:
        if image_size is not None:
            raise TypeError("attach: pass 'image_size' only ('input_size' is its deprecated name)")
        if not (
            isinstance(input_size, (tuple, list))
            and len(input_size) == 3
            and all(_positive_int(v) for v in input_size)
        ):
            raise ValueError(
                f"attach: input_size={input_size!r} is invalid: expected (C, H, W) of positive "
                "ints (or, better, image_size=(H, W) and in_chans=C)"
            )
        if in_chans not in (3, input_size[0]):
            raise TypeError(
                f"attach: in_chans={in_chans} contradicts input_size={tuple(input_size)}"
            )
        warnings.warn("attach: 'input_size' is deprecated, use 'image_size'", FutureWarning, 3)
        in_chans, image_size = input_size[0], (input_size[1], input_size[2])
    if not _positive_int(in_chans):
        raise ValueError(f"attach: in_chans={in_chans!r} is invalid: expected a positive int")
    if image_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        image_size = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
    pair = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    if len(pair) != 2 or not all(_positive_int(v) for v in pair):
        raise ValueError(
            f"attach: image_size={image_size!r} is invalid: expected a positive int or "
            "(height, width) of positive ints"
        )
    return in_chans, int(pair[0]), int(pair[1])


def _probe_output(
    model: nn.Module, target: nn.Module, input_size: tuple[int, int, int]
) -> torch.Tensor:
    """Run one dummy forward (eval mode, no grad) at ``(C, H, W)``; return ``target``'s output."""
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    captured: list[Any] = []

    class _Stop(Exception):
        pass

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output)
        raise _Stop

    handle = target.register_forward_hook(hook)
    was_training = model.training
    model.eval()  # never touch BatchNorm running statistics while probing
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    except _Stop:
        pass
    except Exception as error:
        c, h, w = input_size
        raise ValueError(
            f"attach: probing the model with an input of in_chans={c}, image_size={(h, w)} "
            f"failed ({error}); pass image_size=(H, W) and in_chans=C that the model accepts "
            "(or the deprecated input_size=(C, H, W))"
        ) from error
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise RuntimeError("attach: the target module was not called during the model's forward")
    output = captured[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"attach: the target module returns {type(output).__name__}, not a tensor; attach the "
            f"RD to a module that returns a feature tensor"
        )
    return output


def attach(
    model: nn.Module,
    at: str = "layer3",
    *,
    layout: str = "auto",
    image_size: int | tuple[int, int] | None = None,
    in_chans: int = 3,
    num_prefix_tokens: int | None = None,
    grid_size: tuple[int, int] | None = None,
    input_size: tuple[int, int, int] | None = None,
    **rd_kwargs: Any,
) -> RetrieverDictionary:
    """Insert a :class:`RetrieverDictionary` after the module named ``at``; return the RD.

    Works for classification models, ``features_only`` models, ConvNeXt stages, ViT/DeiT blocks
    and anything else with a named module that returns a feature tensor. The channel count
    (``in_channels``) and layout are found with one dummy forward pass in eval mode of an
    ``in_chans x image_size`` input (default: the model's ``pretrained_cfg`` input size).

    Args:
        model: any ``nn.Module`` (typically from ``timm.create_model``); changed in place.
        at: name of the module to follow, as in ``model.named_modules()``.
        layout: ``"auto"``, or one of :data:`LAYOUTS` (``"nchw"``, ``"nhwc"``, ``"tokens"``).
        image_size: ``(H, W)`` (or one int) of the dummy input used to find the output shape;
            default from the model's ``pretrained_cfg``.
        in_chans: channels of the dummy input (timm's name), default 3.
        num_prefix_tokens: tokens layout: leading tokens that are not patches (class and
            distillation tokens); default ``model.num_prefix_tokens`` or 0.
        grid_size: tokens layout: the patch grid ``(H, W)``; default from ``model.patch_embed``.
        input_size: deprecated: ``(C, H, W)``, now ``in_chans=C, image_size=(H, W)``
            (``FutureWarning``; passing it with ``image_size`` is a ``TypeError``).
        **rd_kwargs: passed to :class:`RetrieverDictionary` (``num_atoms``, ``dictionary``,
            ``variant``, ...).

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("resnet18", num_classes=10)
        >>> rd = attach(model, at="layer3", num_atoms=32, image_size=64)
        >>> rd.in_channels, model(torch.randn(1, 3, 64, 64)).shape
        (256, torch.Size([1, 10]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(at, str):
        raise TypeError(f"attach: at must be a module name (str), got {type(at).__name__}")
    probe = _probe_shape(model, image_size, in_chans, input_size)
    if layout != "auto" and layout not in LAYOUTS:
        valid = ["auto", *sorted(LAYOUTS)]
        raise ValueError(f"attach: unknown layout {layout!r}; valid layouts are {valid}")
    if "in_channels" in rd_kwargs:
        raise TypeError("attach: in_channels is found from the model; do not pass it")
    parent, child, target = _resolve(model, at)
    if isinstance(target, (RDInsertion, RetrieverDictionary)):
        raise ValueError(f"attach: {at!r} already is a Retriever-Dictionary insertion")

    output = _probe_output(model, target, probe)
    if layout == "auto":
        if output.dim() == 3:
            layout = "tokens"
        elif output.dim() == 4:
            layout = "nhwc" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "nchw"
        else:
            raise ValueError(
                f"attach: output of {at!r} has shape {tuple(output.shape)}; the RD needs a "
                f"feature map [B, C, H, W] (or tokens [B, T, C], or NHWC)"
            )
    channels = LAYOUTS[layout].channels(output.shape)
    # a ViT's token facts, on the model or inside timm's FeatureGetterNet (``.model``)
    owner = model if hasattr(model, "patch_embed") else getattr(model, "model", model)
    if num_prefix_tokens is None:
        num_prefix_tokens = int(getattr(owner, "num_prefix_tokens", 0)) if layout == "tokens" else 0
    if grid_size is None and layout == "tokens":
        grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
        grid_size = tuple(grid) if grid is not None else None

    param = next(model.parameters(), None)
    rd = RetrieverDictionary(channels, **rd_kwargs)
    if param is not None:
        rd = rd.to(device=param.device, dtype=param.dtype)
    rd.train(model.training)
    insertion = RDInsertion(target, rd, layout, num_prefix_tokens, grid_size)
    setattr(parent, child, insertion)
    # Check the whole chain once, so a layout mistake shows up here and not in training.
    LAYOUTS[layout].to_map(output, insertion)
    return rd


def attached(model: nn.Module) -> dict[str, RDInsertion]:
    """Every RD insertion in ``model`` by the name of the module it follows.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18")
        >>> _ = attach(model, at="layer2", num_atoms=16, image_size=32)
        >>> list(attached(model))
        ['layer2']
    """
    check_module("attached", model)
    return {name: m for name, m in model.named_modules() if isinstance(m, RDInsertion)}


def detach(model: nn.Module, at: str) -> RetrieverDictionary:
    """Remove the RD inserted after ``at``, put the original module back, return the RD."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"detach: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(at, str):
        raise TypeError(f"detach: at must be a module name (str), got {type(at).__name__}")
    found = attached(model)
    if at not in found:
        at = _feature_wrapper_name(dict(model.named_modules()), at) or at
    if at not in found:
        raise ValueError(f"detach: no RD is attached at {at!r}; attached at: {sorted(found)}")
    parent, child, insertion = _resolve(model, at)
    setattr(parent, child, insertion.module)
    return insertion.rd


def attachments(model: nn.Module) -> list[dict[str, Any]]:
    """Everything needed to rebuild ``model``'s RD insertions (JSON-serialisable), in order.

    Store it next to a checkpoint (e.g. in ``config.json``); :func:`reattach` rebuilds the
    insertions on a fresh model without a probing forward pass, then ``load_state_dict`` fills
    in the weights.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18")
        >>> _ = attach(model, at="layer2", num_atoms=16, image_size=32)
        >>> [(a["at"], a["in_channels"], a["num_atoms"]) for a in attachments(model)]
        [('layer2', 128, 16)]
    """
    check_module("attachments", model)
    return [
        {
            "at": name,
            "layout": insertion.layout,
            "num_prefix_tokens": insertion.num_prefix_tokens,
            "grid_size": None if insertion.grid_size is None else list(insertion.grid_size),
            **insertion.rd.config,
        }
        for name, insertion in attached(model).items()
    ]


def reattach(model: nn.Module, config: list[dict[str, Any]]) -> dict[str, RetrieverDictionary]:
    """Insert the RDs described by :func:`attachments` into ``model``; return them by name.

    Example:
        >>> import timm, torch
        >>> source = timm.create_model("resnet18")
        >>> _ = attach(source, at="layer3", num_atoms=16, image_size=32)
        >>> target = timm.create_model("resnet18")
        >>> _ = reattach(target, attachments(source))
        >>> _ = target.load_state_dict(source.state_dict())
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"reattach: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(config, (str, dict)) or not isinstance(config, (list, tuple)):
        raise ValueError(
            f"reattach: config={config!r} is invalid: expected a list of dicts, the output of "
            "attachments(model)"
        )
    inserted: dict[str, RetrieverDictionary] = {}
    param = next(model.parameters(), None)
    for i, entry in enumerate(config):
        if not isinstance(entry, dict) or not isinstance(entry.get("at"), str):
            raise ValueError(
                f"reattach: config[{i}]={entry!r} is invalid: expected a dict with an 'at' "
                "module name (an entry of attachments(model))"
            )
        entry = dict(entry)
        at = entry.pop("at")
        layout = entry.pop("layout", "nchw")
        prefix = entry.pop("num_prefix_tokens", 0)
        grid = entry.pop("grid_size", None)
        parent, child, target = _resolve(model, at)
        if isinstance(target, RDInsertion):
            raise ValueError(f"reattach: {at!r} already is a Retriever-Dictionary insertion")
        try:
            rd = RetrieverDictionary(**entry)
        except TypeError as error:  # a key RetrieverDictionary does not take
            raise ValueError(f"reattach: config[{i}] for at={at!r}: {error}") from None
        if param is not None:
            rd = rd.to(device=param.device, dtype=param.dtype)
        rd.train(model.training)
        setattr(parent, child, RDInsertion(target, rd, layout, prefix, grid))
        inserted[at] = rd
    return inserted
