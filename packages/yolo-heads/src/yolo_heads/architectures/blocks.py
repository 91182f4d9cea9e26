"""The blocks of the YOLO-RD authors' detectors (YOLOv7, YOLOv9, rd-9c), written here.

Each block keeps the attribute names of the authors' module (``conv``, ``bn``, ``conv1`` ...),
so their state dicts load with only the layer prefix changed (see :mod:`yolo_heads.official`).
Every block exposes ``out_channels`` so that a layer table needs no channel bookkeeping.

    >>> import torch
    >>> block = RepNCSPELAN(32, 64, part_channels=64, repeats=1)
    >>> block(torch.zeros(1, 32, 16, 16)).shape
    torch.Size([1, 64, 16, 16])
    >>> ADown(64, 96)(torch.zeros(1, 64, 16, 16)).shape
    torch.Size([1, 96, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BLOCKS",
    "ELAN",
    "SPPELAN",
    "AConv",
    "ADown",
    "CBFuse",
    "CBLinear",
    "Concat",
    "Conv",
    "MaxPoolDown",
    "RepConv",
    "RepNCSP",
    "RepNCSPELAN",
    "RepNCSPELANRD",
    "SPPCSPConv",
    "Upsample",
]

#: The authors' BatchNorm settings in MultimediaTechLab/YOLO (YOLOR's repository uses eps 1e-4).
BN_EPS, BN_MOMENTUM = 1e-3, 0.03

#: name -> block class; the layer tables (``*.yaml`` beside this file) name blocks from here.
BLOCKS: dict[str, type[nn.Module]] = {}


def _register(cls: type[nn.Module]) -> type[nn.Module]:
    BLOCKS[cls.__name__] = cls
    return cls


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size - 1) * dilation // 2


@_register
class Conv(nn.Module):
    """Convolution (no bias) + BatchNorm (eps 1e-3, momentum 0.03) + SiLU (or no activation)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        padding = _same_padding(kernel_size) if padding is None else padding
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if activation else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


@_register
class RepConv(nn.Module):
    """``SiLU(Conv_kxk(x) + Conv_1x1(x))`` (both without activation); :meth:`reparameterize`
    folds the two branches and their BatchNorms into one biased k x k convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = Conv(in_channels, out_channels, kernel_size, activation=False)
        self.conv2 = Conv(in_channels, out_channels, 1, activation=False)
        self.act = nn.SiLU(inplace=True)
        self.out_channels = out_channels
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace both branches by one convolution with the same eval-mode output."""
        if self.fused is not None:
            return
        weight, bias = _fold_bn(self.conv1)
        weight_1x1, bias_1x1 = _fold_bn(self.conv2)
        pad = (weight.shape[-1] - 1) // 2
        weight = weight + F.pad(weight_1x1, [pad, pad, pad, pad])
        src = self.conv1.conv
        fused = nn.Conv2d(
            src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding, bias=True
        ).to(weight.device, weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias + bias_1x1)
        self.fused = fused
        del self.conv1, self.conv2


def _fold_bn(block: Conv) -> tuple[torch.Tensor, torch.Tensor]:
    bn = block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = block.conv.weight * scale.view(-1, 1, 1, 1)
    return weight, bn.bias - bn.running_mean * scale


class Bottleneck(nn.Module):
    """RepConv 3x3 then Conv 3x3, with the input added back (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = RepConv(channels, channels, 3)
        self.conv2 = Conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


@_register
class RepNCSP(nn.Module):
    """CSP block: one half through ``repeats`` bottlenecks, the other straight, then merged."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int = 1) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = Conv(in_channels, hidden)
        self.conv2 = Conv(in_channels, hidden)
        self.conv3 = Conv(2 * hidden, out_channels)
        self.bottleneck = nn.Sequential(*(Bottleneck(hidden) for _ in range(repeats)))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.bottleneck(self.conv1(x)), self.conv2(x)), dim=1))


class _ELANBase(nn.Module):
    """Split ``conv1``'s output in two, run the second half through ``conv2`` then ``conv3``,
    and merge all four parts with ``conv4`` (the ELAN aggregation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x).chunk(2, 1)
        x3 = self.conv2(x2)
        x4 = self.conv3(x3)
        return self.conv4(torch.cat((x1, x2, x3, x4), dim=1))


@_register
class ELAN(_ELANBase):
    """ELAN with plain 3x3 convolutions in the processing path (YOLOv9-T/S stem)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        part_channels: int,
        process_channels: int | None = None,
    ) -> None:
        super().__init__()
        process = process_channels or part_channels // 2
        self.conv1 = Conv(in_channels, part_channels)
        self.conv2 = Conv(part_channels // 2, process, 3)
        self.conv3 = Conv(process, process, 3)
        self.conv4 = Conv(part_channels + 2 * process, out_channels)
        self.out_channels = out_channels


@_register
class RepNCSPELAN(_ELANBase):
    """GELAN block: ELAN whose processing steps are RepNCSP + Conv 3x3 (YOLOv9)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        part_channels: int,
        process_channels: int | None = None,
        repeats: int = 1,
    ) -> None:
        super().__init__()
        process = process_channels or part_channels // 2
        self.conv1 = Conv(in_channels, part_channels)
        self.conv2 = nn.Sequential(
            RepNCSP(part_channels // 2, process, repeats), Conv(process, process, 3)
        )
        self.conv3 = nn.Sequential(RepNCSP(process, process, repeats), Conv(process, process, 3))
        self.conv4 = Conv(part_channels + 2 * process, out_channels)
        self.out_channels = out_channels


@_register
class RepNCSPELANRD(RepNCSPELAN):
    """RepNCSPELAN followed by rd-core's Retriever-Dictionary (YOLO-RD's rd-9c, layer B3).

    ``variant="authors"`` (default here, as in their released rd-9c) is their ``DConv``: the
    conv-BN retriever, BatchNorm on the atoms, unaffine PONO and 0.8 on the dictionary term;
    ``variant="paper"`` gives the paper's formula; ``rd_kwargs`` go to
    :class:`rd_core.RetrieverDictionary` (``dictionary``, ``trainable_dictionary`` ...).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *args: int,
        num_atoms: int = 512,
        variant: str = "authors",
        rd_kwargs: dict | None = None,
        **kwargs: int,
    ) -> None:
        from rd_core import RetrieverDictionary

        super().__init__(in_channels, out_channels, *args, **kwargs)
        self.dconv = RetrieverDictionary(
            out_channels, num_atoms=num_atoms, variant=variant, **(rd_kwargs or {})
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dconv(super().forward(x))


@_register
class AConv(nn.Module):
    """Down-sampling: 2x2 average pool (stride 1) then Conv 3x3 stride 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AvgPool2d(2, stride=1)
        self.conv = Conv(in_channels, out_channels, 3, stride=2)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.avg_pool(x))


@_register
class ADown(nn.Module):
    """Down-sampling in two halves: Conv 3x3 stride 2 on one, max pool + Conv 1x1 on the other."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AvgPool2d(2, stride=1)
        self.conv1 = Conv(in_channels // 2, out_channels // 2, 3, stride=2)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = Conv(in_channels // 2, out_channels // 2, 1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.avg_pool(x).chunk(2, dim=1)
        return torch.cat((self.conv1(x1), self.conv2(self.max_pool(x2))), dim=1)


@_register
class SPPELAN(nn.Module):
    """Spatial pyramid pooling as ELAN: three chained 5x5 max pools, all four maps merged."""

    def __init__(
        self, in_channels: int, out_channels: int, neck_channels: int | None = None
    ) -> None:
        super().__init__()
        neck = neck_channels or out_channels // 2
        self.conv1 = Conv(in_channels, neck)
        self.pools = nn.ModuleList(nn.MaxPool2d(5, stride=1, padding=2) for _ in range(3))
        self.conv5 = Conv(4 * neck, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.conv1(x)]
        for pool in self.pools:
            features.append(pool(features[-1]))
        return self.conv5(torch.cat(features, dim=1))


@_register
class SPPCSPConv(nn.Module):
    """YOLOv7's SPPCSPC: parallel 5/9/13 max pools inside a CSP split."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand: float = 0.5,
        kernel_sizes: Sequence[int] = (5, 9, 13),
    ) -> None:
        super().__init__()
        neck = int(2 * out_channels * expand)
        self.pre_conv = nn.Sequential(
            Conv(in_channels, neck), Conv(neck, neck, 3), Conv(neck, neck)
        )
        self.short_conv = Conv(in_channels, neck)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.post_conv = nn.Sequential(
            Conv((len(kernel_sizes) + 1) * neck, neck), Conv(neck, neck, 3)
        )
        self.merge_conv = Conv(2 * neck, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The pools run in parallel on one map (YOLOv7), unlike SPPELAN's chain.
        first = self.pre_conv(x)
        features = torch.cat([first, *(pool(first) for pool in self.pools)], dim=1)
        return self.merge_conv(torch.cat((self.post_conv(features), self.short_conv(x)), dim=1))


@_register
class MaxPoolDown(nn.MaxPool2d):
    """YOLOv7's 2x2 stride-2 max pool (the authors' ``Pool`` block with ``padding: 0``)."""

    def __init__(self, in_channels: int, kernel_size: int = 2) -> None:
        super().__init__(kernel_size, stride=kernel_size)
        self.out_channels = in_channels


@_register
class Upsample(nn.Upsample):
    """Nearest-neighbour up-sampling by ``scale_factor`` (2 in every table)."""

    def __init__(self, in_channels: int, scale_factor: int = 2) -> None:
        super().__init__(scale_factor=scale_factor, mode="nearest")
        self.out_channels = in_channels


@_register
class Concat(nn.Module):
    """Channel concatenation of the listed sources."""

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = sum(in_channels)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), dim=1)


@_register
class CBLinear(nn.Module):
    """PGI's reversible branch, part 1: one 1x1 convolution (with bias) split into the widths
    that :class:`CBFuse` layers of the auxiliary branch take."""

    def __init__(self, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, sum(out_channels), 1)
        self.out_channels = list(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.conv(x).split(self.out_channels, dim=1)


@_register
class CBFuse(nn.Module):
    """PGI's reversible branch, part 2: pick one split of each CBLinear source (``index``),
    resize it to the last source's size (nearest) and sum them with the last source."""

    def __init__(self, in_channels: Sequence, index: Sequence[int]) -> None:
        super().__init__()
        self.index = list(index)
        self.out_channels = in_channels[-1]

    def forward(self, xs: Sequence) -> torch.Tensor:
        target = xs[-1]
        size = target.shape[2:]
        out = target
        for pick, x in zip(self.index, xs[:-1]):
            out = out + F.interpolate(x[pick], size=size, mode="nearest")
        return out
