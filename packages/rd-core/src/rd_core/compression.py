"""Dictionary compression (YOLO-RD section 3.3, equation 8, Algorithm 1 lines 15-22).

A trained RD (the teacher, ``N`` atoms) is distilled into a smaller one (the student, ``n < N``
atoms). Backbone and teacher are frozen; the student starts from the teacher's most used atoms
and learns with a contrastive loss: every student output position must be most similar (cosine)
to the teacher output at the same position, among all teacher positions of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ._checks import (
    check_bool,
    check_data,
    check_float,
    check_int,
    check_module,
    check_rd,
    check_tensor,
)
from .capture import find_parent, iter_rd_inputs
from .inspection import USAGE_SCORES, AtomUsage, atom_usage
from .module import RetrieverDictionary
from .retriever import ConvNormAct, FusedRetriever, SplitRetriever

__all__ = [
    "COMPRESSION_LOSSES",
    "CompressionReport",
    "compress",
    "cosine_distance",
    "distillation_loss",
    "student_from_teacher",
]


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


# --------------------------------------------------------------------------- student
@torch.no_grad()
def _copy_channels(dst: ConvNormAct, src: ConvNormAct, index: torch.Tensor) -> None:
    """Copy the output channels ``index`` of ``src`` (conv rows, BatchNorm entries) into ``dst``."""
    dst.conv.weight.copy_(src.conv.weight[index])
    if hasattr(src, "bn"):
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst.bn, name).copy_(getattr(src.bn, name)[index])


@torch.no_grad()
def student_from_teacher(
    teacher: RetrieverDictionary,
    index: torch.Tensor,
    *,
    inherit_retriever: bool = True,
    trainable_dictionary: bool = True,
) -> RetrieverDictionary:
    """A smaller RD whose atoms are the teacher's atoms ``index`` (Algorithm 1, line 15).

    With ``inherit_retriever`` the coefficient channels of the kept atoms (rows of ``G``,
    filters of ``E``, PONO's ``gamma``/``beta``, BatchNorm entries) are copied too, so the
    student starts by retrieving the kept atoms the way the teacher did. The paper only
    states that the student starts from chosen teacher atoms; ``inherit_retriever=False``
    leaves the retriever freshly initialised.

    Example:
        >>> import torch
        >>> teacher = RetrieverDictionary(8, num_atoms=16)
        >>> student = student_from_teacher(teacher, torch.arange(4))
        >>> torch.allclose(student.atoms, teacher.atoms[:4])
        True
    """
    check_rd("student_from_teacher", teacher, "teacher")
    if isinstance(index, torch.Tensor) and (index.is_floating_point() or index.is_complex()):
        raise TypeError(f"student_from_teacher: index must hold integers, got {index.dtype}")
    try:
        index = torch.as_tensor(index, dtype=torch.long).flatten().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"student_from_teacher: index must be a tensor or sequence of atom indices, got "
            f"{type(index).__name__}"
        ) from error
    if index.numel() < 2 or len(set(index.tolist())) != index.numel():
        raise ValueError("student_from_teacher: index must hold at least 2 distinct atom indices")
    if int(index.min()) < 0 or int(index.max()) >= teacher.num_atoms:
        raise ValueError(
            f"student_from_teacher: index must be in [0, {teacher.num_atoms}), got "
            f"[{int(index.min())}, {int(index.max())}]"
        )
    param = next(teacher.parameters())
    source_atoms = teacher.dictionary.atoms
    if hasattr(teacher.dictionary, "raw_atoms"):
        source_atoms = teacher.dictionary.raw_atoms.detach()
    student = RetrieverDictionary(
        teacher.in_channels,
        num_atoms=int(index.numel()),
        kernel_size=teacher.kernel_size,
        residual=teacher.residual,
        dictionary=source_atoms[index.to(source_atoms.device)].float().cpu(),
        trainable_dictionary=trainable_dictionary,
        variant=teacher.variant,
        fused_retriever=teacher.fused,
        eps=teacher.eps,
    ).to(device=param.device, dtype=param.dtype)
    bn = getattr(teacher.dictionary, "bn", None)
    if bn is not None:  # authors' variant: D's BatchNorm acts on the f output channels, keep all
        student.dictionary.bn.load_state_dict(bn.state_dict())
    if inherit_retriever:
        device_index = index.to(param.device)
        if isinstance(teacher.retriever, SplitRetriever):
            _copy_channels(student.retriever.generator, teacher.retriever.generator, device_index)
            _copy_channels(student.retriever.exchanger, teacher.retriever.exchanger, device_index)
        elif isinstance(teacher.retriever, FusedRetriever):
            _copy_channels(student.retriever.conv, teacher.retriever.conv, device_index)
        if teacher.norm.affine:
            student.norm.weight.copy_(teacher.norm.weight[device_index])
            student.norm.bias.copy_(teacher.norm.bias[device_index])
    return student


# --------------------------------------------------------------------------- compress
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
