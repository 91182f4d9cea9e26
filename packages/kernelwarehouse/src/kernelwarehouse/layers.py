"""KW layers: convolutions and linear layers whose kernels are mixed from a shared warehouse.

``KWConv1d/2d/3d`` and ``KWLinear`` keep the constructor of their ``torch.nn`` counterparts.
Built alone they own a private warehouse sized by ``budget``; built by
:class:`kernelwarehouse.WarehouseManager` (or :func:`kernelwarehouse.convert`) several layers
share one :class:`Warehouse`. The first layer of a warehouse registers it as its submodule
``warehouse`` (so it appears once in ``state_dict`` and in ``parameters()``); the others hold a
plain reference. Because timm's ``features_only`` wrappers keep a prefix of the model's modules,
and the first user of a warehouse always comes before the others, a truncated model still
owns every warehouse it uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_ints, invalid
from .attention import KWAttention, assign_cells
from .export import is_exporting
from .functional import EXECUTORS, assemble_kernel_reference
from .partition import (
    CellShape,
    LayerPartition,
    check_budget,
    partition_kernel,
    plan_cell_shape,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["KWConv1d", "KWConv2d", "KWConv3d", "KWLayer", "KWLinear", "KWOptions", "Warehouse"]


class Warehouse(nn.Module):
    """``n`` kernel cells of one shape, shared by the layers of a group.

    ``cells`` is stored ``[n, f_e, c_e * k_e...]`` (the cell's spatial size folded into its last
    dimension): a 3-d tensor, so ``model.to(memory_format=torch.channels_last)`` (which converts
    every 4-d and 5-d parameter) leaves it alone; it is only ever read as ``[n, f_e c_e k_e...]``.

    Example:
        >>> wh = Warehouse(56, CellShape(64, 64, (1, 1)))
        >>> wh.cells.shape
        torch.Size([56, 64, 64])
    """

    def __init__(self, num_cells: int, cell: CellShape, name: str = "") -> None:
        super().__init__()
        check_int("Warehouse", "num_cells", num_cells)
        if not isinstance(cell, CellShape):
            raise invalid("Warehouse", "cell", cell, "a kernelwarehouse.CellShape", TypeError)
        if num_cells * cell.numel > MAX_KERNEL_NUMEL:
            raise invalid(
                "Warehouse", "num_cells", num_cells, f"num_cells x {cell.numel} <= 2**32 elements"
            )
        self.cell = cell
        self.name = name
        fe, ce, *k = cell.as_tuple()
        self.cells = nn.Parameter(torch.empty(num_cells, fe, ce * math.prod(k)))
        nn.init.kaiming_normal_(self.cells, mode="fan_out", nonlinearity="relu")

    @property
    def num_cells(self) -> int:
        return self.cells.shape[0]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n={self.num_cells}, cell={self.cell}"


#: kernels beyond this many elements are refused at construction (a typo such as 10**12
#: channels fails here instead of in an allocation): 4x a 4096 x 4096 x 7 x 7 kernel
MAX_KERNEL_NUMEL = 1 << 32


class KWOptions(TypedDict, total=False):
    """Keyword-only options every KW layer takes (documented in :class:`KWLayer`)."""

    warehouse: Warehouse | None
    owner: bool
    beta: torch.Tensor | None
    budget: float
    cell_start: int
    reduction: float
    min_hidden: int
    eps: float
    nonlocal_basis_ratio: float
    spatial_partition: bool
    assignment: str
    executor: str
    name: str
    attention_norm: str


class KWLayer(nn.Module):
    """Common machinery of KW convolutions and linear layers (not used directly).

    Args (keyword-only, shared by every KW layer, :class:`KWOptions`; defaults in brackets):
        warehouse: the shared :class:`Warehouse`; ``None`` builds a private one [None].
        owner: whether this layer registers ``warehouse`` as its submodule [False].
        beta: ``[m, n + 1]`` initial attentions; ``None`` assigns cells from ``cell_start``.
        budget: ``b = n / m`` of a private warehouse, cells per mixture of a shared one [1.0].
        cell_start: first warehouse cell handed to this layer (attention initialisation) [0].
        reduction, min_hidden, eps, nonlocal_basis_ratio: attention settings
            (:class:`kernelwarehouse.KWAttention`) [1/16, 16, 1e-3, 1.0].
        spatial_partition: 1 x 1 cells or whole-kernel cells [True].
        assignment: beta rule for b < 1, ``"diagonal"`` or ``"strided"`` ["diagonal"].
        executor: ``"fast"``, ``"reference"`` or ``"export"`` (see
            :mod:`kernelwarehouse.functional`) ["fast"]; exports always use ``"export"``.
        name: layer name used in error messages [""].
        attention_norm: ``"batchnorm"`` (paper) or ``"layernorm"`` (authors' ConvNeXt).
    """

    dims: int = 0
    __constants__ = ("dims",)
    # Python-side helpers TorchScript must not compile
    __jit_unused_properties__ = ("shared_warehouse", "num_mixtures")

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_shape: tuple[int, ...],
        bias: bool,
        *,
        warehouse: Warehouse | None = None,
        owner: bool = False,
        beta: torch.Tensor | None = None,
        budget: float = 1.0,
        cell_start: int = 0,
        reduction: float = 1 / 16,
        min_hidden: int = 16,
        eps: float = 1e-3,
        nonlocal_basis_ratio: float = 1.0,
        spatial_partition: bool = True,
        assignment: str = "diagonal",
        executor: str = "fast",
        name: str = "",
        attention_norm: str = "batchnorm",
    ) -> None:
        numel = math.prod(kernel_shape)
        if numel > MAX_KERNEL_NUMEL:
            names = (
                "in_features, out_features"
                if self.dims == 0
                else ("in_channels, out_channels, kernel_size")
            )
            raise ValueError(
                f"{type(self).__name__}: a kernel of shape {kernel_shape} ({numel} elements, from "
                f"{names}) is invalid: expected at most 2**32 elements"
            )
        if executor not in EXECUTORS:
            raise ValueError(f"executor={executor!r} is invalid: expected one of {list(EXECUTORS)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.executor = executor
        budget = check_budget(budget)
        if warehouse is None:
            ratio = 1.0 if budget >= 1 else 0.5
            cell = plan_cell_shape([kernel_shape], ratio, ratio, spatial_partition)
            m = partition_kernel(kernel_shape, cell, name or type(self).__name__).num_mixtures
            warehouse = Warehouse(max(int(m * budget), 1), cell, name=name)
            owner = True
        cells_per_mixture = budget
        self.partition: LayerPartition = partition_kernel(
            kernel_shape, warehouse.cell, name or type(self).__name__
        )
        m, n = self.partition.num_mixtures, warehouse.num_cells
        if beta is None:
            beta, _ = assign_cells(m, n, cell_start, cells_per_mixture, assignment)
        self.owns_warehouse = owner
        if owner:
            self.warehouse = warehouse
        else:
            # Plain attribute: a shared warehouse is registered once, by its first layer.
            object.__setattr__(self, "_shared_warehouse", (warehouse,))
        local = int(cells_per_mixture * m)  # this layer's own cells (authors' rounding)
        self.attention = KWAttention(
            in_channels,
            m,
            n,
            beta,
            reduction=reduction,
            min_hidden=min_hidden,
            eps=eps,
            nonlocal_basis_ratio=nonlocal_basis_ratio,
            local_start=cell_start,
            num_local_cells=local,
            norm=attention_norm,
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # the partition as plain ints, for the TorchScript forward (which has no LayerPartition):
        # mixture order (space, out, in, cell) -> the kernel's layout, as assemble_kernel_reference
        part = self.partition
        self._mixture_shape = [part.spatial_groups, part.out_groups, part.in_groups]
        self._mixture_shape += list(warehouse.cell.as_tuple())
        spatial = len(warehouse.cell.kernel_size)
        self._kernel_order = [0, 2, 4, 3, 5, 1, *range(6, 6 + spatial)]
        self._kernel_shape = list(kernel_shape)

    def __prepare_scriptable__(self) -> KWLayer:
        # torch.jit.script calls this on every module first. A shared warehouse is not a
        # submodule of its other layers (it would appear twice in state_dict), so the scripted
        # forward reads its cells from a plain tensor attribute, the same Parameter object
        object.__setattr__(self, "_script_cells", self.shared_warehouse.cells)
        return self

    # TorchScript has no starred list displays: shapes below are built with ``+``
    def _assemble_scripted(self, attention: torch.Tensor) -> torch.Tensor:
        """:func:`assemble_kernel_reference` in TorchScript: ``[B, *kernel_shape]``."""
        cells = self._script_cells
        n, batch = cells.shape[0], attention.shape[0]
        mixed = torch.mm(attention.reshape(-1, n), cells.reshape(n, -1))
        mixed = mixed.reshape([batch] + self._mixture_shape).permute(self._kernel_order)  # noqa: RUF005
        return mixed.reshape([batch] + self._kernel_shape)  # noqa: RUF005

    @property
    def shared_warehouse(self) -> Warehouse:
        """The warehouse this layer mixes its kernel from (owned or shared)."""
        if self.owns_warehouse:
            return self.warehouse
        return self.__dict__["_shared_warehouse"][0]

    @property
    def num_mixtures(self) -> int:
        return self.partition.num_mixtures

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample kernels ``[B, *weight.shape]`` this layer applies to ``x``."""
        attention = self.attention(self._pool(x))
        return assemble_kernel_reference(attention, self.shared_warehouse.cells, self.partition)

    def _run(self, x: torch.Tensor, attention_input: torch.Tensor, *conv_args) -> torch.Tensor:
        attention = self.attention(self._pool(attention_input))
        # the other executors pick strategies per shape or fold the batch into conv groups,
        # which bakes the batch size into an exported graph
        forward = EXECUTORS["export" if is_exporting() else self.executor]
        return forward(x, attention, self.shared_warehouse.cells, self.partition, *conv_args)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _KWConvNd(KWLayer):
    dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        **options: Unpack[KWOptions],
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        check_int(fn, "in_channels", in_channels)
        check_int(fn, "out_channels", out_channels)
        check_int(fn, "groups", groups)
        if padding_mode != "zeros":
            raise ValueError(
                f"padding_mode={padding_mode!r} is not supported by KW layers: only 'zeros'"
            )
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} is invalid for in_channels={in_channels}, "
                f"out_channels={out_channels}: both must be divisible by groups"
            )
        d = self.dims
        self.kernel_size = check_ints(fn, "kernel_size", kernel_size, d)
        self.stride = check_ints(fn, "stride", stride, d)
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"padding={padding!r} is invalid: expected 'same', 'valid' or ints")
        if isinstance(padding, str) and padding == "same" and any(s != 1 for s in self.stride):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
        if isinstance(padding, str):
            self.padding = padding
        else:
            self.padding = check_ints(fn, "padding", padding, d, minimum=0)
        self.dilation = check_ints(fn, "dilation", dilation, d)
        self.groups = groups
        kernel_shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._setup(
            in_channels,
            out_channels,
            kernel_shape,
            bias,
            **options,
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], -1).mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward_scripted(x)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects a [B, {self.in_channels}, "
                f"{self.dims} spatial dims] input, got shape {tuple(x.shape)}"
            )
        return self._run(x, x, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _forward_scripted(self, x: torch.Tensor) -> torch.Tensor:
        # under torch.jit.script: the authors' formulation (every sample's kernel assembled, one
        # grouped convolution over the batch), which has no shape-dependent Python dispatch
        batch = x.shape[0]
        kernel = self._assemble_scripted(self.attention(self._pool(x)))
        weight = kernel.reshape([-1] + self._kernel_shape[1:])  # noqa: RUF005
        folded = x.reshape([1, -1] + list(x.shape[2:]))  # noqa: RUF005
        groups = self.groups * batch
        if self.dims == 1:
            out = F.conv1d(folded, weight, None, self.stride, self.padding, self.dilation, groups)
        elif self.dims == 2:
            out = F.conv2d(folded, weight, None, self.stride, self.padding, self.dilation, groups)
        else:
            out = F.conv3d(folded, weight, None, self.stride, self.padding, self.dilation, groups)
        out = out.reshape([batch, self.out_channels] + list(out.shape[2:]))  # noqa: RUF005
        bias = self.bias
        if bias is not None:
            out = out + bias.reshape([1, -1] + [1] * self.dims)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
            f"bias={self.bias is not None}, cells={self.partition.cell}, m={self.num_mixtures}"
        )


class KWConv1d(_KWConvNd):
    """KernelWarehouse ``nn.Conv1d``.

    Example:
        >>> conv = KWConv1d(16, 32, 3, padding=1)
        >>> conv(torch.randn(2, 16, 20)).shape
        torch.Size([2, 32, 20])
    """

    dims = 1


class KWConv2d(_KWConvNd):
    """KernelWarehouse ``nn.Conv2d``.

    Example:
        >>> conv = KWConv2d(16, 32, 3, padding=1, budget=2.0)
        >>> conv(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    dims = 2


class KWConv3d(_KWConvNd):
    """KernelWarehouse ``nn.Conv3d``.

    Example:
        >>> conv = KWConv3d(8, 8, 3, padding=1)
        >>> conv(torch.randn(2, 8, 4, 4, 4)).shape
        torch.Size([2, 8, 4, 4, 4])
    """

    dims = 3


class KWLinear(KWLayer):
    """KernelWarehouse ``nn.Linear``; attention pools over every token of a sample.

    Input ``[B, *, in_features]``; the kernel is one per sample (shared by its tokens).

    Example:
        >>> fc = KWLinear(32, 64)
        >>> fc(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 64])
    """

    dims = 0

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        **options: Unpack[KWOptions],
    ) -> None:
        super().__init__()
        self.in_features = check_int("KWLinear", "in_features", in_features)
        self.out_features = check_int("KWLinear", "out_features", out_features)
        self._setup(
            in_features,
            out_features,
            (out_features, in_features),
            bias,
            **options,
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, x.shape[-1]).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward_scripted(x)
        return self._forward_eager(x)

    def _forward_scripted(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        tokens = x.reshape(batch, -1, self.in_features)  # [B, T, in]
        kernel = self._assemble_scripted(self.attention(tokens.mean(dim=1)))  # [B, out, in]
        out = torch.bmm(tokens, kernel.transpose(1, 2))
        bias = self.bias
        if bias is not None:
            out = out + bias
        return out.reshape(list(x.shape[:-1]) + [self.out_features])  # noqa: RUF005

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"KWLinear expects [B, *, {self.in_features}] input, got shape {tuple(x.shape)}"
            )
        shape = x.shape
        tokens = x.reshape(shape[0], -1, shape[-1]).transpose(1, 2)  # [B, in, T]
        out = self._run(tokens, x, self.bias, (1,), (0,), (1,), 1)
        return out.transpose(1, 2).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, cells={self.partition.cell}, m={self.num_mixtures}"
        )


def kw_layer_params(layer: KWLayer) -> int:
    """Parameters of a layer excluding its warehouse."""
    return sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("warehouse."))
