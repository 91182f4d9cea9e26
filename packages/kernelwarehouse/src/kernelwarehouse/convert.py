"""Turn the convolutions and linear layers of any model into KW layers.

A *grouping rule* names the warehouse each layer joins (or ``None`` to keep it static). Rules are
registered by name in :data:`GROUPING_RULES`; ``"auto"`` works for any timm model, and the paper
architectures register their own (see :mod:`kernelwarehouse.models`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from torch import nn

from ._checks import check_module, invalid
from ._registry import check_new_entry
from .layers import KWLayer
from .manager import LAYER_TYPES, PerGroup, WarehouseManager, WarehousePlan
from .partition import check_budget

__all__ = [
    "GROUPING_RULES",
    "ConversionPlan",
    "auto_groups",
    "convert",
    "register_grouping",
]

GroupingRule = Callable[[nn.Module, str, nn.Module], "str | None"]

#: rule name -> ``rule(model, layer_name, layer) -> warehouse group or None``
GROUPING_RULES: dict[str, GroupingRule] = {}


def register_grouping(name: str) -> Callable[[GroupingRule], GroupingRule]:
    """Decorator registering a grouping rule under ``name`` (a name already taken raises
    ``ValueError``: registries never overwrite silently)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_grouping: name={name!r} must be a non-empty string")

    def wrap(fn: GroupingRule) -> GroupingRule:
        check_new_entry("register_grouping", "grouping", GROUPING_RULES, name, fn, "rule")
        GROUPING_RULES[name] = fn
        return fn

    return wrap


_STAGE_WITH_INDEX = re.compile(r"^(.*\D)?\d+$")


def _stage_prefix(name: str) -> str:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
        if _STAGE_WITH_INDEX.match(part) and i == 0:  # e.g. ResNet's "layer3"
            return part
    return parts[0] if len(parts) > 1 else name


def _kernel_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups > 1:
        return "grouped"
    return "conv"


@register_grouping("auto")
def auto_groups(model: nn.Module, name: str, module: nn.Module) -> str | None:
    """Generic rule: one warehouse per stage (module path up to its first index, e.g.
    ``layer2``, ``blocks.3``, ``stages.1``), kernel kind (dense, grouped / depth-wise, linear)
    and channel shape, any spatial size: the repeated blocks of a stage share.

    Sharing across different channel counts is left to the paper rules (``resnet`` ...): in an
    arbitrary model the common divisor can be tiny (squeeze-excitation layers, odd widths), and
    tiny cells make ``m``, ``n`` and the attention's ``m x (n + 1)`` outputs explode.

    Example:
        >>> auto_groups(None, "stages.1.blocks.0.conv_dw", nn.Conv2d(8, 8, 7, groups=8))
        'stages.1:grouped:8x1'
        >>> auto_groups(None, "layer2.0.conv1", nn.Conv2d(8, 16, 3))
        'layer2:conv:16x8'
    """
    if not isinstance(name, str):
        raise invalid("auto_groups", "name", name, "a module name (str)", TypeError)
    if not isinstance(module, tuple(LAYER_TYPES)):
        raise invalid("auto_groups", "module", module, "an nn.Conv1d/2d/3d or nn.Linear", TypeError)
    out_ch, in_ch = module.weight.shape[:2]
    return f"{_stage_prefix(name)}:{_kernel_kind(module)}:{out_ch}x{in_ch}"


@register_grouping("per_layer")
def per_layer_groups(model: nn.Module, name: str, module: nn.Module) -> str | None:
    """Every layer its own warehouse (no sharing; ``l = 1``)."""
    return name


@dataclass
class ConversionPlan:
    """What :func:`convert` did: warehouses, their layers, parameters before and after."""

    warehouses: list[WarehousePlan]
    params_before: int
    params_after: int
    kept_static: list[str] = field(default_factory=list)

    @property
    def layer_names(self) -> list[str]:
        return [lp.name for wp in self.warehouses for lp in wp.layers]

    def group_of(self, layer: str) -> str:
        for wp in self.warehouses:
            if any(lp.name == layer for lp in wp.layers):
                return wp.group
        raise KeyError(f"layer {layer!r} is not a KW layer in this plan")

    def to_dict(self) -> dict:
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "kept_static": list(self.kept_static),
            "warehouses": [
                {
                    "group": wp.group,
                    "cell": list(wp.cell.as_tuple()),
                    "budget": wp.budget,
                    "num_cells": wp.num_cells,
                    "total_mixtures": wp.total_mixtures,
                    "params": wp.params,
                    "layers": [
                        {
                            "name": lp.name,
                            "kernel": list(lp.kernel_shape),
                            "m": lp.num_mixtures,
                            "cell_start": lp.cell_start,
                        }
                        for lp in wp.layers
                    ],
                }
                for wp in self.warehouses
            ],
        }

    def __str__(self) -> str:
        lines = [
            f"{'warehouse':<28} {'cell':<14} {'layers':>6} {'m_t':>6} {'n':>6} {'b':>6} "
            f"{'params':>11}"
        ]
        for wp in self.warehouses:
            lines.append(
                f"{wp.group:<28} {wp.cell!s:<14} {len(wp.layers):>6} {wp.total_mixtures:>6} "
                f"{wp.num_cells:>6} {wp.budget:>6.3g} {wp.params:>11,}"
            )
            for lp in wp.layers:
                shape = "x".join(str(s) for s in lp.kernel_shape)
                lines.append(
                    f"    {lp.name:<40} {shape:<18} m={lp.num_mixtures:<5} "
                    f"first cell {lp.cell_start}"
                )
        ratio = self.params_after / max(self.params_before, 1)
        lines.append(
            f"parameters: {self.params_before:,} -> {self.params_after:,} ({ratio:.3f}x); "
            f"{len(self.layer_names)} KW layers in {len(self.warehouses)} warehouses, "
            f"{len(self.kept_static)} static"
        )
        return "\n".join(lines)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _classifier_names(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    classifier = cfg.get("classifier")
    if classifier is None:
        return []
    return [classifier] if isinstance(classifier, str) else list(classifier)


def convert(
    model: nn.Module,
    budget: PerGroup = 1.0,
    groups: str | GroupingRule = "auto",
    exclude: Iterable[str] | None = None,
    *,
    include_linear: bool = True,
    **manager_kwargs,
) -> ConversionPlan:
    """Replace ``model``'s static convolutions / linear layers by KW layers, in place.

    Args:
        model: any module, typically a timm model.
        budget: ``b`` (e.g. 0.25, 0.5, 1, 2, 4); a number, ``{group pattern: b}`` or a callable.
        groups: a registered rule name (``"auto"``, ``"per_layer"``, ``"resnet"``, ...) or a
            callable ``rule(model, name, module) -> group or None`` (``None`` keeps it static).
        exclude: fnmatch patterns of layer names to keep static. ``None`` keeps the
            classifier of a timm model static (its ``pretrained_cfg['classifier']``).
        include_linear: convert ``nn.Linear`` layers too.
        **manager_kwargs: :class:`kernelwarehouse.WarehouseManager` options (cell ratios,
            reduction, spatial_partition, nonlocal_basis_ratio, assignment, executor).

    Returns:
        The :class:`ConversionPlan` (``print`` it for a table).

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet10t", num_classes=10)
        >>> plan = convert(model, budget=0.5)
        >>> plan.params_after < plan.params_before
        True
    """
    check_module("convert", "model", model)
    if isinstance(groups, str):
        if groups not in GROUPING_RULES:
            raise ValueError(
                f"groups={groups!r} is not a registered grouping rule; valid: "
                f"{sorted(GROUPING_RULES)} or a callable"
            )
        rule = GROUPING_RULES[groups]
    elif callable(groups):
        rule = groups
    else:
        raise TypeError(f"groups={groups!r} is invalid: expected a rule name or a callable")
    if not (isinstance(budget, Mapping) or callable(budget)):
        check_budget(budget)  # per-group values are checked per warehouse
    if isinstance(exclude, str):
        exclude = [exclude]
    if exclude is not None and (
        not isinstance(exclude, Iterable) or not all(isinstance(p, str) for p in exclude)
    ):
        raise invalid("convert", "exclude", exclude, "None or fnmatch patterns (str)", TypeError)
    explicit = exclude is not None
    exclude = list(_classifier_names(model) if exclude is None else exclude)
    params_before = sum(p.numel() for p in model.parameters())
    manager = WarehouseManager(budget, **manager_kwargs)
    kept: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, KWLayer):
            raise ValueError(f"model already has KW layer {name!r}: convert it only once")
        is_static = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
        if not is_static:
            continue
        if _matches(name, exclude) or (isinstance(module, nn.Linear) and not include_linear):
            kept.append(name)
            continue
        if type(module) not in LAYER_TYPES:
            raise TypeError(
                f"layer {name!r} is a {type(module).__module__}.{type(module).__name__}, a "
                "subclass with its own forward that KW cannot replace; pass "
                f"exclude=[..., {name!r}] to keep it static"
            )
        group = rule(model, name, module)
        if group is None:
            kept.append(name)
            continue
        manager.reserve(name, module, group)
    if explicit:
        names = [n for n, _ in model.named_modules()]
        unmatched = [p for p in exclude if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            raise ValueError(
                f"exclude={exclude!r} is invalid: {unmatched} match no module of the model "
                f"(module names look like {names[1:4]})"
            )
    plans = manager.plan()
    if not plans:
        raise ValueError("convert found no convolution or linear layer to turn into a KW layer")
    for name, layer in manager.build().items():
        model.set_submodule(name, layer)
    params_after = sum(p.numel() for p in model.parameters())
    return ConversionPlan(plans, params_before, params_after, kept)
