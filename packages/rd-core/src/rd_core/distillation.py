"""Distillation losses of dictionary compression (YOLO-RD section 3.3).

:func:`distillation_loss` is equation 8: each student output position must be most similar
(cosine) to the teacher output at the same position, among all teacher positions of the batch.
:func:`cosine_distance` is Algorithm 1 line 21's cosine similarity between matching positions.
:data:`COMPRESSION_LOSSES` names both for :func:`rd_core.compress`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ._checks import check_float, check_int, check_tensor

__all__ = ["COMPRESSION_LOSSES", "cosine_distance", "distillation_loss"]


def _positions(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if x.dim() == 2:
        return x
    raise ValueError(
        f"distillation_loss: {name} must be [B, f, H, W] or [M, f], got {tuple(x.shape)}"
    )


def _gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of ``_positions(x)`` without copying the whole map first."""
    if x.dim() == 2:
        return x[index]
    hw = x.shape[2] * x.shape[3]
    return x.flatten(2)[index // hw, :, index % hw]  # [M, f]


def _chunk_loss(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    logits = student @ teacher.t() / temperature
    return F.cross_entropy(logits, targets, reduction="sum")


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 0.1,
    *,
    max_positions: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Equation 8 averaged over every (sampled) position of the batch.

    ``L_{i,w,h} = -log( exp(sim(z_rd_{i,w,h}, z_RD_{i,w,h}) / tau)
    / sum_{j,w',h'} exp(sim(z_rd_{i,w,h}, z_RD_{j,w',h'}) / tau) )``, ``sim`` = cosine.

    Args:
        student, teacher: outputs ``[B, f, H, W]`` (or ``[M, f]``) of the student and teacher RD.
        temperature: ``tau`` (the paper does not state it; 0.1 here).
        max_positions: sample this many positions (the same ones from student and teacher,
            without replacement) when the batch has more; the loss is then equation 8 over the
            sampled set. 4096 keeps 32 x 512 x 80 x 80 maps at a 64 MiB similarity matrix.
        chunk_size: compute the exact loss over all positions in row chunks of this size, each
            recomputed in the backward pass (activation checkpointing), so memory grows with
            ``chunk_size x M`` instead of ``M x M``.
        generator: random generator for the sampling.

    Example:
        >>> import torch
        >>> t = torch.randn(2, 8, 4, 4)
        >>> same = distillation_loss(t, t, 0.1)
        >>> bool(same < distillation_loss(torch.randn_like(t), t, 0.1))
        True
    """
    check_tensor("distillation_loss", "student", student, (2, 4))
    check_tensor("distillation_loss", "teacher", teacher, (2, 4))
    check_int("distillation_loss", "max_positions", max_positions, 2, optional=True)
    check_int("distillation_loss", "chunk_size", chunk_size, 1, optional=True)
    if student.shape != teacher.shape:
        raise ValueError(
            f"distillation_loss: student shape {tuple(student.shape)} != teacher shape "
            f"{tuple(teacher.shape)}"
        )
    check_float("distillation_loss", "temperature", temperature)
    if student.dim() not in (2, 4):
        _positions(student, "student")  # raises the shape error
    m = student.numel() // student.shape[1] if student.dim() == 4 else student.shape[0]
    if max_positions is not None and max_positions < 2:
        raise ValueError(f"distillation_loss: max_positions must be >= 2, got {max_positions}")
    if max_positions is not None and m > max_positions:
        index = torch.randperm(m, generator=generator, device="cpu")[:max_positions]
        s = _gather_positions(student, index.to(student.device))
        t = _gather_positions(teacher, index.to(teacher.device))
        m = max_positions
    else:
        s, t = _positions(student, "student"), _positions(teacher, "teacher")
    s = F.normalize(s.float(), dim=1)
    t = F.normalize(t.float(), dim=1)
    targets = torch.arange(m, device=s.device)
    if chunk_size is None or chunk_size >= m:
        return _chunk_loss(s, t, targets, temperature) / m
    if chunk_size < 1:
        raise ValueError(f"distillation_loss: chunk_size must be >= 1, got {chunk_size}")
    total = s.new_zeros(())
    for start in range(0, m, chunk_size):
        stop = min(start + chunk_size, m)
        total = total + checkpoint(
            _chunk_loss, s[start:stop], t, targets[start:stop], temperature, use_reentrant=False
        )
    return total / m


def cosine_distance(
    student: torch.Tensor, teacher: torch.Tensor, *_: Any, **__: Any
) -> torch.Tensor:
    """``1 - cos(z_rd, z_RD)`` averaged over every position of the batch (Algorithm 1, line 21:
    ``loss <- cosine_similarity(teacher_feature, student_feature)``).

    Unlike equation 8, which only asks each student position to be nearer its own teacher
    position than the others, it pulls every student output towards its teacher output.

    Example:
        >>> import torch
        >>> t = torch.randn(2, 8, 4, 4)
        >>> float(cosine_distance(t, t)) < 1e-6
        True
    """
    check_tensor("cosine_distance", "student", student, (2, 4))
    check_tensor("cosine_distance", "teacher", teacher, (2, 4))
    if student.shape != teacher.shape:
        raise ValueError(
            f"cosine_distance: student shape {tuple(student.shape)} != teacher shape "
            f"{tuple(teacher.shape)}"
        )
    return 1 - F.cosine_similarity(student.float(), teacher.float(), dim=1).mean()


#: Losses :func:`compress` can distil with: the paper's equation 8 (contrastive over all
#: positions of the batch) and Algorithm 1's cosine similarity between matching positions.
COMPRESSION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "contrastive": distillation_loss,
    "cosine": cosine_distance,
}
