"""Anchor-based head: three anchors per level, YOLOR implicit prediction refinement."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..knowledge import implicit_prediction_refinement
from ..losses import AnchorBasedLoss
from . import check_head_args, register_head

#: YOLOR / YOLOv7 anchors (width, height in pixels) for strides 8, 16 and 32 at 640 px.
DEFAULT_ANCHORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)


@register_head("anchor_based")
class AnchorBasedHead(nn.Module):
    """Per level a 1x1 convolution to ``anchors x (5 + num_classes)``: box (x, y, w, h),
    objectness and class logits, as in YOLOR / YOLOv7's IDetect.

    With ``implicit=True`` each output convolution is wrapped in YOLOR's implicit prediction
    refinement: an ImplicitAdd on its input and an ImplicitMul on its output.
    Outputs have shape ``[B, anchors, H, W, 5 + num_classes]``. Decoding follows YOLOv7:
    ``xy = (2 sigmoid - 0.5 + cell) * stride``, ``wh = (2 sigmoid)^2 * anchor``.

    >>> head = AnchorBasedHead([16, 16, 16], num_classes=3)
    >>> head([torch.zeros(1, 16, s, s) for s in (8, 4, 2)])[0].shape
    torch.Size([1, 3, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        anchors: Sequence[Sequence[Sequence[float]]] = DEFAULT_ANCHORS,
        implicit: bool = False,
        implicit_prior: str = "vector",
        image_size_hint: int = 640,
    ) -> None:
        super().__init__()
        in_channels, strides, num_classes = check_head_args(
            "AnchorBasedHead", in_channels, strides, num_classes
        )
        anchors_t = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors_t.ndim != 3 or anchors_t.shape[0] != len(in_channels) or anchors_t.shape[2] != 2:
            raise ValueError(
                f"anchors has shape {tuple(anchors_t.shape)}; expected [{len(in_channels)}, "
                "anchors per level, 2] (width, height in pixels per level)"
            )
        if (anchors_t <= 0).any():
            raise ValueError(f"anchors={anchors_t.tolist()} must all be positive (pixels)")
        self.num_classes, self.strides = num_classes, strides
        self.num_anchors = anchors_t.shape[1]
        self.register_buffer("anchors", anchors_t)
        self.outputs_per_anchor = 5 + num_classes
        convs = []
        for c, s in zip(in_channels, self.strides):
            conv = nn.Conv2d(c, self.num_anchors * self.outputs_per_anchor, 1)
            # YOLOv5 bias priors: ~8 objects per 640 image, ~0.6 class probability spread.
            bias = conv.bias.detach().view(self.num_anchors, -1)
            bias[:, 4] += math.log(8 / (image_size_hint / s) ** 2)
            bias[:, 5:] += math.log(0.6 / (num_classes - 0.99)) if num_classes > 1 else 0.0
            if implicit:
                conv = implicit_prediction_refinement(conv, implicit_prior)
            convs.append(conv)
        self.out = nn.ModuleList(convs)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for f, conv in zip(feats, self.out):
            y = conv(f)
            b, _, h, w = y.shape
            outs.append(
                y.view(b, self.num_anchors, self.outputs_per_anchor, h, w).permute(0, 1, 3, 4, 2)
            )
        return outs

    def decode(self, outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs to boxes [B, A, 4] (xyxy pixels) and class scores obj * cls [B, A, C]."""
        boxes, scores = [], []
        for level, p in enumerate(outputs):
            b = p.shape[0]
            y = self._decode_level(level, p)
            xy, wh, s = y[..., :2], y[..., 2:4], y[..., 4:]
            box = torch.cat((xy - wh / 2, xy + wh / 2), -1)
            boxes.append(box.reshape(b, -1, 4))
            scores.append((s[..., 1:] * s[..., :1]).reshape(b, -1, self.num_classes))
        return torch.cat(boxes, 1), torch.cat(scores, 1)

    def decode_xywh(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw outputs as YOLOR's / YOLOv7's inference tensor [B, A, 5 + C]: box centre and
        size in pixels, sigmoid objectness and class probabilities; levels flattened as
        (anchor, y, x) and concatenated."""
        return torch.cat(
            [self._decode_level(i, p).reshape(p.shape[0], -1, p.shape[-1]) for i, p in
             enumerate(outputs)], 1,
        )  # fmt: skip

    def _decode_level(self, level: int, p: torch.Tensor) -> torch.Tensor:
        _, na, h, w, _ = p.shape
        stride = self.strides[level]
        ys, xs = torch.meshgrid(
            torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij"
        )
        grid = torch.stack((xs, ys), -1).to(p.dtype)  # [h, w, 2]
        s = p.sigmoid()
        xy = (s[..., :2] * 2 - 0.5 + grid) * stride
        wh = (s[..., 2:4] * 2) ** 2 * self.anchors[level].view(1, na, 1, 1, 2)
        return torch.cat((xy, wh, s[..., 4:]), -1)

    def loss_fn(self, **kwargs) -> AnchorBasedLoss:
        """The matching loss (keyword arguments set its gains, ``anchor_t`` or ``balance``)."""
        return AnchorBasedLoss(self, **kwargs)
