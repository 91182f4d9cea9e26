"""Warehouse manager: plan cell shapes and warehouse sizes for groups of layers, then build.

Usage: ``reserve`` every static layer with the name of the warehouse group it joins (in module
order: cells are handed out in that order, Appendix A.2), ``plan`` to see the layout, ``build``
to get the KW layers that replace them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import assign_cells
from .layers import KWConv1d, KWConv2d, KWConv3d, KWLayer, KWLinear, Warehouse
from .partition import CellShape, check_budget, partition_kernel, plan_cell_shape

__all__ = [
    "LAYER_TYPES",
    "LayerPlan",
    "PerGroup",
    "WarehouseManager",
    "WarehousePlan",
]

#: static layer type -> KW layer type (exact types: subclasses change forward and are refused)
LAYER_TYPES: dict[type[nn.Module], type[KWLayer]] = {
    nn.Conv1d: KWConv1d,
    nn.Conv2d: KWConv2d,
    nn.Conv3d: KWConv3d,
    nn.Linear: KWLinear,
}

PerGroup = float | Mapping[str, float] | Callable[[str], float]


def _for_group(value: PerGroup | None, group: str, name: str) -> float | None:
    """Resolve a per-group setting: a number, ``{pattern: number}`` (fnmatch) or a callable."""
    if value is None or isinstance(value, int | float):
        return value
    if callable(value):
        return value(group)
    for pattern, v in value.items():
        if fnmatch.fnmatchcase(group, pattern):
            return v
    raise KeyError(
        f"{name} has no entry for warehouse group {group!r}; patterns given: {list(value)} "
        "(add one, or a '*' entry)"
    )


def _kernel_shape(module: nn.Module) -> tuple[int, ...]:
    return tuple(module.weight.shape)


@dataclass
class LayerPlan:
    """One static layer's place in a warehouse."""

    name: str
    kind: str
    kernel_shape: tuple[int, ...]
    num_mixtures: int = 0
    cell_start: int = 0


@dataclass
class WarehousePlan:
    """One warehouse: its cell shape, cell count ``n = budget * m_t`` and its layers."""

    group: str
    cell: CellShape
    budget: float
    num_cells: int
    layers: list[LayerPlan] = field(default_factory=list)

    @property
    def total_mixtures(self) -> int:
        """``m_t``: cells of all its layers."""
        return sum(lp.num_mixtures for lp in self.layers)

    @property
    def params(self) -> int:
        return self.num_cells * self.cell.numel


def _check_budget(budget: float, group: str) -> float:
    return check_budget(budget, where=f" (warehouse group {group!r})")


class WarehouseManager:
    """Plans and builds shared warehouses for groups of static layers.

    Args:
        budget: ``b = n / m_t`` per warehouse (a number, ``{pattern: b}`` or ``group -> b``).
        cell_in_ratio, cell_out_ratio: cell channels relative to the groups' greatest common
            divisors; default 1 for ``b >= 1`` and 0.5 below (the paper's "half of them").
        reduction, min_hidden, eps, nonlocal_basis_ratio: attention settings.
        spatial_partition: 1 x 1 cells (default) or whole-kernel cells.
        assignment: ``"diagonal"`` (authors) or ``"strided"`` beta rule for ``b < 1``.
        executor: the layers' executor (``"fast"`` or ``"reference"``).
        attention_norm: ``"batchnorm"`` (paper) or ``"layernorm"`` (authors' ConvNeXt).

    Example:
        >>> mgr = WarehouseManager(budget=1.0)
        >>> mgr.reserve("a", nn.Conv2d(16, 16, 3, padding=1, bias=False), "stage0")
        >>> mgr.reserve("b", nn.Conv2d(16, 32, 1, bias=False), "stage0")
        >>> [(p.group, str(p.cell), p.total_mixtures, p.num_cells) for p in mgr.plan()]
        [('stage0', '16x16x1x1', 11, 11)]
        >>> layers = mgr.build()
        >>> layers["b"](torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(
        self,
        budget: PerGroup = 1.0,
        *,
        cell_in_ratio: PerGroup | None = None,
        cell_out_ratio: PerGroup | None = None,
        reduction: PerGroup = 1 / 16,
        min_hidden: int = 16,
        eps: float = 1e-3,
        nonlocal_basis_ratio: PerGroup = 1.0,
        spatial_partition: bool = True,
        assignment: str = "diagonal",
        executor: str = "fast",
        attention_norm: str = "batchnorm",
    ) -> None:
        self.attention_norm = attention_norm
        self.budget = budget
        self.cell_in_ratio = cell_in_ratio
        self.cell_out_ratio = cell_out_ratio
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.eps = eps
        self.nonlocal_basis_ratio = nonlocal_basis_ratio
        self.spatial_partition = spatial_partition
        self.assignment = assignment
        self.executor = executor
        self._layers: dict[str, tuple[nn.Module, str]] = {}

    def reserve(self, name: str, module: nn.Module, group: str) -> None:
        """Record ``module`` (a static ``nn.Conv1d/2d/3d`` or ``nn.Linear``) for ``group``."""
        if type(module) not in LAYER_TYPES:
            raise TypeError(
                f"layer {name!r} is a {type(module).__module__}.{type(module).__name__}, which KW "
                f"cannot replace; supported types: "
                f"{', '.join('nn.' + t.__name__ for t in LAYER_TYPES)} "
                "(exclude it from conversion)"
            )
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise ValueError(
                f"layer {name!r} has padding_mode={module.padding_mode!r}; KW layers support "
                "'zeros' only (exclude it from conversion)"
            )
        if name in self._layers:
            raise ValueError(f"layer {name!r} is reserved twice")
        self._layers[name] = (module, group)

    def plan(self) -> list[WarehousePlan]:
        """Cell shapes, mixtures and warehouse sizes, in order of each group's first layer."""
        groups: dict[str, list[tuple[str, nn.Module]]] = {}
        for name, (module, group) in self._layers.items():
            groups.setdefault(group, []).append((name, module))
        plans = []
        for group, members in groups.items():
            budget = _check_budget(_for_group(self.budget, group, "budget"), group)
            default_ratio = 1.0 if budget >= 1 else 0.5
            in_ratio = _for_group(self.cell_in_ratio, group, "cell_in_ratio")
            out_ratio = _for_group(self.cell_out_ratio, group, "cell_out_ratio")
            # default halving for b < 1 snaps to a divisor; explicit ratios must divide exactly
            snap = in_ratio is None and out_ratio is None
            in_ratio = in_ratio or default_ratio
            out_ratio = out_ratio or default_ratio
            shapes = [_kernel_shape(m) for _, m in members]
            try:
                cell = plan_cell_shape(shapes, in_ratio, out_ratio, self.spatial_partition, snap)
            except ValueError as err:
                names = [n for n, _ in members]
                raise ValueError(f"warehouse group {group!r} (layers {names}): {err}") from None
            layer_plans = []
            for name, module in members:
                part = partition_kernel(_kernel_shape(module), cell, name)
                kind = type(module).__name__
                layer_plans.append(LayerPlan(name, kind, _kernel_shape(module), part.num_mixtures))
            total = sum(lp.num_mixtures for lp in layer_plans)
            plan = WarehousePlan(group, cell, budget, max(int(total * budget), 1), layer_plans)
            start = 0
            for lp in plan.layers:
                lp.cell_start = start
                _, start = assign_cells(
                    lp.num_mixtures, plan.num_cells, start, budget, self.assignment
                )
            plans.append(plan)
        return plans

    def build(self) -> dict[str, KWLayer]:
        """Create warehouses and the KW layers (with the static layers' hyper-parameters).

        Cells handed to a layer are initialised like a static kernel of that layer (Kaiming
        normal, fan-out, for convolutions; truncated normal, std 0.02, for linear layers), so at
        tau = 1 the network starts close to its static counterpart (Appendix A.2). The authors
        instead scale by the fan-out of the layer's stacked cells.
        """
        layers: dict[str, KWLayer] = {}
        for plan in self.plan():
            warehouse = Warehouse(plan.num_cells, plan.cell, name=plan.group)
            reduction = _for_group(self.reduction, plan.group, "reduction")
            basis = _for_group(self.nonlocal_basis_ratio, plan.group, "nonlocal_basis_ratio")
            start = 0
            for i, lp in enumerate(plan.layers):
                module, _ = self._layers[lp.name]
                beta, end = assign_cells(
                    lp.num_mixtures, plan.num_cells, start, plan.budget, self.assignment
                )
                common = dict(
                    warehouse=warehouse,
                    owner=(i == 0),
                    beta=beta,
                    cell_start=start,
                    budget=plan.budget,
                    reduction=reduction,
                    min_hidden=self.min_hidden,
                    eps=self.eps,
                    nonlocal_basis_ratio=basis,
                    spatial_partition=self.spatial_partition,
                    assignment=self.assignment,
                    executor=self.executor,
                    name=lp.name,
                    attention_norm=self.attention_norm,
                )
                layer = _from_static(module, common)
                _init_cells(warehouse, start, min(end, plan.num_cells), module)
                layers[lp.name] = layer
                start = end
        return layers


def _from_static(module: nn.Module, common: dict) -> KWLayer:
    kw_type = LAYER_TYPES[type(module)]
    bias = module.bias is not None
    if kw_type is KWLinear:
        layer = KWLinear(module.in_features, module.out_features, bias, **common)
    else:
        layer = kw_type(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            bias,
            **common,
        )
    # The attention scales the shared budget per layer, so keep the layer's cells on its device.
    layer.to(device=module.weight.device, dtype=module.weight.dtype)
    if bias:
        with torch.no_grad():
            layer.bias.copy_(module.bias)
    return layer


@torch.no_grad()
def _init_cells(warehouse: Warehouse, start: int, end: int, module: nn.Module) -> None:
    if end <= start:
        return
    cells = warehouse.cells[start:end]
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(cells, std=0.02)
        return
    # Kaiming normal with the fan-out of the static kernel the cells will form.
    weight = module.weight
    fan_out = weight.shape[0] * weight[0, 0].numel()
    cells.normal_(0.0, (2.0 / fan_out) ** 0.5)
