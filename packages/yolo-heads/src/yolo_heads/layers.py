"""Small building blocks shared by the necks and heads."""

from __future__ import annotations

import torch
from torch import nn


class ConvBnAct(nn.Sequential):
    """Convolution, BatchNorm and SiLU: the basic YOLO layer.

    >>> ConvBnAct(8, 16, 3, stride=2)(torch.zeros(1, 8, 32, 32)).shape
    torch.Size([1, 16, 16, 16])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """Two 3x3 ConvBnAct with a residual connection (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(channels, channels, 3)
        self.conv2 = ConvBnAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class CSPBlock(nn.Module):
    """Cross-stage partial block (YOLOv8 C2f style): split, stack bottlenecks, concat all, fuse.

    >>> CSPBlock(32, 16, depth=1)(torch.zeros(1, 32, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 1) -> None:
        super().__init__()
        self.hidden = out_channels // 2
        self.stem = ConvBnAct(in_channels, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden) for _ in range(depth))
        self.fuse = ConvBnAct((2 + depth) * self.hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.stem(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1))
