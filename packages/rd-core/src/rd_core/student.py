"""The student RD of dictionary compression (YOLO-RD Algorithm 1, line 15).

:func:`student_from_teacher` builds a smaller RD from chosen teacher atoms (which ones:
:meth:`rd_core.AtomUsage.most_used`), optionally with their retriever channels.
"""

from __future__ import annotations

import torch

from ._checks import check_rd
from .module import RetrieverDictionary
from .retriever import ConvNormAct, FusedRetriever, SplitRetriever

__all__ = ["student_from_teacher"]


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
