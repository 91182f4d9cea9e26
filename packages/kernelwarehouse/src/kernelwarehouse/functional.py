"""Kernel assembly and dynamic (per-sample) convolution, as interchangeable executors.

The authors assemble every sample's kernel with one matrix product followed by a permute, then
run one grouped convolution over the batch (``groups = groups * batch``). That is the
``"reference"`` executor here. The ``"fast"`` executor gives the same numbers (to float32
rounding; tested) faster on CPU:

* a batch of one sample runs its single assembled kernel as a plain convolution, except where
  the per-offset path below pays;
* point-wise kernels (1 x ... x 1, stride 1, no padding) and linear layers run as one batched
  matrix product;
* 2-d k x k kernels on small CPU feature maps (at most :data:`UNFOLD_MAX_POSITIONS` output
  positions) run on unfolded columns with batched matrix products: there the per-sample kernels
  are larger than the activations, so memory traffic decides. With 1 x 1 cells (spatial
  partition, the default) :mod:`kernelwarehouse.per_offset` never forms the ``[B, f, c, k, k]``
  kernel: each offset's ``[B, f, c]`` kernels meet that offset's columns and the products
  accumulate, with a backward pass that recomputes kernels instead of storing them. It runs
  where it was measured to pay, per mode (:data:`PER_OFFSET_RULES`: by output channels per
  output position and batch, inference and training separately); other 1 x 1-cell layers keep
  the grouped convolution (a plain one for one sample). With whole-kernel cells (batch > 1)
  the assembled kernel meets the columns in one batched product. oneDNN's grouped convolution
  re-lays per-sample kernels out on every call, several times slower than a plain convolution
  there (KW ResNet18 b = 1, 224 px: benchmarks/results/kernelwarehouse.md);
* everything else, and CUDA, keeps the authors' grouped convolution.

The ``"export"`` executor (:mod:`kernelwarehouse.export`) never folds the batch into a
convolution's groups, so exported graphs keep a symbolic batch size; every KW layer uses it while
a graph is captured for export, whatever its ``executor``.

Executors are looked up by name in :data:`EXECUTORS`, so a new strategy is one registered
function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ._registry import check_new_entry
from .export import dynamic_conv_batched
from .partition import LayerPartition
from .per_offset import per_offset_conv2d

__all__ = [
    "EXECUTORS",
    "assemble_kernel_reference",
    "dynamic_conv_reference",
    "kw_forward_export",
    "kw_forward_fast",
    "kw_forward_reference",
    "register_executor",
]

_CONV = {0: None, 1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def assemble_kernel_reference(
    attention: torch.Tensor, cells: torch.Tensor, part: LayerPartition
) -> torch.Tensor:
    """Per-sample kernels ``[B, f, c, *k]`` from attentions ``[B, m, n]`` and cells ``[n, ...]``.

    ``kernel_b = attention_b @ warehouse`` reshaped from mixture order (space, out, in) back to
    the kernel's layout, as in the authors' code.
    """
    batch = attention.shape[0]
    cell = part.cell
    n = cells.shape[0]
    mixed = torch.mm(attention.reshape(-1, n), cells.reshape(n, -1))
    spatial_dims = len(cell.kernel_size)
    mixed = mixed.reshape(
        batch, part.spatial_groups, part.out_groups, part.in_groups, *cell.as_tuple()
    )
    order = (0, 2, 4, 3, 5, 1, *range(6, 6 + spatial_dims))
    return mixed.permute(*order).reshape(batch, *part.kernel_shape)


def dynamic_conv_reference(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """One grouped convolution over the whole batch (the authors' formulation).

    ``x``: ``[B, C, *spatial]``; ``kernel``: ``[B, F, C / groups, *k]``.
    """
    batch = x.shape[0]
    conv = _CONV[x.dim() - 2]
    out = conv(
        x.reshape(1, -1, *x.shape[2:]),
        kernel.reshape(-1, *kernel.shape[2:]),
        None,
        stride,
        padding,
        dilation,
        groups * batch,
    )
    out = out.reshape(batch, kernel.shape[1], *out.shape[2:])
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    return out


def _is_pointwise(kernel: torch.Tensor, stride, padding, dilation, groups) -> bool:
    spatial = kernel.shape[3:]
    if groups != 1 or any(k != 1 for k in spatial):
        return False
    if isinstance(padding, str):
        return padding in ("valid", "same")
    return all(s == 1 for s in stride) and all(p == 0 for p in padding)


#: output positions up to which a k x k dynamic convolution runs as unfold + batched matmul on
#: CPU (deep, small feature maps: the per-sample kernels outweigh the activations there, and
#: oneDNN's grouped convolution re-lays them out on every call); above it, the grouped convolution
UNFOLD_MAX_POSITIONS = 14 * 14


#: When the per-offset path pays, per mode: ``(minimum output channels per output position,
#: minimum batch)`` pairs, any of which selects it for a 1 x 1-cell k x k layer on a small CPU
#: map. Measured per layer on KW ResNet18 b = 1 at 224 px (2 threads, interleaved medians;
#: benchmarks/results/kernelwarehouse_speed.md), against the assembled kernel in a grouped
#: convolution (a plain one at batch 1):
#:
#: * ``"inference"`` (no autograd): the 7 x 7 stage (512 channels over 49 positions, 10 per
#:   position) runs 1.2-4.5x faster per-offset at batch 1 and ~3x at batch 16; the 14 x 14 stage
#:   (256 over 196, 1.3 per position) 1.1-2.0x slower at batches 1-8 but 1.3-1.4x faster at batch
#:   16, where the batch's assembled kernels (38 MB) no longer fit the caches;
#: * ``"training"`` (autograd): the 7 x 7 stage 1.6-1.9x faster per-offset at batch 16, its
#:   backward pass 1.1-1.4x slower than oneDNN's at batch 2 (faster from batch 4); the 14 x 14
#:   stage 1.2-1.5x slower at batch 16.
PER_OFFSET_RULES: dict[str, tuple[tuple[float, int], ...]] = {
    "inference": ((2.0, 1), (1.0, 16)),
    "training": ((2.0, 4),),
}


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _per_offset_pays(part: LayerPartition, out_hw: Sequence[int], batch: int, grad: bool) -> bool:
    per_position = part.kernel_shape[0] / math.prod(out_hw)
    rules = PER_OFFSET_RULES["training" if grad else "inference"]
    return any(per_position >= width and batch >= least for width, least in rules)


def _out_size(x: torch.Tensor, kernel_size, stride, padding, dilation) -> list[int]:
    return [
        (x.shape[2 + d] + 2 * padding[d] - dilation[d] * (kernel_size[d] - 1) - 1) // stride[d] + 1
        for d in range(len(kernel_size))
    ]


def kw_forward_reference(
    x: torch.Tensor,
    attention: torch.Tensor,
    cells: torch.Tensor,
    part: LayerPartition,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """The authors' formulation: assemble every sample's kernel, then one grouped convolution."""
    kernel = _assemble(attention, cells, part)
    return dynamic_conv_reference(x, kernel, bias, stride, padding, dilation, groups)


def _assemble(attention: torch.Tensor, cells: torch.Tensor, part: LayerPartition) -> torch.Tensor:
    kernel = assemble_kernel_reference(attention, cells, part)
    # linear layers run as 1-d convolutions over tokens: their kernel gets a unit kernel size
    return kernel.unsqueeze(-1) if len(part.kernel_shape) == 2 else kernel


def kw_forward_fast(
    x: torch.Tensor,
    attention: torch.Tensor,
    cells: torch.Tensor,
    part: LayerPartition,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Same result as :func:`kw_forward_reference`, faster on CPU (see module docstring)."""
    batch = x.shape[0]
    kernel_size = part.kernel_shape[2:]
    small_cpu_map = False
    if not x.is_cuda and x.dim() == 4 and groups == 1 and not isinstance(padding, str):
        out_hw = _out_size(x, kernel_size, stride, padding, dilation)
        small_cpu_map = math.prod(out_hw) <= UNFOLD_MAX_POSITIONS
    per_offset_cells = all(k == 1 for k in part.cell.kernel_size) and part.spatial_groups > 1
    if (
        small_cpu_map
        and per_offset_cells
        and _per_offset_pays(part, out_hw, batch, _needs_grad(x, attention, cells))
    ):
        out = per_offset_conv2d(x, attention, cells, part, stride, padding, dilation, out_hw)
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)
    if batch == 1:
        # one sample, one kernel: a plain convolution (bias fused) is the fastest path, forward
        # and backward, wherever the per-offset products above do not pay
        kernel = _assemble(attention, cells, part)
        return _CONV[x.dim() - 2](x, kernel[0], bias, stride, padding, dilation, groups)
    kernel = _assemble(attention, cells, part)
    if _is_pointwise(kernel, stride, padding, dilation, groups):
        flat = x.reshape(batch, x.shape[1], -1)
        weight = kernel.reshape(batch, kernel.shape[1], -1)
        if bias is None:
            out = torch.bmm(weight, flat)
        else:
            out = torch.baddbmm(
                bias.reshape(1, -1, 1).expand(batch, -1, flat.shape[2]), weight, flat
            )
        return out.reshape(batch, kernel.shape[1], *x.shape[2:])
    # 1 x 1-cell layers the per-offset path declined: the grouped convolution beats unfold + bmm
    if small_cpu_map and not per_offset_cells:
        cols = F.unfold(x, kernel_size, dilation, padding, stride)  # [B, c*k*k, L]
        out = torch.bmm(kernel.reshape(batch, kernel.shape[1], -1), cols)
        if bias is not None:
            out = out + bias.reshape(1, -1, 1)
        return out.reshape(batch, kernel.shape[1], *out_hw)
    return dynamic_conv_reference(x, kernel, bias, stride, padding, dilation, groups)


def kw_forward_export(
    x: torch.Tensor,
    attention: torch.Tensor,
    cells: torch.Tensor,
    part: LayerPartition,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Batch-agnostic: the authors' kernels applied by
    :func:`kernelwarehouse.export.dynamic_conv_batched` (any batch size in an exported graph)."""
    kernel = _assemble(attention, cells, part)
    return dynamic_conv_batched(x, kernel, bias, stride, padding, dilation, groups)


#: ``forward(x, attention, cells, partition, bias, stride, padding, dilation, groups) -> y``
Executor = Callable[..., torch.Tensor]

#: name -> executor
EXECUTORS: dict[str, Executor] = {
    "reference": kw_forward_reference,
    "fast": kw_forward_fast,
    "export": kw_forward_export,
}


def register_executor(name: str, forward: Executor) -> None:
    """Add an execution strategy usable as ``layer.executor = name``.

    ``forward(x, attention, cells, partition, bias, stride, padding, dilation, groups)`` gets the
    layer input, the ``[B, m, n]`` attentions, the warehouse cells ``[n, *cell]`` and the layer's
    :class:`~kernelwarehouse.partition.LayerPartition`, and returns the layer output (linear
    layers arrive as 1-d convolutions over tokens with a kernel size of one). A name already
    taken raises ``ValueError``: registries never overwrite silently.
    """
    check_new_entry("register_executor", "executor", EXECUTORS, name, forward, "forward")
    EXECUTORS[name] = forward
