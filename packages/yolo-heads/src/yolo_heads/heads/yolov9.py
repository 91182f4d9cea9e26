"""YOLOv9's detection head as its authors build it (MultimediaTechLab/YOLO ``Detection``).

Per level a grouped anchor branch (Conv 3x3, grouped Conv 3x3, grouped 1x1 to ``4 x reg_max``
distance-bin logits) and a class branch (two Conv 3x3, 1x1 to ``num_classes``). The widths come
from the *first* level's channels, as in the authors' code: anchor width
``max(ceil4(c0 / 4), 4 reg_max, reg_max)``, class width ``max(c0, min(2 num_classes, 128))``.
The distance of each side is the expectation over its bins, taken with a frozen ``Conv3d``
whose weights are ``0 .. reg_max-1`` (their ``Anchor2Vec``, kept as a parameter so parameter
counts and state dicts match theirs).

Outputs use :class:`~yolo_heads.heads.AnchorFreeHead`'s layout (``[B, 4 reg_max + C, H, W]``
per level, sides major), so its loss, decoding, NMS and export apply unchanged.

    >>> head = YOLOv9Head([64, 96, 128], num_classes=80)
    >>> feats = [torch.zeros(1, c, s, s) for c, s in ((64, 8), (96, 4), (128, 2))]
    >>> [tuple(o.shape) for o in head(feats)]
    [(1, 144, 8, 8), (1, 144, 4, 4), (1, 144, 2, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_int
from ..architectures.blocks import Conv
from ..knowledge import implicit_prediction_refinement
from . import check_head_args, register_head
from .anchor_free import AnchorFreeHead


class Anchor2Vec(nn.Module):
    """Bin logits ``[B, 4 R, H, W]`` -> expected distances ``[B, 4, H, W]`` (frozen weights)."""

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.anc2vec = nn.Conv3d(reg_max, 1, kernel_size=1, bias=False)
        self.anc2vec.weight = nn.Parameter(
            torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1, 1),
            requires_grad=False,
        )

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        b, _, h, w = logits.shape
        probs = logits.view(b, 4, self.reg_max, h, w).transpose(1, 2).softmax(dim=1)
        return self.anc2vec(probs)[:, 0]


class DetectionBranch(nn.Module):
    """One level of :class:`YOLOv9Head` (the authors' ``Detection``)."""

    def __init__(
        self,
        first_channels: int,
        in_channels: int,
        num_classes: int,
        reg_max: int = 16,
        groups: int = 4,
        implicit: bool = False,
        implicit_prior: str = "vector",
        class_channels: int | None = None,
    ) -> None:
        super().__init__()
        anchor_channels = 4 * reg_max
        quarter = math.ceil(first_channels // 4 / groups) * groups  # a multiple of groups
        anchor_neck = max(quarter, anchor_channels, reg_max)
        class_neck = class_channels or max(first_channels, min(num_classes * 2, 128))
        anchor_out = nn.Conv2d(anchor_neck, anchor_channels, 1, groups=groups)
        class_out = nn.Conv2d(class_neck, num_classes, 1)
        if implicit:
            anchor_out = implicit_prediction_refinement(anchor_out, implicit_prior)
            class_out = implicit_prediction_refinement(class_out, implicit_prior)
        self.anchor_conv = nn.Sequential(
            Conv(in_channels, anchor_neck, 3),
            Conv(anchor_neck, anchor_neck, 3, groups=groups),
            anchor_out,
        )
        self.class_conv = nn.Sequential(
            Conv(in_channels, class_neck, 3), Conv(class_neck, class_neck, 3), class_out
        )
        self.anc2vec = Anchor2Vec(reg_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.anchor_conv(x), self.class_conv(x)), dim=1)


@register_head("yolov9")
class YOLOv9Head(AnchorFreeHead):
    """YOLOv9's decoupled DFL head, one :class:`DetectionBranch` per level (``heads.<l>``).

    Takes the same arguments as :class:`AnchorFreeHead` plus ``use_group`` (grouped anchor
    branch, the authors' default) and ``class_channels`` (the class branch's width; default the
    authors' formula, which depends on the class count: fine-tuning a checkpoint for another
    count keeps the checkpoint's width so that only the last convolution changes). Bias
    initialisation follows the authors (anchor 1.0, class -10: a prior probability of 4.5e-5).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        reg_max: int = 16,
        use_group: bool = True,
        implicit: bool = False,
        implicit_prior: str = "vector",
        class_channels: int | None = None,
    ) -> None:
        nn.Module.__init__(self)
        in_channels, strides, num_classes = check_head_args(
            "YOLOv9Head", in_channels, strides, num_classes
        )
        reg_max = check_int("reg_max", reg_max, low=2, fn="YOLOv9Head")
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, strides
        groups = 4 if use_group else 1
        self.heads = nn.ModuleList(
            DetectionBranch(
                in_channels[0],
                c,
                num_classes,
                reg_max,
                groups,
                implicit,
                implicit_prior,
                class_channels,
            )
            for c in in_channels
        )
        for branch in self.heads:
            _output_conv(branch.anchor_conv).bias.data.fill_(1.0)
            _output_conv(branch.class_conv).bias.data.fill_(-10.0)

    @property
    def bins(self) -> torch.Tensor:
        """The bin values ``0 .. reg_max-1`` (the frozen Anchor2Vec weights)."""
        return self.heads[0].anc2vec.anc2vec.weight.view(-1)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(f) for f, branch in zip(feats, self.heads)]

    def class_outputs(self) -> list[nn.Conv2d]:
        """The convolutions producing class logits (re-initialised for a new class count)."""
        return [_output_conv(branch.class_conv) for branch in self.heads]


def _output_conv(branch: nn.Sequential) -> nn.Conv2d:
    last = branch[-1]
    return last.conv if hasattr(last, "conv") else last
