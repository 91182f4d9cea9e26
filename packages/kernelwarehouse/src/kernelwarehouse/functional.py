"""Kernel assembly and dynamic (per-sample) convolution, as interchangeable executors.

The authors assemble every sample's kernel with one matrix product followed by a permute, then
run one grouped convolution over the batch (``groups = groups * batch``). That is the
``"reference"`` executor here. The ``"fast"`` executor gives the same numbers (to float32
rounding; tested) faster on CPU:

* assembly stays one matrix product + permute (writing the kernel in place with a batched
  matrix product was measured 7-200x slower: its inner dimension is only k x k);
* point-wise kernels (1 x ... x 1, stride 1, no padding) and linear layers run as one batched
  matrix product;
* 2-d k x k kernels on small CPU feature maps (at most :data:`UNFOLD_MAX_POSITIONS` output
  positions) run as unfold + one batched matrix product: there the per-sample kernels are larger
  than the activations and oneDNN's grouped convolution re-lays them out on every call (several
  times slower than a plain convolution, see benchmarks/bench_kernelwarehouse.py); everything
  else, and CUDA, keeps the grouped convolution.

Executors are looked up by name in :data:`EXECUTORS`, so a new strategy is one registered
function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .partition import LayerPartition

__all__ = [
    "EXECUTORS",
    "assemble_kernel_reference",
    "dynamic_conv_fast",
    "dynamic_conv_reference",
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


def dynamic_conv_fast(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """Same result as :func:`dynamic_conv_reference`, faster on CPU (see module docstring)."""
    batch = x.shape[0]
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
    if (
        not x.is_cuda
        and x.dim() == 4
        and groups == 1
        and not isinstance(padding, str)
        and batch > 1
    ):
        out_hw = [
            (x.shape[2 + d] + 2 * padding[d] - dilation[d] * (kernel.shape[3 + d] - 1) - 1)
            // stride[d]
            + 1
            for d in range(2)
        ]
        if out_hw[0] * out_hw[1] <= UNFOLD_MAX_POSITIONS:
            cols = F.unfold(x, kernel.shape[3:], dilation, padding, stride)  # [B, c*k*k, L]
            out = torch.bmm(kernel.reshape(batch, kernel.shape[1], -1), cols)
            if bias is not None:
                out = out + bias.reshape(1, -1, 1)
            return out.reshape(batch, kernel.shape[1], *out_hw)
    return dynamic_conv_reference(x, kernel, bias, stride, padding, dilation, groups)


Executor = tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]

#: name -> (kernel assembly, dynamic convolution)
EXECUTORS: dict[str, Executor] = {
    "reference": (assemble_kernel_reference, dynamic_conv_reference),
    "fast": (assemble_kernel_reference, dynamic_conv_fast),
}


def register_executor(
    name: str, assemble: Callable[..., torch.Tensor], conv: Callable[..., torch.Tensor]
) -> None:
    """Add an execution strategy usable as ``layer.executor = name``."""
    EXECUTORS[name] = (assemble, conv)
