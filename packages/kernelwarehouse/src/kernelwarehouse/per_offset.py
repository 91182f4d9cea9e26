"""k x k dynamic convolution with 1 x 1 cells as a sum over kernel offsets (the CPU fast path).

With spatial partition every kernel offset ``s`` of a layer is its own set of mixtures, so the
batch's kernels at that offset are one matrix product ``attention[:, s] @ warehouse``
(``[B, f, c]``) and the convolution is ``sum_s kernel_s @ columns_s`` over the unfolded input.
The full ``[B, f, c, k, k]`` kernel is never formed, permuted or read back: on 7 x 7 and 14 x 14
maps the per-sample kernels are far larger than the activations and that memory traffic is what
the time goes into.

:class:`PerOffsetConv` keeps only the inputs for the backward pass and recomputes each offset's
kernels there (one extra product per offset) into a reused buffer; the kernel gradient of an
offset is reduced into the attention and warehouse gradients at once. Autograd over the plain
ops would keep every kernel and every kernel gradient (hundreds of MiB per ResNet18 stage at
batch 16), and blocks of that size cost page faults on every allocation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .partition import LayerPartition

__all__ = ["PER_OFFSET_BLOCK", "PerOffsetConv", "per_offset_conv2d"]

#: kernel elements assembled by one matrix product (16 MiB of float32): small kernels share one
#: product (the warehouse is read once), large ones stay cache-sized
PER_OFFSET_BLOCK = 1 << 22


def _offsets_per_product(batch: int, part: LayerPartition) -> int:
    f, c = part.kernel_shape[0], part.kernel_shape[1]
    return min(max(PER_OFFSET_BLOCK // (batch * f * c), 1), part.spatial_groups)


def _kernels(
    rows: torch.Tensor,
    warehouse: torch.Tensor,
    batch: int,
    part: LayerPartition,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, span, f, c]`` kernels from rows ordered (sample, offset, out group, in group)."""
    mixed = torch.mm(rows, warehouse) if out is None else torch.mm(rows, warehouse, out=out)
    return _kernels_view(mixed, batch, part)


def _kernels_view(mixed: torch.Tensor, batch: int, part: LayerPartition) -> torch.Tensor:
    # a view if out_g = in_g = 1
    f, c = part.kernel_shape[0], part.kernel_shape[1]
    mixed = mixed.reshape(batch, -1, part.out_groups, part.in_groups, *part.cell.as_tuple()[:2])
    return mixed.transpose(3, 4).reshape(batch, -1, f, c)


def _as_rows(grad_kernel: torch.Tensor, part: LayerPartition) -> torch.Tensor:
    """``[B, f, c]`` kernel gradient -> ``[B * out_g * in_g, f_e * c_e]`` (mixture row order)."""
    fe, ce = part.cell.as_tuple()[:2]
    g = grad_kernel.reshape(-1, part.out_groups, fe, part.in_groups, ce).transpose(2, 3)
    return g.reshape(-1, fe * ce)


def _forward(
    cols: torch.Tensor, attention: torch.Tensor, cells: torch.Tensor, part: LayerPartition
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, f, L]`` output without autograd (one kernel buffer, accumulation in place), and
    every offset's kernels when they fit one block (``None`` otherwise)."""
    batch, n = attention.shape[0], cells.shape[0]
    spatial = part.spatial_groups
    columns = cols.reshape(batch, part.kernel_shape[1], spatial, -1)
    mixtures = attention.reshape(batch, spatial, -1)
    warehouse = cells.reshape(n, -1)
    step = _offsets_per_product(batch, part)
    buffer = warehouse.new_empty(batch * step * (mixtures.shape[2] // n), warehouse.shape[1])
    out = None
    for s0 in range(0, spatial, step):
        rows = mixtures[:, s0 : s0 + step].reshape(-1, n)
        kernels = _kernels(rows, warehouse, batch, part, out=buffer[: rows.shape[0]])
        for s in range(kernels.shape[1]):
            x_s = columns[:, :, s0 + s]  # strided [B, c, L]: batched BLAS takes it as is
            if out is None:
                out = torch.bmm(kernels[:, s], x_s)
            else:
                out.baddbmm_(kernels[:, s], x_s)
    return out, (buffer if step == spatial else None)


class PerOffsetConv(torch.autograd.Function):
    """``(columns [B, c k^2, L], attention [B, m, n], cells [n, ...]) -> [B, f, L]``."""

    @staticmethod
    def forward(ctx, cols, attention, cells, part):  # type: ignore[override]
        ctx.part = part
        # kernels that fit one block (small batches, small layers) are kept, not recomputed
        out, kept = _forward(cols, attention, cells, part)
        ctx.save_for_backward(cols, attention, cells, kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        cols, attention, cells, kept = ctx.saved_tensors
        part: LayerPartition = ctx.part
        need_cols, need_attention, need_cells = ctx.needs_input_grad[:3]
        batch, n = attention.shape[0], cells.shape[0]
        f, c, spatial = part.kernel_shape[0], part.kernel_shape[1], part.spatial_groups
        grad_out = grad_out.contiguous()
        columns = cols.reshape(batch, c, spatial, -1)
        mixtures = attention.reshape(batch, spatial, -1)
        warehouse = cells.reshape(n, -1)
        groups = mixtures.shape[2] // n  # out_g x in_g mixtures per offset
        grad_cols = torch.empty_like(columns) if need_cols else None
        grad_mix = torch.empty_like(mixtures) if need_attention else None
        grad_cells = torch.zeros_like(warehouse) if need_cells else None
        step = _offsets_per_product(batch, part)
        buffer = (
            None
            if kept is not None
            else warehouse.new_empty(batch * step * groups, warehouse.shape[1])
        )
        # kernel gradients of a block of offsets, offset-major so each is one contiguous bmm
        # output; the (offset, sample) row order is matched by the attention rows below
        grad_kernels = warehouse.new_empty(step, batch, f, c)
        for s0 in range(0, spatial, step):
            rows = mixtures[:, s0 : s0 + step].reshape(-1, n)
            span = rows.shape[0] // (batch * groups)
            if need_cols:
                if kept is None:
                    kernels = _kernels(rows, warehouse, batch, part, out=buffer[: rows.shape[0]])
                else:  # the forward pass's kernels, in the same layout
                    kernels = _kernels_view(kept, batch, part)
                for s in range(span):
                    grad_cols[:, :, s0 + s] = torch.bmm(kernels[:, s].transpose(1, 2), grad_out)
            if not (need_attention or need_cells):
                continue
            for s in range(span):
                x_s = columns[:, :, s0 + s]
                torch.bmm(grad_out, x_s.transpose(1, 2), out=grad_kernels[s])
            g_rows = _as_rows(grad_kernels[:span], part)
            if need_attention:
                g_mix = torch.mm(g_rows, warehouse.t()).reshape(span, batch, -1)
                grad_mix[:, s0 : s0 + span] = g_mix.transpose(0, 1)
            if need_cells:
                offset_rows = mixtures[:, s0 : s0 + span].transpose(0, 1).reshape(-1, n)
                grad_cells.addmm_(offset_rows.t(), g_rows)
        return (
            None if grad_cols is None else grad_cols.reshape(cols.shape),
            None if grad_mix is None else grad_mix.reshape(attention.shape),
            None if grad_cells is None else grad_cells.reshape(cells.shape),
            None,
        )


def _autograd_ops(
    cols: torch.Tensor, attention: torch.Tensor, cells: torch.Tensor, part: LayerPartition
) -> torch.Tensor:
    """The same sum in plain differentiable ops (autocast, torch.compile / export tracing)."""
    batch, n = attention.shape[0], cells.shape[0]
    columns = cols.reshape(batch, part.kernel_shape[1], part.spatial_groups, -1).unbind(2)
    rows = attention.reshape(-1, n)
    out = None
    # unbind, not indexing: the backward pass stacks the gradients once instead of zero-filling
    # a full-size gradient per offset
    for kernel, x_s in zip(_kernels(rows, cells.reshape(n, -1), batch, part).unbind(1), columns):
        out = torch.bmm(kernel, x_s) if out is None else out.baddbmm(kernel, x_s)
    return out


def per_offset_conv2d(
    x: torch.Tensor,
    attention: torch.Tensor,
    cells: torch.Tensor,
    part: LayerPartition,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_hw: Sequence[int],
) -> torch.Tensor:
    """Dynamic 2-d convolution of ``x`` with 1 x 1 cells (``part.cell.kernel_size == (1, 1)``)."""
    cols = F.unfold(x, part.kernel_shape[2:], dilation, padding, stride)  # [B, c * k^2, L]
    if torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling():
        out = _autograd_ops(cols, attention, cells, part)
    else:
        out = PerOffsetConv.apply(cols, attention, cells, part)
    return out.reshape(x.shape[0], part.kernel_shape[0], *out_hw)
