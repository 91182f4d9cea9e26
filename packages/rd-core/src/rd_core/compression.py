"""Dictionary compression (YOLO-RD section 3.3, equation 8, Algorithm 1 lines 15-22).

A trained RD (the teacher, ``N`` atoms) is distilled into a smaller one (the student, ``n < N``
atoms). Backbone and teacher are frozen; the student starts from the teacher's most used atoms
(:mod:`rd_core.student`) and learns with a contrastive loss (:mod:`rd_core.distillation`): every
student output position must be most similar (cosine) to the teacher output at the same
position, among all teacher positions of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import (
    check_bool,
    check_data,
    check_float,
    check_int,
    check_module,
    check_rd,
)
from .capture import find_parent, iter_rd_inputs
from .distillation import COMPRESSION_LOSSES, cosine_distance, distillation_loss
from .inspection import USAGE_SCORES, AtomUsage, atom_usage
from .module import RetrieverDictionary
from .student import student_from_teacher

# The losses and the student builder live in their own modules; they stay importable from here.
__all__ = [
    "COMPRESSION_LOSSES",
    "CompressedFolder",
    "CompressionReport",
    "compress",
    "cosine_distance",
    "distillation_loss",
    "student_from_teacher",
]


@dataclass
class CompressionReport:
    """What :func:`compress` did and how close the student came to the teacher.

    ``cosine_similarity`` is the mean cosine similarity between student and teacher outputs
    over every position of ``data`` (1 = same direction everywhere); ``relative_error`` is
    ``||student - teacher|| / ||teacher||`` over the same positions. ``initial_loss`` and
    ``final_loss`` are the mean distillation loss over ``data`` before and after training
    (same sampled positions for both).
    """

    student: RetrieverDictionary
    kept_atoms: torch.Tensor
    usage: AtomUsage
    teacher_atoms: int
    student_atoms: int
    teacher_parameters: int
    student_parameters: int
    initial_loss: float
    final_loss: float
    cosine_similarity: float
    relative_error: float
    loss_history: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"atoms {self.teacher_atoms} -> {self.student_atoms}, parameters "
            f"{self.teacher_parameters} -> {self.student_parameters}, loss "
            f"{self.initial_loss:.4f} -> {self.final_loss:.4f}, cosine similarity "
            f"{self.cosine_similarity:.4f}, relative error {self.relative_error:.4f}"
        )


@dataclass
class CompressedFolder:
    """A saved model whose Retriever-Dictionaries :func:`compress` distilled, as the command
    lines of yolo-heads and timm-knowledge write it: the new ``folder``, the ``model`` as saved
    and the :class:`CompressionReport` of each RD by module name (``report``: the first).

    >>> import torch
    >>> done = CompressedFolder(Path("m-rd8"), torch.nn.Identity(), {})
    >>> done.summary()
    'compressed model: m-rd8'
    """

    kind: ClassVar[str] = "model"  # the summary's name for what was written

    folder: Path
    model: nn.Module
    reports: dict[str, CompressionReport]

    @property
    def report(self) -> CompressionReport:
        return next(iter(self.reports.values()))

    def summary(self) -> str:
        lines = [f"{name}: {report.summary()}" for name, report in self.reports.items()]
        return "\n".join([*lines, f"compressed {self.kind}: {self.folder}"])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_sum(values: torch.Tensor, like: nn.Module) -> torch.Tensor:
    """Sum a small CPU tensor over all ranks (a no-op without torch.distributed)."""
    if not _distributed():
        return values
    if torch.distributed.get_backend() == "nccl":
        reduced = values.to(next(like.parameters()).device)
        torch.distributed.all_reduce(reduced)
        return reduced.cpu()
    torch.distributed.all_reduce(values)
    return values


def _broadcast_state(module: nn.Module, tensors: str = "all") -> None:
    """Rank 0's parameters and/or buffers to every rank."""
    if not _distributed():
        return
    chosen = list(module.buffers()) if tensors == "buffers" else list(module.state_dict().values())
    for tensor in chosen:
        torch.distributed.broadcast(tensor.data, src=0)


def _average_gradients(module: nn.Module) -> None:
    if not _distributed():
        return
    world = torch.distributed.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


@torch.no_grad()
def _evaluate(
    model: nn.Module | None,
    teacher: RetrieverDictionary,
    student: RetrieverDictionary,
    data: Any,
    temperature: float,
    max_positions: int | None,
    max_batches: int | None,
    seed: int,
    loss_fn: Callable[..., torch.Tensor] = distillation_loss,
) -> tuple[float, float, float]:
    generator = torch.Generator().manual_seed(seed)
    # loss sum, batches, cosine sum, positions, squared difference, squared reference
    sums = torch.zeros(6, dtype=torch.float64)
    for features in iter_rd_inputs(model, teacher, data, max_batches):
        t, s = teacher(features).float(), student(features).float()
        loss = loss_fn(s, t, temperature, max_positions=max_positions, generator=generator)
        sums += torch.tensor(
            [
                float(loss),
                1.0,
                float(F.cosine_similarity(s, t, dim=1).sum()),
                t.shape[0] * t.shape[2] * t.shape[3],
                float((s - t).pow(2).sum()),
                float(t.pow(2).sum()),
            ],
            dtype=torch.float64,
        )
    sums = _all_reduce_sum(sums, student)
    loss_sum, batches, cos_sum, count, diff_sq, ref_sq = sums.tolist()
    if count == 0:
        raise ValueError("compress: data is empty (no batch was seen)")
    return loss_sum / batches, cos_sum / count, math.sqrt(diff_sq / max(ref_sq, 1e-30))


def _record_atom_count(model: nn.Module, name: str, num_atoms: int) -> None:
    """Keep the build arguments timm recorded for ``model`` (``_model_args``, what
    ``timm.models.save_for_hf`` and hub-knowledge write to ``config.json``) in step with the
    student, so a saved compressed model is rebuilt with its new atom count.

    ``with_rd`` models list their RDs in ``rd_attachments``; an architecture with one RD and a
    ``num_atoms`` argument (``rd_resnet18``) or an ``rd`` one (a detector registered in timm,
    ``yolo_rd_resnet50``) takes the count there. Other models record
    nothing here; their savers read the count from the module (e.g. yolo-heads' checkpoints).
    """
    recorded = getattr(model, "_model_args", None)
    if not isinstance(recorded, dict):
        return
    recorded = dict(recorded)
    at = name.removesuffix(".rd")  # an attach() insertion keeps its RD under "<at>.rd"
    entries = recorded.get("rd_attachments")
    if isinstance(entries, (list, tuple)):
        recorded["rd_attachments"] = [
            {**entry, "num_atoms": num_atoms}
            if isinstance(entry, dict) and entry.get("at") == at
            else entry
            for entry in entries
        ]
    elif "num_atoms" in recorded or recorded.get("rd"):
        if sum(isinstance(m, RetrieverDictionary) for m in model.modules()) != 1:
            return  # one argument cannot describe RDs of different sizes
        if "num_atoms" in recorded:
            recorded["num_atoms"] = num_atoms
        else:  # a detector's rd=True / rd={...} (yolo-heads' names registered in timm)
            rd = recorded["rd"]
            recorded["rd"] = {**(rd if isinstance(rd, dict) else {}), "num_atoms": num_atoms}
    model._model_args = recorded  # timm.models._input.update_model_args does the same


def compress(
    model: nn.Module | None,
    rd: RetrieverDictionary,
    num_atoms: int,
    data: Iterable[Any] | torch.Tensor,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: Callable[[list[nn.Parameter]], Any] | None = None,
    temperature: float = 0.1,
    max_positions: int | None = 4096,
    usage_score: str = "mean_abs",
    inherit_retriever: bool = True,
    freeze_batchnorm: bool | None = None,
    max_batches: int | None = None,
    seed: int = 0,
    progress: bool = True,
    loss: str = "contrastive",
) -> CompressionReport:
    """Distil ``rd`` into a student with ``num_atoms`` atoms and swap it into ``model``.

    Algorithm 1, lines 15-22: backbone and teacher frozen; the student starts from the
    teacher's most used atoms (:func:`atom_usage` over ``data``, ranked by ``usage_score``)
    and is trained with :func:`distillation_loss` on the features that reach the RD. Afterwards
    the student replaces ``rd`` in ``model``, the model's ``requires_grad`` flags and training
    mode are restored, and the report says how close the student's features are.

    Args:
        model: the model that contains ``rd`` (after :func:`rd_core.attach`); ``None`` when
            ``data`` already holds the RD's input features (nothing is swapped then).
        rd: the trained teacher RD.
        num_atoms: the student's atom count, ``2 <= num_atoms < rd.num_atoms`` (the paper
            removes at least 50%).
        data: batches of model inputs: tensors, ``(images, targets)`` or ``{"image": ...}``.
        epochs: passes over ``data`` (the paper uses one).
        lr, weight_decay: AdamW settings for the student.
        optimizer: ``params -> optimizer`` (anything with ``zero_grad`` and ``step``) to use
            instead of AdamW.
        temperature: ``tau`` of equation 8.
        max_positions: positions sampled per batch for the loss (``None``: all).
        usage_score: ``"mean_abs"``, ``"top1"`` or ``"top1_then_mean_abs"``.
        inherit_retriever: copy the kept atoms' retriever channels (see
            :func:`student_from_teacher`).
        freeze_batchnorm: keep the student's BatchNorm statistics (authors' variant) fixed
            at the values inherited from the teacher while it trains, so training and the
            final eval-mode student compute the same function; default: ``inherit_retriever``.
            Features come from a frozen backbone, so the teacher's statistics of the kept
            channels already describe them.
        max_batches: stop each pass after this many batches.
        seed: seeds the position sampling.
        progress: show a tqdm progress bar.
        loss: ``"contrastive"`` (equation 8, :func:`distillation_loss`; ``temperature`` and
            ``max_positions`` apply) or ``"cosine"`` (Algorithm 1 line 21,
            :func:`cosine_distance`). On the digits detector of yolo-heads' README (512 -> 256
            atoms, one epoch) the cosine loss kept AP at 0.066 of the teacher's 0.080 while
            equation 8 fell to 0.010 (the kept atoms alone, untrained: 0.058): equation 8 only
            ranks positions, and the frozen head needs the teacher's outputs themselves.

    Under ``torch.distributed`` (every rank calls ``compress`` with its shard of the data and
    the same number of batches), atom usage and the report are summed over all ranks, the
    student starts from rank 0's copy and its gradients are averaged, so all ranks end with
    the same student.

    Example:
        >>> import torch
        >>> from rd_core import RetrieverDictionary
        >>> teacher = RetrieverDictionary(8, num_atoms=16).eval()
        >>> feats = [torch.randn(2, 8, 6, 6) for _ in range(2)]
        >>> report = compress(None, teacher, 8, feats, epochs=2, progress=False)
        >>> report.student.num_atoms
        8

    A timm model's recorded build arguments follow (``num_atoms`` of ``rd_resnet18``, the
    entry of a ``with_rd`` model's ``rd_attachments``), so ``timm.models.save_for_hf`` and
    ``hub_knowledge.save_for_hub`` write a ``config.json`` that rebuilds the student.
    """
    check_rd("compress", rd)
    check_data("compress", data)
    if (
        isinstance(num_atoms, bool)
        or not isinstance(num_atoms, int)
        or not 2 <= num_atoms < rd.num_atoms
    ):
        raise ValueError(
            f"compress: num_atoms must be an int in [2, {rd.num_atoms}) (fewer than the "
            f"teacher's {rd.num_atoms} atoms), got {num_atoms!r}"
        )
    check_int("compress", "epochs", epochs, 1)
    check_float("compress", "lr", lr)
    check_float("compress", "weight_decay", weight_decay, positive=False)
    check_float("compress", "temperature", temperature)
    check_int("compress", "max_positions", max_positions, 2, optional=True)
    check_int("compress", "max_batches", max_batches, 1, optional=True)
    check_int("compress", "seed", seed, 0)
    for name, flag in (("inherit_retriever", inherit_retriever), ("progress", progress)):
        check_bool("compress", name, flag)
    if freeze_batchnorm is not None:
        check_bool("compress", "freeze_batchnorm", freeze_batchnorm)
    if loss not in COMPRESSION_LOSSES:
        raise ValueError(
            f"compress: loss={loss!r} is invalid: expected one of {sorted(COMPRESSION_LOSSES)}"
        )
    loss_fn = COMPRESSION_LOSSES[loss]
    if usage_score not in USAGE_SCORES:
        raise ValueError(
            f"compress: usage_score={usage_score!r} is invalid: expected one of "
            f"{sorted(USAGE_SCORES)}"
        )
    check_module("compress", model, optional=True)
    location = find_parent(model, rd) if model is not None else None
    modules: list[nn.Module] = [model] if model is not None else [rd]
    saved_flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    saved_modes = [(m, m.training) for m in modules for m in m.modules()]
    try:
        for m in modules:
            m.eval()
            m.requires_grad_(False)
        usage = atom_usage(rd, data, model=model, max_batches=max_batches)
        kept = usage.most_used(num_atoms, usage_score)
        student = student_from_teacher(rd, kept, inherit_retriever=inherit_retriever)
        _broadcast_state(student)  # every rank starts from rank 0's student
        initial_loss, _, _ = _evaluate(
            model, rd, student.eval(), data, temperature, max_positions, max_batches, seed, loss_fn
        )
        if freeze_batchnorm is None:
            freeze_batchnorm = inherit_retriever
        student.train(not freeze_batchnorm)
        params = list(student.parameters())
        optim = (
            optimizer(params)
            if optimizer is not None
            else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        )
        generator = torch.Generator().manual_seed(seed + 1)
        history: list[float] = []
        total = None
        if max_batches is not None:
            total = epochs * max_batches
        elif hasattr(data, "__len__"):
            total = epochs * (1 if isinstance(data, torch.Tensor) else len(data))
        bar = tqdm(
            total=total, desc=f"compress {rd.num_atoms}->{num_atoms} atoms", disable=not progress
        )
        for _ in range(epochs):
            for features in iter_rd_inputs(model, rd, data, max_batches):
                with torch.no_grad():
                    target = rd(features)
                value = loss_fn(
                    student(features),
                    target,
                    temperature,
                    max_positions=max_positions,
                    generator=generator,
                )
                optim.zero_grad()
                value.backward()
                _average_gradients(student)
                optim.step()
                history.append(float(value.detach()))
                bar.set_postfix(loss=f"{history[-1]:.4f}")
                bar.update(1)
        bar.close()
        _broadcast_state(student, "buffers")  # BatchNorm statistics (authors' variant) agree
        student.eval()
        final_loss, cosine, relative = _evaluate(
            model, rd, student, data, temperature, max_positions, max_batches, seed, loss_fn
        )
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        for m, mode in saved_modes:
            m.training = mode
    if location is not None:
        parent, attribute, name = location
        setattr(parent, attribute, student)
        student.train(rd.training)
        _record_atom_count(model, name, num_atoms)
    return CompressionReport(
        student=student,
        kept_atoms=kept,
        usage=usage,
        teacher_atoms=rd.num_atoms,
        student_atoms=num_atoms,
        teacher_parameters=sum(p.numel() for p in rd.parameters()),
        student_parameters=sum(p.numel() for p in student.parameters()),
        initial_loss=initial_loss,
        final_loss=final_loss,
        cosine_similarity=cosine,
        relative_error=relative,
        loss_history=history,
    )
