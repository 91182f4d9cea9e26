"""The attention module of a KW layer and the contrasting-driven attention function (CAF).

Paper section 3.4 and Appendix A.3: global average pooling -> FC (c -> max(c * r, 16), r = 1/16)
-> BatchNorm1d -> ReLU -> FC to ``m x (n + 1)`` logits (``n`` warehouse cells plus the zero cell
``e_z``) -> CAF, then the zero-cell column is dropped. CAF (equation 4):

    alpha_ij = tau * beta_ij + (1 - tau) * z_ij / (sum_p |z_ip| + eps)

The sum runs over the ``n + 1`` logits of a mixture (the zero cell's logit included, as in the
authors' code). ``eps`` (1e-3 in the authors' code) only guards the division; the paper has none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int, check_number, check_tensor, invalid

__all__ = [
    "ATTENTION_NORMS",
    "AttentionBatchNorm1d",
    "KWAttention",
    "assign_cells",
    "contrasting_attention",
]


def contrasting_attention(
    logits: torch.Tensor, beta: torch.Tensor, temperature: torch.Tensor | float, eps: float = 1e-3
) -> torch.Tensor:
    """CAF: ``tau * beta + (1 - tau) * z / (sum |z| + eps)`` over the last dimension.

    Args:
        logits: ``[..., m, n + 1]`` attention logits, the zero cell last.
        beta: ``[m, n + 1]`` one-hot initial assignment (see :func:`assign_cells`).
        temperature: tau in [0, 1].
        eps: added to the L1 norm.

    Returns:
        ``[..., m, n]``: the attentions of the ``n`` real cells (zero-cell column dropped).

    Example:
        >>> z = torch.tensor([[[1.0, -3.0, 0.0]]])
        >>> beta = torch.tensor([[1.0, 0.0, 0.0]])
        >>> contrasting_attention(z, beta, 0.0, eps=0.0)
        tensor([[[ 0.2500, -0.7500]]])
        >>> contrasting_attention(z, beta, 1.0)
        tensor([[[1., 0.]]])
    """
    fn = "contrasting_attention"
    check_tensor(fn, "logits", logits, 2)
    check_tensor(fn, "beta", beta, 2)
    if logits.shape[-2:] != beta.shape:
        valid = f"the shape of logits' last two dims {tuple(logits.shape[-2:])}"
        raise invalid(fn, "beta", f"<shape {tuple(beta.shape)}>", valid)
    if not isinstance(temperature, torch.Tensor):
        check_number(fn, "temperature", temperature, 0.0, 1.0)
    check_number(fn, "eps", eps, 0.0)
    return _caf(logits, beta, temperature, eps)  # type: ignore[arg-type]


def _caf(
    logits: torch.Tensor, beta: torch.Tensor, temperature: torch.Tensor, eps: float
) -> torch.Tensor:
    # the forward pass's CAF: its inputs come from the module, checked when it was built
    normed = logits / (logits.abs().sum(dim=-1, keepdim=True) + eps)
    mixed = (1.0 - temperature) * normed + temperature * beta
    return mixed[..., :-1]


def assign_cells(
    num_mixtures: int,
    num_cells: int,
    start: int,
    cells_per_mixture: float,
    rule: str = "diagonal",
) -> tuple[torch.Tensor, int]:
    """The one-hot initial attentions beta of one layer (paper Appendix A.2).

    Cells of a shared warehouse are handed out to mixtures in module order without repetition,
    starting at ``start``. For ``cells_per_mixture >= 1`` every mixture gets one cell and the
    cursor advances ``floor(cells_per_mixture)`` cells. Below one, only a share
    ``cells_per_mixture`` of the mixtures gets a real cell, the rest point at the zero cell:
    with ``rule="diagonal"`` (the authors' code) mixture ``i`` gets one when
    ``i % k == (i // k) % k`` for ``k = 1 / cells_per_mixture``, which at tau = 1 makes the layer
    a group convolution with ``k`` groups, as the paper describes; ``rule="strided"`` gives one
    to every k-th mixture instead. Once the warehouse's cells are used up the remaining
    mixtures point at the zero cell (paper section 3.4).

    Returns:
        ``(beta [num_mixtures, num_cells + 1], next_start)``.

    Example:
        >>> beta, nxt = assign_cells(3, 6, start=2, cells_per_mixture=1.0)
        >>> beta.argmax(dim=1).tolist(), nxt
        ([2, 3, 4], 5)
        >>> beta, nxt = assign_cells(4, 2, start=0, cells_per_mixture=0.5)
        >>> beta.argmax(dim=1).tolist(), nxt
        ([0, 2, 2, 1], 2)
    """
    fn = "assign_cells"
    check_int(fn, "num_mixtures", num_mixtures)
    check_int(fn, "num_cells", num_cells, 0)
    check_int(fn, "start", start, 0)
    check_number(fn, "cells_per_mixture", cells_per_mixture, 0.0, open_low=True)
    if rule not in ("diagonal", "strided"):
        raise ValueError(f"rule={rule!r} is invalid: expected 'diagonal' or 'strided'")
    beta = torch.zeros(num_mixtures, num_cells + 1)
    zero_cell = num_cells
    if cells_per_mixture >= 1.0:
        step = int(cells_per_mixture)
        for i in range(num_mixtures):
            beta[i, start if start < num_cells else zero_cell] = 1.0
            start += step
        return beta, start
    k = round(1.0 / cells_per_mixture)
    for i in range(num_mixtures):
        gets_cell = (i % k == (i // k) % k) if rule == "diagonal" else (i % k == 0)
        if gets_cell and start < num_cells:
            beta[i, start] = 1.0
            start += 1
        else:
            beta[i, zero_cell] = 1.0
    return beta, start


class AttentionBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that also runs in training on a batch of one sample.

    A single pooled vector has no batch statistics (PyTorch's BatchNorm1d raises). For a batch of
    one in training mode this layer normalises with the running statistics, as in eval mode, and
    leaves them unchanged; larger batches behave exactly like BatchNorm1d.

    Example:
        >>> bn = AttentionBatchNorm1d(16).train()
        >>> bn(torch.randn(1, 16)).shape
        torch.Size([1, 16])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if torch.jit.is_scripting():
            return self._batch_norm_scripted(x)
        return self._batch_norm(x)

    @torch.jit.unused
    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def _batch_norm_scripted(self, x: torch.Tensor) -> torch.Tensor:
        # TorchScript has no super(): BatchNorm1d's forward for this layer's settings (affine,
        # running statistics tracked, momentum a float)
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.training:
            num = self.num_batches_tracked
            if num is not None:
                num.add_(1)
                if self.momentum is None:
                    momentum = 1.0 / float(num)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, momentum,
            self.eps,
        )  # fmt: skip


#: attention normalisation by name: the paper's BatchNorm1d, or the LayerNorm of the authors'
#: ConvNeXt code (their first FC then has a bias)
ATTENTION_NORMS: dict[str, type[nn.Module]] = {
    "batchnorm": AttentionBatchNorm1d,
    "layernorm": nn.LayerNorm,
}


class KWAttention(nn.Module):
    """SE-typed attention producing ``[B, m, n]`` cell attentions from a pooled input.

    Args:
        in_channels: channels of the layer's input (the pooled vector's length).
        num_mixtures: ``m``, the layer's cell count.
        num_cells: ``n``, the warehouse's cell count.
        beta: ``[m, n + 1]`` initial one-hot attentions (buffer, derived from the plan).
        reduction: hidden width ratio of the first FC (1/16 in the paper).
        min_hidden: floor of the hidden width (16).
        eps: CAF normaliser guard.
        nonlocal_basis_ratio: below 1, the logits of the cells that belong to other layers come
            from a smaller basis (authors' option for ResNet50 at 1/2x): ``local_start`` and
            ``num_local_cells`` name this layer's own cells.

    The temperature ``tau`` is a buffer (kept in checkpoints); set it with
    :func:`kernelwarehouse.set_temperature` or :class:`kernelwarehouse.TemperatureScheduler`.

    Example:
        >>> beta, _ = assign_cells(9, 9, 0, 1.0)
        >>> att = KWAttention(64, num_mixtures=9, num_cells=9, beta=beta)
        >>> att(torch.randn(2, 64)).shape
        torch.Size([2, 9, 9])
    """

    # constant under TorchScript, so the basis branch (and its modules) is compiled only where
    # they exist
    __constants__ = ("use_basis",)

    def __init__(
        self,
        in_channels: int,
        num_mixtures: int,
        num_cells: int,
        beta: torch.Tensor,
        reduction: float = 1 / 16,
        min_hidden: int = 16,
        eps: float = 1e-3,
        nonlocal_basis_ratio: float = 1.0,
        local_start: int = 0,
        num_local_cells: int | None = None,
        norm: str = "batchnorm",
    ) -> None:
        super().__init__()
        fn = "KWAttention"
        check_int(fn, "in_channels", in_channels)
        check_int(fn, "num_mixtures", num_mixtures)
        check_int(fn, "num_cells", num_cells)
        check_tensor(fn, "beta", beta, 2)
        check_number(fn, "reduction", reduction, 0.0, open_low=True)
        check_int(fn, "min_hidden", min_hidden)
        check_number(fn, "eps", eps, 0.0)
        if norm not in ATTENTION_NORMS:
            raise ValueError(f"norm={norm!r} is invalid: expected one of {list(ATTENTION_NORMS)}")
        if tuple(beta.shape) != (num_mixtures, num_cells + 1):
            raise ValueError(
                f"{fn}: beta has shape {tuple(beta.shape)}; expected (num_mixtures, num_cells + 1)"
                f" = ({num_mixtures}, {num_cells + 1})"
            )
        hidden = max(int(in_channels * reduction), min_hidden)
        self.num_mixtures = num_mixtures
        self.num_cells = num_cells
        self.eps = eps
        # BatchNorm cancels a bias, so the first FC has none before it (as the authors' code).
        self.fc1 = nn.Linear(in_channels, hidden, bias=norm != "batchnorm")
        self.norm1 = ATTENTION_NORMS[norm](hidden)
        self.act1 = nn.ReLU(inplace=True)
        per_mixture = num_cells + 1
        self.use_basis = nonlocal_basis_ratio < 1.0
        if self.use_basis:
            local = num_local_cells if num_local_cells is not None else num_mixtures
            local = min(local, num_cells)
            self.num_local_cells = local
            self.local_start = local_start
            num_nonlocal = num_cells - local
            self.num_basis = max(int(num_nonlocal * nonlocal_basis_ratio), 16)
            self.fc2 = nn.Linear(hidden, (local + self.num_basis + 1) * num_mixtures, bias=False)
            self.fc3 = nn.Linear(self.num_basis, num_nonlocal, bias=False)
            self.basis_bias = nn.Parameter(torch.zeros(num_mixtures * per_mixture))
        else:
            self.fc2 = nn.Linear(hidden, num_mixtures * per_mixture)
        self.register_buffer("beta", beta.clone().float(), persistent=False)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.ones_(self.norm1.weight)
        nn.init.zeros_(self.norm1.bias)

    def _basis_to_cells(self, logits: torch.Tensor) -> torch.Tensor:
        # Logits of this layer's own cells are direct; those of other layers' cells are a linear
        # map of a small basis, inserted around the layer's own range.
        rows = logits.reshape(-1, self.num_local_cells + self.num_basis + 1)
        local = rows[:, : self.num_local_cells]
        nonlocal_ = self.fc3(rows[:, self.num_local_cells : -1])
        zero = rows[:, -1:]
        start = self.local_start
        full = torch.cat([nonlocal_[:, :start], local, nonlocal_[:, start:], zero], dim=1)
        return full.reshape(-1, self.num_mixtures * (self.num_cells + 1)) + self.basis_bias

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, m, n + 1]`` logits before CAF."""
        hidden = self.act1(self.norm1(self.fc1(pooled)))
        out = self.fc2(hidden)
        if self.use_basis:
            out = self._basis_to_cells(out)
        return out.reshape(-1, self.num_mixtures, self.num_cells + 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled``: ``[B, C]`` -> attentions ``[B, m, n]``."""
        # CAF in float32 or better even under autocast: the L1 normaliser sums n + 1 logits
        logits = self.logits(pooled)
        if logits.dtype == torch.float16 or logits.dtype == torch.bfloat16:
            logits = logits.float()
        return _caf(logits, self.beta, self.temperature, self.eps)

    def extra_repr(self) -> str:
        return f"m={self.num_mixtures}, n={self.num_cells}, tau={float(self.temperature):.3f}"
