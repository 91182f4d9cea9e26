"""The batch-agnostic executor: per-sample kernels applied as batched products of shifted views.

The authors' executor folds the batch into the channels of one grouped convolution
(``groups = groups * batch``). ONNX's ``Conv`` needs ``group`` as a constant, so a model run that
way exports only at a fixed batch size. Here every kernel offset is a strided slice of the padded
input (``[B, C, *out]``) multiplied by that offset's ``[B, F, C / groups]`` kernels with one
batched matrix product, and the offsets' products are summed: only ``Pad``, ``Slice``,
``Reshape`` and ``MatMul``, whose batch dimension may stay symbolic. The layers pick this
executor themselves while ``torch.export`` (and so ``torch.onnx.export(..., dynamo=True)``) or
``torch.jit.trace`` runs (:func:`is_exporting`); ``set_executor(model, "export")`` selects it in
eager mode. The executor itself is :func:`kernelwarehouse.functional.kw_forward_export`.

Example:
    >>> import timm, torch, kernelwarehouse
    >>> model = timm.create_model("kw_resnet18", budget=0.5, num_classes=4).eval()
    >>> batch = torch.export.Dim("batch", min=1, max=64)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> prog = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    >>> prog.module()(torch.randn(3, 3, 32, 32)).shape
    torch.Size([3, 4])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["dynamic_conv_batched", "is_exporting"]


def is_exporting() -> bool:
    """Whether a graph is being captured for export (torch.export, dynamo ONNX, jit tracing)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _same_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    # PyTorch's padding="same": the odd remainder goes to the end
    total = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    return [(t // 2, t - t // 2) for t in total]


def dynamic_conv_batched(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Per-sample convolution without folding the batch into the channels.

    ``x``: ``[B, C, *spatial]``; ``kernel``: ``[B, F, C / groups, *k]``; any number of spatial
    dimensions. Same result as :func:`kernelwarehouse.functional.dynamic_conv_reference`.
    """
    dims = x.dim() - 2
    kernel_size = kernel.shape[3:]
    channels, out_channels = x.shape[1], kernel.shape[1]
    if isinstance(padding, str):
        pads = [(0, 0)] * dims if padding == "valid" else _same_padding(kernel_size, dilation)
    else:
        pads = [(p, p) for p in padding]
    if any(p for pair in pads for p in pair):
        # F.pad lists the last dimension first
        x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    out_size = [
        (x.shape[2 + d] - dilation[d] * (kernel_size[d] - 1) - 1) // stride[d] + 1
        for d in range(dims)
    ]
    out_count = 1
    for size in out_size:
        out_count *= size
    # [B, g, F/g, C/g * k]: one matrix per (sample, group)
    weight = kernel.reshape(-1, groups, out_channels // groups, math.prod(kernel.shape[2:]))
    if dims == 2:
        # im2col orders rows (channel, offset) like the kernel: one product per layer
        cols = F.unfold(x, kernel_size, dilation, 0, stride)
    else:
        views = []
        for offset in itertools.product(*(range(k) for k in kernel_size)):
            index = [slice(None), slice(None)]
            for d in range(dims):
                start = offset[d] * dilation[d]
                index.append(slice(start, start + stride[d] * (out_size[d] - 1) + 1, stride[d]))
            views.append(x[tuple(index)].reshape(-1, channels, 1, out_count))
        cols = torch.cat(views, dim=2)  # [B, C, k, L]: rows (channel, offset)
    out = torch.matmul(weight, cols.reshape(-1, groups, weight.shape[-1], out_count))
    out = out.reshape(-1, out_channels, *out_size)
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * dims))
    return out
