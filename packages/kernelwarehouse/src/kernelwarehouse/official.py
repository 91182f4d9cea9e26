"""Load the authors' KernelWarehouse models (OSVAI/KernelWarehouse) into timm-based KW models.

``load(arch, state_dict, config)`` builds timm's model for ``arch``, converts it with the
warehouse grouping that the authors' configuration implies (``sharing_range``) and their cell
settings (``reduction``, ``cell_num_ratio``, ``cell_inplane_ratio``, ``cell_outplane_ratio``,
``nonlocal_basis_ratio``; numbers or per-warehouse lists in the authors' warehouse order), then
renames their ``state_dict`` onto it: warehouses ``warehouse_manager.weights.<i>`` become the
``warehouse.cells`` of each warehouse's first layer, and module paths are mapped to timm's.
The attentions' one-hot targets beta are not in their checkpoints; they follow from the
assignment rule, which this package applies in the same layer order.

Example (with the fixture shipped in the tests):
    >>> from safetensors import safe_open  # doctest: +SKIP
    >>> with safe_open("resnet18_kw1x.safetensors", "pt") as f:  # doctest: +SKIP
    ...     config = json.loads(f.metadata()["config"])
    ...     sd = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    >>> model = load("kw_resnet18", sd, config).eval()  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import timm
import torch
from torch import nn

from .convert import GROUPING_RULES, convert
from .layers import KWLayer

__all__ = ["OFFICIAL_ARCHITECTURES", "load", "rename_key"]

_BASE = {
    "kw_resnet18": "resnet18",
    "kw_resnet50": "resnet50",
    "kw_mobilenetv2_100": "mobilenetv2_100",
    "kw_mobilenetv2_050": "mobilenetv2_050",
    "kw_convnext_tiny": "convnext_tiny",
    "kw1d2x_mobilenetv2_100": "mobilenetv2_100",
    "kw1d2x_mobilenetv2_050": "mobilenetv2_050",
}
OFFICIAL_ARCHITECTURES = tuple(_BASE)

# The authors' 1/2x MobileNetV2 constructors fix their warehouse settings in code (their JSON
# files hold only training options). Ten warehouses in reservation order: stem, the depth-wise
# layers of stages 1-5, then stage 6's expansion, depth-wise and projection (+ head) layers, and
# the classifier; the other point-wise layers stay static.
_HALF_MOBILENETV2 = {
    "reduction": 0.03125,
    "cell_num_ratio": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.5),
    "cell_inplane_ratio": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.025),
    "cell_outplane_ratio": (1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 1),
    "sharing_range": ("layer",),
}
_BUILTIN_CONFIGS: dict[str, Mapping[str, Any]] = {
    "kw1d2x_mobilenetv2_100": _HALF_MOBILENETV2,
    "kw1d2x_mobilenetv2_050": _HALF_MOBILENETV2,
}
_CONFIG_KEYS = ("reduction", "cell_num_ratio", "cell_inplane_ratio", "cell_outplane_ratio")
#: what the authors' main.py passes for a warehouse setting their JSON leaves out
_UNSET = (None, [], (), "")


def _same_setting(value: Any, builtin: Any) -> bool:
    """Whether a config value equals a built-in setting (a number or one per warehouse)."""
    if isinstance(value, str):
        value = value.split("_")
    if isinstance(value, bytes | Mapping) or not isinstance(value, int | float | Sequence):
        return False
    if isinstance(builtin, tuple) and all(isinstance(v, str) for v in builtin):
        # sharing_range; their constructor writes tuple("layer"), i.e. its letters
        if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
            return False
        return frozenset(v for v in value if v) in (frozenset(builtin), frozenset("layer"))
    values = [value] if isinstance(value, int | float) else list(value)
    builtins = [builtin] if isinstance(builtin, int | float) else list(builtin)
    if len(values) == 1:
        values = values * len(builtins)
    return len(values) == len(builtins) and all(
        isinstance(v, int | float) and float(v) == float(b) for v, b in zip(values, builtins)
    )


def _builtin_config(arch: str, config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The settings the authors' ``arch`` constructor fixes in code, after checking that
    ``config`` (their JSON of training options, ``{}``, None, or these settings) agrees."""
    builtin = _BUILTIN_CONFIGS[arch]
    if config is None:
        return builtin
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
    fixed_settings = {**builtin, "nonlocal_basis_ratio": 1.0}  # main.py's default, unused here
    for key in (*_CONFIG_KEYS, "sharing_range", "nonlocal_basis_ratio"):
        value = config.get(key)
        if any(value is u or (type(value) is type(u) and value == u) for u in _UNSET):
            continue  # unset in their JSON (main.py's default), ignored by their constructor
        if _same_setting(value, fixed_settings[key]):
            continue
        fixed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in builtin.items()}
        raise ValueError(
            f"config[{key!r}]={value!r} is invalid for arch={arch!r}: the authors' constructor "
            f"fixes its warehouse settings in code ({fixed}); pass their JSON of training "
            "options, {} or None"
        )
    return builtin


def _sharing(config: Mapping[str, Any]) -> frozenset[str]:
    value = config.get("sharing_range", ())
    if isinstance(value, str):
        value = value.split("_")
    return frozenset(v for v in value if v)


def _rule_for(arch: str, sharing: frozenset[str]) -> str:
    if arch.startswith("kw1d2x_mobilenetv2"):
        options = {frozenset({"layer"}): "mobilenetv2_half"}
    elif arch.startswith("kw_resnet"):
        options = {frozenset({"layer", "conv"}): "resnet"}
    elif arch.startswith("kw_mobilenetv2"):
        options = {
            frozenset({"layer", "pwconv"}): "mobilenetv2",
            frozenset({"layer"}): "mobilenetv2_split",
        }
    else:
        options = {frozenset({"layer", "pwconv"}): "convnext_authors"}
    if sharing not in options:
        valid = [sorted(k) for k in options]
        raise ValueError(
            f"config['sharing_range']={sorted(sharing)} is not supported for {arch!r}; "
            f"supported: {valid}"
        )
    return options[sharing]


# ------------------------------------------------------------------ key renaming per family
def _rename_resnet(key: str) -> str:
    return key


_MBV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_MBV2_BLOCKS = [(s, i) for s, d in enumerate(_MBV2_DEPTHS) for i in range(d)]
_MBV2_FIRST = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}
_MBV2_INNER = {
    "0.0": "conv_pw",
    "0.1": "bn1",
    "1.0": "conv_dw",
    "1.1": "bn2",
    "2": "conv_pwl",
    "3": "bn3",
}


def _rename_mobilenetv2(key: str) -> str:
    match = re.match(r"^features\.(\d+)\.(.*)$", key)
    if match is None:
        # a KW classifier (1/2x) is their KWLinear, which wraps a KWConv1d as ``conv``
        return re.sub(r"^classifier\.1\.(conv\.)?", "classifier.", key)
    index, rest = int(match[1]), match[2]
    if index == 0:
        return {"0": "conv_stem", "1": "bn1"}[rest.split(".")[0]] + rest[1:]
    if index == len(_MBV2_BLOCKS) + 1:
        return {"0": "conv_head", "1": "bn2"}[rest.split(".")[0]] + rest[1:]
    stage, block = _MBV2_BLOCKS[index - 1]
    table = _MBV2_FIRST if stage == 0 else _MBV2_INNER
    inner = re.match(r"^conv\.(\d+(?:\.\d+)?)\.(.*)$", rest)
    # "conv.0.0.weight": try the two-level key first (conv.0.0), then one level (conv.2)
    parts = rest.split(".")
    for depth in (2, 1):
        head = ".".join(parts[1 : 1 + depth])
        if head in table:
            tail = ".".join(parts[1 + depth :])
            return f"blocks.{stage}.{block}.{table[head]}.{tail}"
    raise KeyError(f"unknown MobileNetV2 key {key!r} ({inner})")


def _rename_convnext(key: str) -> str:
    rules = [
        (r"^downsample_layers\.0\.0\.", "stem.0."),
        (r"^downsample_layers\.0\.1\.", "stem.1."),
        (r"^downsample_layers\.(\d)\.(\d)\.", r"stages.\1.downsample.\2."),
        (r"^stages\.(\d)\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
        (r"^stages\.(\d)\.(\d+)\.pwconv1\.", r"stages.\1.blocks.\2.mlp.fc1."),
        (r"^stages\.(\d)\.(\d+)\.pwconv2\.", r"stages.\1.blocks.\2.mlp.fc2."),
        (r"^stages\.(\d)\.(\d+)\.norm\.", r"stages.\1.blocks.\2.norm."),
        (r"^stages\.(\d)\.(\d+)\.gamma$", r"stages.\1.blocks.\2.gamma"),
        (r"^norm\.", "head.norm."),
        (r"^head\.", "head.fc."),
    ]
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return key


_RENAMERS: dict[str, Callable[[str], str]] = {
    "kw_resnet": _rename_resnet,
    "kw_mobilenetv2": _rename_mobilenetv2,
    "kw1d2x_mobilenetv2": _rename_mobilenetv2,
    "kw_convnext": _rename_convnext,
}


def rename_key(arch: str, key: str) -> str:
    """The timm-model key of the authors' ``state_dict`` key ``key`` (not for warehouses).

    Example:
        >>> rename_key("kw_mobilenetv2_100", "features.2.conv.1.0.attention.fc1.weight")
        'blocks.1.0.conv_dw.attention.fc1.weight'
    """
    for prefix, fn in _RENAMERS.items():
        if arch.startswith(prefix):
            return fn(key)
    raise ValueError(f"arch={arch!r} is invalid: expected one of {list(OFFICIAL_ARCHITECTURES)}")


# ------------------------------------------------------------------ loading
def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_ema"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
            break
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict[{k!r}] is a {type(v).__name__}, expected a tensor")
        k = k.removeprefix("module.")
        out[k] = v.float() if v.is_floating_point() else v
    return out


def _per_warehouse(value: Any, order: Sequence[str], key: str) -> dict[str, float]:
    if isinstance(value, int | float):
        return dict.fromkeys(order, float(value))
    values = list(value)
    if len(values) == 1:
        return dict.fromkeys(order, float(values[0]))
    if len(values) != len(order):
        raise ValueError(
            f"config[{key!r}] has {len(values)} entries but the model has {len(order)} warehouses"
        )
    return {g: float(v) for g, v in zip(order, values)}


def _authors_order(arch: str, groups: list[str]) -> list[str]:
    if arch.startswith("kw_convnext"):
        # The authors reserve the stem and the three down-sampling layers before the stages.
        first = [g for g in groups if g == "stem" or g.startswith("downsample")]
        return first + [g for g in groups if g not in first]
    return groups


def _num_classes(arch: str, sd: Mapping[str, torch.Tensor]) -> int:
    keys = ("fc.weight", "classifier.weight", "classifier.1.weight", "classifier.1.conv.bias")
    for key in (*keys, "head.weight"):
        if key in sd:
            return sd[key].shape[0]
    raise ValueError(
        f"state_dict has no classifier weight for {arch!r} (looked for fc/classifier/head)"
    )


def load(
    arch: str,
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build ``arch`` from the authors' ``config`` and load their ``state_dict`` into it.

    Args:
        arch: one of :data:`OFFICIAL_ARCHITECTURES`.
        state_dict: the authors' model ``state_dict`` (or a checkpoint holding it under
            ``model``); a ``module.`` prefix is removed; tensors are cast to float32.
        config: the authors' settings: ``reduction``, ``cell_num_ratio``,
            ``cell_inplane_ratio``, ``cell_outplane_ratio``, ``sharing_range`` (optional:
            ``nonlocal_basis_ratio``); other keys of their JSON files are ignored. The 1/2x
            MobileNetV2 constructors (``kw1d2x_*``) fix these settings in their code: for them
            pass their JSON as it is (training options only), ``{}`` or ``None``; a warehouse
            setting that differs from the fixed one is refused. Other architectures need it.
        **timm_kwargs: extra keyword arguments for timm's model (e.g. ``drop_rate``).

    Returns:
        The timm model with KW layers (``model.kw_plan`` holds its plan), in training mode;
        tau is left at 1 (the authors' code starts at 0: call ``set_temperature``).
    """
    if arch not in _BASE:
        raise ValueError(
            f"arch={arch!r} is invalid: expected one of {list(OFFICIAL_ARCHITECTURES)}"
        )
    if arch in _BUILTIN_CONFIGS:
        config = _builtin_config(arch, config)
    elif config is None:
        raise ValueError(
            f"config=None is invalid for arch={arch!r}: pass the authors' warehouse settings "
            f"(only {sorted(_BUILTIN_CONFIGS)} fix them in code)"
        )
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    sd = _unwrap(state_dict)
    rule_name = _rule_for(arch, _sharing(config))
    rule = GROUPING_RULES[rule_name]
    model = timm.create_model(_BASE[arch], num_classes=_num_classes(arch, sd), **timm_kwargs)
    groups: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and type(module) in (nn.Conv2d, nn.Linear):
            group = rule(model, name, module)
            if group is not None and group not in groups:
                groups.append(group)
    order = _authors_order(arch, groups)
    settings = {
        "budget": _per_warehouse(config.get("cell_num_ratio", 1), order, "cell_num_ratio"),
        "cell_in_ratio": _per_warehouse(
            config.get("cell_inplane_ratio", 1), order, "cell_inplane_ratio"
        ),
        "cell_out_ratio": _per_warehouse(
            config.get("cell_outplane_ratio", 1), order, "cell_outplane_ratio"
        ),
        "reduction": _per_warehouse(config.get("reduction", 0.0625), order, "reduction"),
        "nonlocal_basis_ratio": _per_warehouse(
            config.get("nonlocal_basis_ratio", 1), order, "nonlocal_basis_ratio"
        ),
    }
    norm = "layernorm" if arch.startswith("kw_convnext") else "batchnorm"
    plan = convert(model, groups=rule_name, exclude=[], attention_norm=norm, **settings)
    model.kw_plan = plan
    owners = {
        wp.group: wp.layers[0].name for wp in plan.warehouses
    }  # first layer registers the warehouse
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, value in sd.items():
        match = re.match(r"^warehouse_manager\.weights\.(\d+)$", key)
        if match:
            index = int(match[1])
            if index >= len(order):
                problems.append(f"{key}: the model has only {len(order)} warehouses")
                continue
            new = f"{owners[order[index]]}.warehouse.cells"
        else:
            new = rename_key(arch, key)
        if new not in target:
            problems.append(f"unexpected {key!r}")
            continue
        if value.numel() != target[new].numel():
            problems.append(
                f"{key!r}: shape {tuple(value.shape)} but {arch} expects {tuple(target[new].shape)}"
            )
            continue
        mapped[new] = value.reshape(target[new].shape)
    missing = [
        k
        for k in target
        if k not in mapped and not k.endswith(("temperature", "num_batches_tracked"))
    ]
    problems += [f"missing {k!r}" for k in missing]
    if problems:
        head = "; ".join(problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(
            f"state_dict does not fit {arch!r} with config {dict(config)}: {head}{more}. "
            "Is it a checkpoint of another architecture or configuration?"
        )
    model.load_state_dict(mapped, strict=False)
    return model


def kw_layers(model: nn.Module) -> list[str]:
    """Names of the KW layers of ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, KWLayer)]
