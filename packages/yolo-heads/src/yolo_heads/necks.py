"""Feature pyramid necks: FPN (top-down) and PAN (top-down then bottom-up), in a registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_int_list
from .layers import ConvBnAct, CSPBlock

#: Bottlenecks per CSP block at most. YOLO necks use 1 to 3; a depth beyond this is a typo, and
#: ``depth=10**12`` would otherwise build modules until the memory runs out.
MAX_DEPTH = 64

NECKS: dict[str, Callable[..., nn.Module]] = {}


def register_neck(name: str) -> Callable:
    """Decorator adding a neck class to :data:`NECKS` under ``name`` (a name already taken
    raises ``ValueError``: registries never overwrite silently)."""

    def wrap(cls: Callable) -> Callable:
        if name in NECKS:
            holder = NECKS[name]
            raise ValueError(
                f"register_neck: {name!r} is already registered in NECKS "
                f"(by {holder.__module__}.{holder.__qualname__}); pick another name"
            )
        NECKS[name] = cls
        return cls

    return wrap


def check_neck_args(fn: str, in_channels, channels, depth) -> tuple[list[int], int, int]:
    """A channel count per input level, the output width (two at least: a CSP block halves it)
    and the bottlenecks per CSP block."""
    return (
        check_int_list("in_channels", in_channels, fn=fn),
        check_int("channels", channels, low=2, fn=fn),
        check_int("depth", depth, low=1, high=MAX_DEPTH, fn=fn),
    )


@register_neck("fpn")
class FPN(nn.Module):
    """Top-down feature pyramid: lateral 1x1 projections, upsample and fuse with a CSP block.

    Every output level has ``channels`` channels.

    >>> neck = FPN([32, 64, 128], channels=16)
    >>> [o.shape[1:] for o in neck([torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 4, 4),
    ...                              torch.zeros(1, 128, 2, 2)])]
    [torch.Size([16, 8, 8]), torch.Size([16, 4, 4]), torch.Size([16, 2, 2])]
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64, depth: int = 1) -> None:
        super().__init__()
        in_channels, channels, depth = check_neck_args(
            type(self).__name__, in_channels, channels, depth
        )
        self.out_channels = [channels] * len(in_channels)
        self.lateral = nn.ModuleList(ConvBnAct(c, channels, 1) for c in in_channels)
        self.top_down = nn.ModuleList(
            CSPBlock(2 * channels, channels, depth) for _ in range(len(in_channels) - 1)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
        outs = [laterals[-1]]
        for i in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(outs[0], size=laterals[i].shape[-2:], mode="nearest")
            outs.insert(0, self.top_down[i](torch.cat((laterals[i], up), dim=1)))
        return outs


@register_neck("pan")
class PAN(FPN):
    """Path aggregation network: the FPN's top-down pass, then a bottom-up pass (stride-2 convs).

    >>> neck = PAN([32, 64, 128], channels=16)
    >>> [o.shape[1:] for o in neck([torch.zeros(1, 32, 8, 8), torch.zeros(1, 64, 4, 4),
    ...                              torch.zeros(1, 128, 2, 2)])]
    [torch.Size([16, 8, 8]), torch.Size([16, 4, 4]), torch.Size([16, 2, 2])]
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64, depth: int = 1) -> None:
        super().__init__(in_channels, channels, depth)
        levels = len(self.out_channels) - 1
        self.down = nn.ModuleList(ConvBnAct(channels, channels, 3, stride=2) for _ in range(levels))
        self.bottom_up = nn.ModuleList(
            CSPBlock(2 * channels, channels, depth) for _ in range(levels)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        top_down = super().forward(feats)
        outs = [top_down[0]]
        for i in range(1, len(top_down)):
            down = self.down[i - 1](outs[-1])
            outs.append(self.bottom_up[i - 1](torch.cat((down, top_down[i]), dim=1)))
        return outs
