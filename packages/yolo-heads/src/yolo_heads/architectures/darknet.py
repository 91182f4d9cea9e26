"""Darknet cfg files (YOLOR's ``cfg/*.cfg``) as :class:`~.graph.Layer` specs and modules.

The YOLOR authors (WongKinYiu/yolor) describe their detectors as darknet cfg files: a ``[net]``
section, then one section per layer, numbered from 0 in file order. This reader turns such a
file into the same layer specs the YAML tables give (sources resolved to layer indices) and
modules, so :class:`~.detector.GraphDetector` runs, trains, fuses and exports them like the
other authors' detectors. Layer ``i`` of the cfg is ``layers.<i>`` of the model, with the
authors' submodule names (``layers.5.Conv2d.weight``, ``layers.5.BatchNorm2d.running_var``).

Sections and keys (anything else is refused, naming the line):

- ``[net]``: training settings, accepted and not used (the authors' code ignores them too).
- ``[convolutional]``: ``batch_normalize``, ``filters``, ``size``, ``stride``, ``pad``
  (padding ``size // 2``), ``groups``, ``activation`` (``silu``/``swish``, ``mish``,
  ``leaky`` (slope 0.1), ``logistic``, ``linear``). BatchNorm has eps 1e-4, momentum 0.03.
- ``[route]``: ``layers`` (absolute, or negative: relative), concatenated on channels;
  ``groups`` / ``group_id`` take one channel group of the result (darknet's CSP split).
- ``[shortcut]``: ``from`` (added to the previous layer; ``activation=linear`` only).
- ``[upsample]``: ``stride`` (nearest). ``[maxpool]``: ``size``, ``stride``.
  ``[reorg]``: space to depth (4x channels, stride x2), in the authors' slice order.
- ``[implicit_add]``, ``[implicit_mul]``: ``filters``; implicit-knowledge's
  :class:`~implicit_knowledge.ImplicitAdd` / :class:`~implicit_knowledge.ImplicitMul`.
- ``[shift_channels]`` / ``[control_channels]``: ``from`` (an implicit layer): add / multiply.
- ``[yolo]``: ``mask``, ``anchors``, ``classes`` (and the authors' training keys, ignored).

The head: every ``[yolo]`` reads a 1x1 linear output convolution, in YOLOR wrapped as
``shift_channels(implicit_add) -> conv -> control_channels(implicit_mul)``. Those layers are
collected into one :class:`~yolo_heads.heads.AnchorBasedHead` (level ``l``:
``ImplicitAdd -> Conv2d -> ImplicitMul`` in an ``nn.Sequential``, so
``implicit_knowledge.fuse`` folds both vectors into the convolution) that sits at the last
``[yolo]`` index; the collected layers stay in the list as parameterless placeholders, so
every other layer keeps its number. :attr:`DarknetInfo.renames` maps their keys
(``164.implicit``, ``173.Conv2d.weight``) to the head's (``<y>.out.0.add.prior.value``,
``<y>.out.0.conv.weight``).

    >>> text = '''
    ... [net]
    ... [convolutional]
    ... batch_normalize=1
    ... filters=8
    ... size=3
    ... stride=2
    ... pad=1
    ... activation=silu
    ... [frobnicate]
    ... '''
    >>> parse_cfg(text, "tiny.cfg")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: tiny.cfg, line 10: unknown section [frobnicate]; known sections are [contr...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .graph import Layer

__all__ = ["DarknetInfo", "Section", "build_darknet", "parse_cfg"]

BN_EPS, BN_MOMENTUM = 1e-4, 0.03  # the YOLOR repository's BatchNorm (YOLO-RD's: 1e-3)
#: sections whose module takes a list of inputs (the others take one tensor)
MULTI_INPUT = (
    "route", "shortcut", "implicit_add", "implicit_mul", "shift_channels", "control_channels",
)  # fmt: skip


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _str(text: str) -> str:
    return text


_YOLO_TRAINING = (
    "num", "jitter", "ignore_thresh", "truth_thresh", "random", "scale_x_y", "iou_thresh",
    "cls_normalizer", "iou_normalizer", "iou_loss", "nms_kind", "beta_nms", "max_delta",
    "obj_normalizer", "resize", "new_coords", "counters_per_class", "label_smooth_eps",
)  # fmt: skip
_NET = (
    "batch", "subdivisions", "width", "height", "channels", "momentum", "decay", "angle",
    "saturation", "exposure", "hue", "learning_rate", "burn_in", "max_batches", "policy", "steps",
    "scales", "mosaic", "cutmix", "mixup", "blur", "flip", "letter_box", "gaussian_noise",
    "optimized_memory", "workspace_size_limit_MB", "max_chart_loss", "adam", "B1", "B2", "eps",
    "power", "aspect", "min_crop", "max_crop", "label_smooth_eps", "track", "time_steps",
    "mosaic_bound", "dynamic_minibatch", "ema_alpha",
)  # fmt: skip
#: section -> {key: parser}; keys a section may have (used or, for training keys, accepted).
SECTION_KEYS: dict[str, dict[str, Callable[[str], Any]]] = {
    "net": dict.fromkeys(_NET, _str),
    "convolutional": {
        "batch_normalize": _int,
        "filters": _int,
        "size": _int,
        "stride": _int,
        "pad": _int,
        "padding": _int,
        "groups": _int,
        "activation": _str,
    },
    "route": {"layers": _ints, "groups": _int, "group_id": _int},
    "shortcut": {"from": _ints, "activation": _str},
    "upsample": {"stride": _int},
    "maxpool": {"size": _int, "stride": _int},
    "reorg": {},
    "implicit_add": {"filters": _int},
    "implicit_mul": {"filters": _int},
    "shift_channels": {"from": _ints},
    "control_channels": {"from": _ints},
    "yolo": {
        "mask": _ints,
        "anchors": _floats,
        "classes": _int,
        **dict.fromkeys(_YOLO_TRAINING, _str),
    },
}
REQUIRED = {
    "convolutional": ("filters", "size"),
    "route": ("layers",),
    "shortcut": ("from",),
    "upsample": ("stride",),
    "maxpool": ("size", "stride"),
    "implicit_add": ("filters",),
    "implicit_mul": ("filters",),
    "shift_channels": ("from",),
    "control_channels": ("from",),
    "yolo": ("mask", "anchors"),
}
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # the authors' Swish is x * sigmoid(x)
    "mish": nn.Mish,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "logistic": nn.Sigmoid,
    "linear": None,
}


@dataclass
class Section:
    """One ``[type]`` block: its options parsed, the line of its header and of each key."""

    type: str
    line: int
    options: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


def parse_cfg(text: str, name: str = "cfg") -> list[Section]:
    """The sections of a darknet cfg ``text`` (``name`` is used in messages), ``[net]`` first.

    Unknown sections, unknown or repeated keys, values that do not parse and missing required
    keys raise ``ValueError`` naming the line.
    """
    if not isinstance(text, str):
        raise TypeError(f"cfg={type(text).__name__} is not valid; expected the cfg text")
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        where = f"{name}, line {number}"
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{where}: {raw.strip()!r} is not a section header ([type])")
            kind = line[1:-1].strip()
            if kind not in SECTION_KEYS:
                known = ", ".join(f"[{k}]" for k in sorted(SECTION_KEYS))
                raise ValueError(f"{where}: unknown section [{kind}]; known sections are {known}")
            if not sections and kind != "net":
                raise ValueError(f"{where}: the first section must be [net], not [{kind}]")
            if sections and kind == "net":
                raise ValueError(f"{where}: [net] may only be the first section")
            sections.append(Section(kind, number))
            continue
        if "=" not in line:
            raise ValueError(f"{where}: {raw.strip()!r} is neither a [section] nor key=value")
        if not sections:
            raise ValueError(f"{where}: key=value before the first section ([net])")
        key, value = (part.strip() for part in line.split("=", 1))
        section = sections[-1]
        parsers = SECTION_KEYS[section.type]
        if key not in parsers:
            valid = ", ".join(sorted(parsers)) or "none"
            raise ValueError(
                f"{where}: unknown key {key!r} in [{section.type}]; valid keys are {valid}"
            )
        if key in section.options:
            raise ValueError(
                f"{where}: key {key!r} repeats in [{section.type}] (first at line "
                f"{section.lines[key]})"
            )
        try:
            section.options[key] = parsers[key](value)
        except ValueError:
            kind = {_int: "an integer", _ints: "comma-separated integers"}.get(
                parsers[key], "comma-separated numbers"
            )
            raise ValueError(f"{where}: {key}={value!r} is not valid; expected {kind}") from None
        section.lines[key] = number
    if not sections:
        raise ValueError(f"{name}: no sections; a cfg starts with [net]")
    for section in sections:
        for key in REQUIRED.get(section.type, ()):
            if key not in section.options:
                raise ValueError(f"{name}, line {section.line}: [{section.type}] needs {key}=")
    return sections


# ---------------------------------------------------------------------------------------------
# Modules. Each has ``out_channels``; multi-input ones take a list (``Layer.many``).


class ConvBN(nn.Sequential):
    """``[convolutional]``: ``Conv2d`` (+ ``BatchNorm2d``) (+ ``activation``), the authors'
    submodule names."""

    def __init__(self, in_channels: int, o: dict[str, Any]) -> None:
        super().__init__()
        k, bn = o["size"], bool(o.get("batch_normalize", 0))
        pad = o.get("pad", 0)
        self.out_channels = o["filters"]
        self.add_module(
            "Conv2d",
            nn.Conv2d(
                in_channels, o["filters"], k, o.get("stride", 1),
                padding=k // 2 if pad else o.get("padding", 0), groups=o.get("groups", 1),
                bias=not bn,
            ),
        )  # fmt: skip
        if bn:
            self.add_module("BatchNorm2d", nn.BatchNorm2d(o["filters"], BN_EPS, BN_MOMENTUM))
        act = ACTIVATIONS[o.get("activation", "linear")]
        if act is not None:
            self.add_module("activation", act())


class Route(nn.Module):
    """``[route]``: concatenation on channels; with ``groups``, channel group ``group_id``."""

    def __init__(self, in_channels: list[int], groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.groups, self.group_id = groups, group_id
        self.out_channels = sum(in_channels) // groups

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)
        return x if self.groups == 1 else x.chunk(self.groups, 1)[self.group_id]


class Shortcut(nn.Module):
    """``[shortcut]``: the previous output plus the others (the authors' channel slicing when
    widths differ)."""

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.out_channels = in_channels[0]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = inputs[0]
        for a in inputs[1:]:
            if a.shape[1] == x.shape[1]:
                x = x + a
            elif x.shape[1] > a.shape[1]:
                x = torch.cat((x[:, : a.shape[1]] + a, x[:, a.shape[1] :]), 1)
            else:
                x = x + a[:, : x.shape[1]]
        return x


class Reorg(nn.Module):
    """``[reorg]``: space to depth, slices in the authors' order (even/even, odd rows, odd
    columns, odd/odd)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = 4 * in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )


class Upsample(nn.Upsample):
    """``[upsample]``: nearest, by ``stride``."""

    def __init__(self, in_channels: int, stride: int) -> None:
        super().__init__(scale_factor=stride, mode="nearest")
        self.out_channels = in_channels


class MaxPool(nn.Sequential):
    """``[maxpool]``: padding ``(size - 1) // 2``; size 2 stride 1 pads right/bottom first."""

    def __init__(self, in_channels: int, size: int, stride: int) -> None:
        super().__init__()
        if size == 2 and stride == 1:
            self.add_module("ZeroPad2d", nn.ZeroPad2d((0, 1, 0, 1)))
        self.add_module("MaxPool2d", nn.MaxPool2d(size, stride, padding=(size - 1) // 2))
        self.out_channels = in_channels


class ImplicitVector(nn.Module):
    """``[implicit_add]`` / ``[implicit_mul]`` outside the head pattern: the vector as a
    ``[1, C, 1, 1]`` map for a ``[shift_channels]`` / ``[control_channels]`` layer."""

    def __init__(self, kind: str, channels: int) -> None:
        from implicit_knowledge import ImplicitAdd, ImplicitMul

        super().__init__()
        self.implicit = (ImplicitAdd if kind == "implicit_add" else ImplicitMul)(channels)
        self.out_channels = channels

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.implicit.implicit().view(1, -1, 1, 1)


class Combine(nn.Module):
    """``[shift_channels]`` (``x + a``) / ``[control_channels]`` (``x * a``)."""

    def __init__(self, in_channels: list[int], multiply: bool) -> None:
        super().__init__()
        self.multiply = multiply
        self.out_channels = in_channels[0]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x, a = inputs
        return x * a if self.multiply else x + a

    def extra_repr(self) -> str:
        return "multiply" if self.multiply else "add"


class Collected(nn.Module):
    """A cfg layer whose work the detection head does (see :attr:`DarknetInfo.renames`)."""

    def __init__(self, kind: str, head: int, out_channels: int = 0) -> None:
        super().__init__()
        self.kind, self.head, self.out_channels = kind, head, out_channels

    def forward(self, inputs: list[torch.Tensor]) -> None:
        return None

    def extra_repr(self) -> str:
        return f"[{self.kind}] in layers.{self.head}"


# ---------------------------------------------------------------------------------------------


@dataclass
class DarknetInfo:
    """What the model needs besides its layers: head levels and the authors' key names."""

    strides: list[int]
    anchors: list[list[list[float]]]
    implicit: bool
    head_index: int
    feature_indices: list[int]
    feature_strides: list[int]
    first_conv: str
    #: (our key prefix, their key prefix) for the layers the head collected, e.g.
    #: ("187.out.0.conv.", "173.Conv2d."), ("187.out.0.add.prior.value", "164.implicit")
    renames: list[tuple[str, str]] = field(default_factory=list)

    def to_authors(self, key: str) -> str:
        """``"<i>.<path>"`` (our key without ``layers.``) as the authors' ``Darknet`` key."""
        for ours, theirs in self.renames:
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                break
        else:
            index, rest = key.split(".", 1)
            if rest.startswith("implicit.prior.value"):  # a stand-alone implicit layer
                rest = "implicit"
            key = f"{index}.{rest}"
        return f"module_list.{key}"

    def to_ours(self, key: str) -> str:
        """The authors' ``"<i>.<path>"`` (``module_list.`` removed) as our key (no ``layers.``)."""
        for ours, theirs in self.renames:
            if key.startswith(theirs):
                return ours + key[len(theirs) :]
        index, rest = key.split(".", 1)
        return f"{index}.implicit.prior.value" if rest == "implicit" else key


def _fail(name: str, section: Section, key: str | None, message: str) -> ValueError:
    line = section.lines.get(key, section.line) if key else section.line
    return ValueError(f"{name}, line {line}: [{section.type}] {message}")


def build_darknet(
    sections: list[Section],
    num_classes: int,
    in_chans: int,
    name: str = "cfg",
    features: list[int] | None = None,
) -> tuple[list[Layer], list[nn.Module], DarknetInfo]:
    """Layer specs, modules and head description for the parsed cfg ``sections``.

    ``features``: the backbone's stride 8/16/32(/64) output layers (``feature_info``); by
    default, for each head stride, the last layer at that stride before the first
    ``[upsample]``.
    """
    from ..heads import AnchorBasedHead

    defs = sections[1:]  # [net] is not a layer
    if not defs:
        raise ValueError(f"{name}: no layers after [net]")
    channels: dict[int, int] = {-1: in_chans}
    strides: dict[int, int] = {-1: 1}
    sources: list[tuple[int, ...]] = []

    def resolve(i: int, section: Section, key: str, value: int) -> int:
        j = i + value if value < 0 else value
        if not 0 <= j < i:
            raise _fail(
                name, section, key,
                f"layer {i}: {key}={value} refers to layer {j}; expected an earlier layer "
                f"(0 .. {i - 1}, or -1 .. -{i})",
            )  # fmt: skip
        return j

    yolos = [i for i, s in enumerate(defs) if s.type == "yolo"]
    if not yolos:
        raise ValueError(f"{name}: no [yolo] section: a detector needs at least one")
    head_index = yolos[-1]
    modules: list[nn.Module | None] = []
    for i, s in enumerate(defs):
        o = s.options
        src: tuple[int, ...] = (i - 1,)
        if s.type == "convolutional":
            activation = o.get("activation", "linear")
            if activation not in ACTIVATIONS:
                raise _fail(
                    name, s, "activation",
                    f"activation={activation!r} is not supported; valid: {sorted(ACTIVATIONS)}",
                )  # fmt: skip
            groups = o.get("groups", 1)
            if channels[i - 1] % groups or o["filters"] % groups:
                raise _fail(
                    name, s, "groups",
                    f"groups={groups} does not divide {channels[i - 1]} input / {o['filters']} "
                    "output channels",
                )  # fmt: skip
            module: nn.Module | None = ConvBN(channels[i - 1], o)
            stride = strides[i - 1] * o.get("stride", 1)
        elif s.type == "route":
            src = tuple(resolve(i, s, "layers", v) for v in o["layers"])
            groups, gid = o.get("groups", 1), o.get("group_id", 0)
            if groups < 1 or not 0 <= gid < groups:
                raise _fail(name, s, "group_id", f"group_id={gid} is not in 0 .. groups - 1")
            module = Route([channels[j] for j in src], groups, gid)
            stride = strides[src[0]]
        elif s.type == "shortcut":
            if o.get("activation", "linear") != "linear":
                raise _fail(name, s, "activation", "only activation=linear is supported")
            src = (i - 1, *(resolve(i, s, "from", v) for v in o["from"]))
            module, stride = Shortcut([channels[j] for j in src]), strides[i - 1]
        elif s.type == "upsample":
            module = Upsample(channels[i - 1], o["stride"])
            stride = max(1, strides[i - 1] // o["stride"])
        elif s.type == "maxpool":
            module = MaxPool(channels[i - 1], o["size"], o["stride"])
            stride = strides[i - 1] * o["stride"]
        elif s.type == "reorg":
            module, stride = Reorg(channels[i - 1]), strides[i - 1] * 2
        elif s.type in ("implicit_add", "implicit_mul"):
            src, module, stride = (), ImplicitVector(s.type, o["filters"]), 1
        elif s.type in ("shift_channels", "control_channels"):
            src = (i - 1, resolve(i, s, "from", o["from"][0]))
            if len(o["from"]) != 1 or defs[src[1]].type not in ("implicit_add", "implicit_mul"):
                raise _fail(name, s, "from", "from= must name one [implicit_add/mul] layer")
            if channels[src[1]] != channels[i - 1]:
                raise _fail(
                    name, s, "from",
                    f"layer {i}: the implicit layer {src[1]} has {channels[src[1]]} channels, "
                    f"its input {channels[i - 1]}",
                )  # fmt: skip
            module = Combine([channels[j] for j in src], s.type == "control_channels")
            stride = strides[i - 1]
        else:  # yolo: filled in below
            module, stride = None, strides[i - 1]
        modules.append(module)
        sources.append(src)
        channels[i] = getattr(module, "out_channels", channels[i - 1])
        strides[i] = stride

    # The head: what each [yolo] reads, collected into one AnchorBasedHead.
    feats, levels, anchors, renames, collected = [], [], [], [], {}
    implicit_levels = []
    for level, y in enumerate(yolos):
        s = defs[y]
        parts = _head_pattern(defs, sources, y)
        if parts is None:
            raise _fail(
                name, s, None,
                f"layer {y}: a [yolo] must read a 1x1 [convolutional] without batch_normalize "
                "and with activation=linear, optionally as [shift_channels] (from an "
                "[implicit_add]) -> that convolution -> [control_channels] (from an "
                "[implicit_mul])",
            )  # fmt: skip
        feature, conv, add, mul = parts
        o = s.options
        all_anchors = o["anchors"]
        if len(all_anchors) % 2:
            raise _fail(name, s, "anchors", "anchors= must be width,height pairs")
        pairs = [all_anchors[k : k + 2] for k in range(0, len(all_anchors), 2)]
        if any(not 0 <= m < len(pairs) for m in o["mask"]):
            raise _fail(name, s, "mask", f"mask={o['mask']} indexes {len(pairs)} anchors")
        per_level = [pairs[m] for m in o["mask"]]
        classes = o.get("classes", 80)
        expected = len(per_level) * (5 + classes)
        if defs[conv].options["filters"] != expected:
            raise _fail(
                name, defs[conv], "filters",
                f"layer {conv}: filters={defs[conv].options['filters']}; the [yolo] at line "
                f"{s.line} needs {len(per_level)} anchors x (5 + {classes} classes) = {expected}",
            )  # fmt: skip
        if anchors and len(per_level) != len(anchors[0]):
            raise _fail(name, s, "mask", "every [yolo] must use the same number of anchors")
        feats.append(feature)
        levels.append(strides[y])
        anchors.append(per_level)
        implicit_levels.append(add is not None)
        prefix = f"{head_index}.out.{level}."
        if add is None:
            renames.append((f"{prefix}weight", f"{conv}.Conv2d.weight"))
            renames.append((f"{prefix}bias", f"{conv}.Conv2d.bias"))
        else:
            renames.append((f"{prefix}conv.", f"{conv}.Conv2d."))
            renames.append((f"{prefix}add.prior.value", f"{add}.implicit"))
            renames.append((f"{prefix}mul.prior.value", f"{mul}.implicit"))
        for part in (conv, add, mul, *(() if add is None else (conv - 1, conv + 1)), y):
            if part is not None:
                collected[part] = defs[part].type
    if len(set(implicit_levels)) > 1:
        raise ValueError(
            f"{name}: either every [yolo] reads shift_channels -> conv -> control_channels "
            "(YOLOR's implicit prediction refinement) or none does"
        )
    if levels != sorted(set(levels)):
        raise ValueError(f"{name}: the [yolo] layers' strides {levels} must increase")
    for i, src in enumerate(sources):
        used = [j for j in src if j in collected] if i not in collected else []
        if used:
            raise _fail(
                name, defs[i], None,
                f"layer {i} reads layer {used[0]}, which the detection head takes over; "
                "only the [yolo] pattern may use it",
            )  # fmt: skip
    head = AnchorBasedHead(
        [channels[f] for f in feats], num_classes, levels, anchors=anchors,
        implicit=implicit_levels[0],
    )  # fmt: skip
    for i, kind in collected.items():
        modules[i] = Collected(kind, head_index, channels[i])
    modules[head_index] = head

    if features is None:
        first_up = next((i for i, s in enumerate(defs) if s.type == "upsample"), len(defs))
        features = []
        for stride in levels:
            at = [i for i in range(first_up) if strides[i] == stride and i not in collected]
            if at:
                features.append(at[-1])
    for f in features:
        if not 0 <= f < len(defs) or f in collected:
            raise ValueError(f"{name}: feature layer {f} is not a layer of the backbone")
    last_feature = max(features) if features else -1
    tags = {f: f"B{strides[f].bit_length() - 1}" for f in features}
    tags[head_index] = "Main"
    layers = []
    for i, s in enumerate(defs):
        section = "backbone" if i <= last_feature else "neck"
        if i == head_index:
            section, src = "head", tuple(feats)
        else:
            src = () if i in collected else sources[i]
        block = "yolo" if i == head_index else s.type
        many = i == head_index or i in collected or block in MULTI_INPUT
        layers.append(Layer(i, block, src, many, {}, tags.get(i), section))
    first_conv = next(i for i, s in enumerate(defs) if s.type == "convolutional")
    info = DarknetInfo(
        strides=levels,
        anchors=anchors,
        implicit=implicit_levels[0],
        head_index=head_index,
        feature_indices=list(features),
        feature_strides=[strides[f] for f in features],
        first_conv=f"layers.{first_conv}.Conv2d",
        renames=renames,
    )
    return layers, list(modules), info


def _head_pattern(
    defs: list[Section], sources: list[tuple[int, ...]], y: int
) -> tuple[int, int, int | None, int | None] | None:
    """(feature layer, output conv, implicit_add, implicit_mul) the [yolo] at ``y`` reads."""

    def is_output_conv(i: int) -> bool:
        if i < 0 or defs[i].type != "convolutional":
            return False
        o = defs[i].options
        plain = not o.get("batch_normalize", 0) and o.get("activation", "linear") == "linear"
        return plain and o["size"] == 1 and o.get("stride", 1) == 1 and o.get("groups", 1) == 1

    if y >= 1 and defs[y - 1].type == "control_channels":
        mul = sources[y - 1][1]
        shift = y - 3
        if not is_output_conv(y - 2) or shift < 0 or defs[shift].type != "shift_channels":
            return None
        add = sources[shift][1]
        if defs[add].type != "implicit_add" or defs[mul].type != "implicit_mul":
            return None
        return shift - 1, y - 2, add, mul
    if is_output_conv(y - 1):
        return y - 2, y - 1, None, None
    return None
