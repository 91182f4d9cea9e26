"""Image classification head on the deepest pyramid level (YOLOv8-cls style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_fraction, check_int
from ..layers import ConvBnAct
from . import check_head_args, register_head


@register_head("classification")
class ClassificationHead(nn.Module):
    """1x1 ConvBnAct to ``hidden`` channels, global average pool, dropout, linear.

    Takes the list of pyramid maps and uses the last (stride 32). ``forward`` returns logits
    ``[B, num_classes]``; :meth:`loss_fn` gives cross-entropy on per-image ``labels``.

    >>> ClassificationHead([16, 32, 64], num_classes=5)([torch.zeros(2, 64, 2, 2)] * 3).shape
    torch.Size([2, 5])
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        hidden: int = 256,
        dropout: float = 0.0,
        **unused,
    ) -> None:
        super().__init__()
        fn = "ClassificationHead"
        in_channels, strides, num_classes = check_head_args(fn, in_channels, strides, num_classes)
        hidden = check_int("hidden", hidden, fn=fn)
        dropout = check_fraction("dropout", dropout, fn=fn)
        self.num_classes, self.strides = num_classes, strides
        self.conv = ConvBnAct(in_channels[-1], hidden, 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.conv(feats[-1]).mean((2, 3))
        return self.fc(self.drop(x))

    def loss_fn(self, **kwargs):
        """Cross-entropy on ``targets`` (a tensor [B] or per-image dicts with ``labels``)."""

        def loss(logits: torch.Tensor, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if isinstance(targets, torch.Tensor):
                labels = targets.long().to(logits.device)
            else:
                labels = torch.stack(
                    [torch.as_tensor(t["labels"]).reshape(-1)[0] for t in targets]
                ).to(logits.device)
            value = F.cross_entropy(logits, labels, **kwargs)
            return value, {"cls": value.detach()}

        return loss
