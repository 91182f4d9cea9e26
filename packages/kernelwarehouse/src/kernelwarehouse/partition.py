"""Kernel partition: split static kernels into equal cells (paper section 3.2).

A layer's static kernel ``[f, c / groups, *k]`` is cut into ``m`` disjoint cells
``[f_e, c_e, *k_e]``. Cells of all layers that share one warehouse have the same shape, taken
from the greatest common divisors of their kernels (section 3.3); for budgets below one the
authors halve those divisors so that the warehouse can hold fewer cells than there are mixtures.

Mixtures are numbered spatial-major, then output group, then input group, which is the order
of the authors' implementation (their checkpoints' attention rows follow it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._checks import check_number, invalid, is_int

__all__ = ["CellShape", "LayerPartition", "partition_kernel", "plan_cell_shape"]


@dataclass(frozen=True)
class CellShape:
    """Shape of one kernel cell: ``[out_channels, in_channels, *kernel_size]``.

    Example:
        >>> CellShape(64, 64, (1, 1)).numel
        4096
    """

    out_channels: int
    in_channels: int
    kernel_size: tuple[int, ...]

    @property
    def numel(self) -> int:
        return self.out_channels * self.in_channels * math.prod(self.kernel_size)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def __str__(self) -> str:
        spatial = "x".join(str(k) for k in self.kernel_size)
        return f"{self.out_channels}x{self.in_channels}" + (f"x{spatial}" if spatial else "")


@dataclass(frozen=True)
class LayerPartition:
    """How one kernel is cut into cells: group counts along output, input and space.

    Example:
        >>> p = partition_kernel((128, 64, 3, 3), CellShape(64, 64, (1, 1)))
        >>> (p.out_groups, p.in_groups, p.spatial_groups, p.num_mixtures)
        (2, 1, 9, 18)
    """

    kernel_shape: tuple[int, ...]
    cell: CellShape
    out_groups: int
    in_groups: int
    spatial_groups: int

    @property
    def num_mixtures(self) -> int:
        return self.out_groups * self.in_groups * self.spatial_groups


def _gcd_all(values: Sequence[int]) -> int:
    result = 0
    for v in values:
        result = math.gcd(result, int(v))
    return result


def _check_shape(fn: str, name: str, shape: object, valid: str) -> None:
    ok = isinstance(shape, Sequence) and not isinstance(shape, (str, bytes))
    if not ok or len(shape) < 2 or not all(is_int(v) for v in shape):
        raise invalid(fn, name, shape, valid, TypeError if not ok else ValueError)
    if any(v < 1 for v in shape):
        raise invalid(fn, name, shape, valid)


def plan_cell_shape(
    kernel_shapes: Sequence[Sequence[int]],
    in_ratio: float = 1.0,
    out_ratio: float = 1.0,
    spatial_partition: bool = True,
    snap: bool = False,
) -> CellShape:
    """Common cell shape of kernels that share a warehouse.

    Channel sizes are the greatest common divisors of the kernels' output / input channels,
    scaled by ``out_ratio`` / ``in_ratio`` (0.5 for budgets below one, as in the paper) and
    floored at 1. With ``spatial_partition`` the cell is 1 x ... x 1 in space; without it every
    kernel must have the same spatial size and the cell keeps it. With ``snap`` a scaled size
    that does not divide the divisor is lowered to the largest one that does (5 * 0.5 -> 1).

    Example:
        >>> str(plan_cell_shape([(64, 64, 3, 3), (128, 64, 3, 3), (128, 64, 1, 1)]))
        '64x64x1x1'
        >>> str(plan_cell_shape([(64, 64, 3, 3)], in_ratio=0.5, out_ratio=0.5))
        '32x32x1x1'
    """
    fn = "plan_cell_shape"
    valid = "a non-empty list of kernel shapes (each >= 2 ints >= 1)"
    if isinstance(kernel_shapes, (str, bytes)) or not isinstance(kernel_shapes, Sequence):
        raise invalid(fn, "kernel_shapes", kernel_shapes, valid, TypeError)
    if not kernel_shapes:
        raise ValueError("kernel_shapes is empty: a warehouse needs at least one layer")
    for shape in kernel_shapes:
        _check_shape(fn, "kernel_shapes", shape, valid)
    dims = {len(s) for s in kernel_shapes}
    if len(dims) != 1:
        raise ValueError(
            f"kernel_shapes mixes kernel ranks {sorted(dims)}; layers sharing a warehouse must "
            "all be 1d, 2d, 3d convolutions or all linear"
        )
    for name, ratio in (("in_ratio", in_ratio), ("out_ratio", out_ratio)):
        check_number(fn, name, ratio, 0.0, 1.0, open_low=True)
    out_gcd = _gcd_all([s[0] for s in kernel_shapes])
    in_gcd = _gcd_all([s[1] for s in kernel_shapes])
    spatial = tuple(kernel_shapes[0][2:])
    if spatial_partition:
        cell_spatial = (1,) * len(spatial)
    else:
        others = sorted({tuple(s[2:]) for s in kernel_shapes})
        if len(others) != 1:
            raise ValueError(
                f"spatial_partition=False needs one kernel size per warehouse, got {others}; "
                "turn spatial partition on or split the group"
            )
        cell_spatial = spatial

    def scaled(gcd: int, ratio: float) -> int:
        size = max(int(gcd * ratio), 1)
        if snap:
            while gcd % size:
                size -= 1
        return size

    return CellShape(
        out_channels=scaled(out_gcd, out_ratio),
        in_channels=scaled(in_gcd, in_ratio),
        kernel_size=cell_spatial,
    )


def partition_kernel(
    kernel_shape: Sequence[int], cell: CellShape, name: str = "layer"
) -> LayerPartition:
    """Cut ``kernel_shape`` into cells of shape ``cell``; fails if the cell does not tile it.

    Example:
        >>> partition_kernel((64, 64, 3, 3), CellShape(64, 64, (1, 1))).num_mixtures
        9
        >>> partition_kernel((64, 48), CellShape(64, 32, ()))
        Traceback (most recent call last):
        ...
        ValueError: layer: input channels 48 (per group) cannot be partitioned into cells of 32; ...
    """
    _check_shape(
        "partition_kernel", "kernel_shape", kernel_shape, "a kernel shape of >= 2 ints >= 1"
    )
    if not isinstance(cell, CellShape):
        raise invalid("partition_kernel", "cell", cell, "a kernelwarehouse.CellShape", TypeError)
    kernel_shape = tuple(kernel_shape)
    f, c, spatial = kernel_shape[0], kernel_shape[1], kernel_shape[2:]
    if len(spatial) != len(cell.kernel_size):
        raise ValueError(
            f"{name}: kernel {kernel_shape} has {len(spatial)} spatial dims but cell {cell} has "
            f"{len(cell.kernel_size)}"
        )
    if f % cell.out_channels:
        raise ValueError(
            f"{name}: output channels {f} cannot be partitioned into cells of {cell.out_channels}; "
            "valid cell sizes divide the channel count (use a ratio that keeps a divisor)"
        )
    if c % cell.in_channels:
        raise ValueError(
            f"{name}: input channels {c} (per group) cannot be partitioned into cells of "
            f"{cell.in_channels}; valid cell sizes divide the channel count "
            "(use a ratio that keeps a divisor)"
        )
    cell_is_point = all(k == 1 for k in cell.kernel_size)
    if not cell_is_point and tuple(cell.kernel_size) != spatial:
        raise ValueError(
            f"{name}: cell kernel {cell.kernel_size} must be all ones (spatial partition) or equal "
            f"to the layer's kernel {spatial}"
        )
    spatial_groups = math.prod(spatial) if cell_is_point else 1
    return LayerPartition(
        kernel_shape=kernel_shape,
        cell=cell,
        out_groups=f // cell.out_channels,
        in_groups=c // cell.in_channels,
        spatial_groups=spatial_groups,
    )


#: budgets ``b`` beyond which a warehouse would hold more than this many times a layer's cells
#: (the paper goes up to 4x): a typo such as 1e9 fails here instead of allocating
MAX_BUDGET = 64.0


def check_budget(value: object, name: str = "budget", where: str = "") -> float:
    """``value`` as a float if it is a finite number in ``(0, MAX_BUDGET]``, else a ValueError
    that names ``name``, the value and what is valid.

    Example:
        >>> check_budget(0.5)
        0.5
    """
    valid = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_BUDGET
    )
    if not valid:
        raise ValueError(
            f"{name}={value!r}{where} is invalid: expected a finite number in (0, {MAX_BUDGET:g}] "
            "such as 0.25, 0.5, 1, 2 or 4"
        )
    return float(value)
