"""KernelWarehouse dynamic convolution for timm models.

Example:
    >>> import timm, torch, kernelwarehouse
    >>> model = timm.create_model("kw_resnet18", budget=0.5, num_classes=10)
    >>> model(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 10])
"""

from . import models  # registers the kw_* architectures in timm
from ._checks import check_module, invalid
from .attention import AttentionBatchNorm1d, KWAttention, assign_cells, contrasting_attention
from .convert import GROUPING_RULES, ConversionPlan, auto_groups, convert, register_grouping
from .functional import EXECUTORS, register_executor
from .layers import KWConv1d, KWConv2d, KWConv3d, KWLayer, KWLinear, KWOptions, Warehouse
from .manager import LayerPlan, WarehouseManager, WarehousePlan
from .partition import CellShape, LayerPartition, partition_kernel, plan_cell_shape
from .temperature import TemperatureScheduler, get_temperature, set_temperature

__version__ = "0.1.0"


def set_executor(model, name: str) -> int:
    """Use executor ``name`` (``"fast"``, ``"reference"`` or ``"export"``) in every KW layer of
    ``model`` (exports use ``"export"`` whatever is set)."""
    check_module("set_executor", "model", model)
    if not isinstance(name, str) or name not in EXECUTORS:
        raise invalid("set_executor", "name", name, f"one of {list(EXECUTORS)}")
    count = 0
    for module in model.modules():
        if isinstance(module, KWLayer):
            module.executor = name
            count += 1
    return count


__all__ = [
    "EXECUTORS",
    "GROUPING_RULES",
    "AttentionBatchNorm1d",
    "CellShape",
    "ConversionPlan",
    "KWAttention",
    "KWConv1d",
    "KWConv2d",
    "KWConv3d",
    "KWLayer",
    "KWLinear",
    "KWOptions",
    "LayerPartition",
    "LayerPlan",
    "TemperatureScheduler",
    "Warehouse",
    "WarehouseManager",
    "WarehousePlan",
    "__version__",
    "assign_cells",
    "auto_groups",
    "contrasting_attention",
    "convert",
    "get_temperature",
    "models",
    "partition_kernel",
    "plan_cell_shape",
    "register_executor",
    "register_grouping",
    "set_executor",
    "set_temperature",
]
