"""Inspection: per-position atom coefficients, atom usage over data, and a saved plot.

* :func:`coefficient_maps` — for an input, the normalised coefficients ``c'`` at every position,
  the strongest atom and its coefficient, and how well the coefficients follow the input: the
  Pearson correlation, over the atoms, between ``c'`` and the cosine similarity of the input
  feature with each atom (1 = the retriever picks the atoms the feature resembles).
* :func:`atom_usage` — per-atom statistics over a data set (used by compression to pick the
  most used atoms).
* :func:`plot_coefficients` — the maps above and the usage histogram in one figure, written
  atomically (temporary name, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    check_data,
    check_int,
    check_module,
    check_path,
    check_rd,
    check_tensor,
)
from ._files import atomic_write
from .capture import iter_rd_inputs, rd_inputs
from .module import RetrieverDictionary

__all__ = [
    "USAGE_SCORES",
    "AtomUsage",
    "CoefficientMaps",
    "atom_usage",
    "coefficient_maps",
    "plot_coefficients",
]


@dataclass
class CoefficientMaps:
    """Per-position coefficients of one input batch (all tensors on the CPU)."""

    coefficients: torch.Tensor  # [B, N, H, W], normalised (after PONO)
    top_atom: torch.Tensor  # [B, H, W], index of the largest coefficient
    top_coefficient: torch.Tensor  # [B, H, W], its value
    input_correlation: torch.Tensor  # [B, H, W], corr over atoms of c' and cos(x, atom)
    input_similarity: torch.Tensor  # [B, N, H, W], cos(x_hw, atom_n)


@torch.no_grad()
def coefficient_maps(
    rd: RetrieverDictionary, features: torch.Tensor, *, model: nn.Module | None = None
) -> CoefficientMaps:
    """Coefficients of ``rd`` for the feature map ``features`` ``[B, f, H, W]`` (its input).

    With ``model`` (which contains ``rd``), ``features`` are the model's input images and the
    features that reach ``rd`` are captured on the way (the rest of the model is not run).

    Example:
        >>> import torch
        >>> from rd_core import RetrieverDictionary
        >>> maps = coefficient_maps(RetrieverDictionary(8, num_atoms=16), torch.randn(2, 8, 5, 5))
        >>> maps.coefficients.shape, maps.input_correlation.shape
        (torch.Size([2, 16, 5, 5]), torch.Size([2, 5, 5]))
    """
    check_rd("coefficient_maps", rd)
    check_tensor("coefficient_maps", "features", features, (4,))
    if model is not None:
        features = rd_inputs(model, rd, features)
    coefficients = rd.coefficients(features).float()
    atoms = F.normalize(rd.atoms.float(), dim=1)  # [N, f]
    similarity = torch.einsum("bfhw,nf->bnhw", F.normalize(features.float(), dim=1), atoms)
    a = coefficients - coefficients.mean(1, keepdim=True)
    b = similarity - similarity.mean(1, keepdim=True)
    correlation = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    top_coefficient, top_atom = coefficients.max(dim=1)
    return CoefficientMaps(
        coefficients=coefficients.cpu(),
        top_atom=top_atom.cpu(),
        top_coefficient=top_coefficient.cpu(),
        input_correlation=correlation.cpu(),
        input_similarity=similarity.cpu(),
    )


# --------------------------------------------------------------------------- usage
@dataclass
class AtomUsage:
    """How much each atom is used over a data set.

    Attributes:
        mean_abs: mean ``|c'_n|`` over all positions, ``[N]``.
        top1_fraction: share of positions where atom ``n`` has the largest coefficient, ``[N]``.
        num_positions: positions seen (batch x height x width, summed over batches).
    """

    mean_abs: torch.Tensor
    top1_fraction: torch.Tensor
    num_positions: int

    def score(self, name: str = "mean_abs") -> torch.Tensor:
        """The usage score registered as ``name`` in :data:`USAGE_SCORES`."""
        if name not in USAGE_SCORES:
            raise ValueError(f"usage: unknown score {name!r}; valid: {sorted(USAGE_SCORES)}")
        return USAGE_SCORES[name](self)

    def most_used(self, count: int, score: str = "mean_abs") -> torch.Tensor:
        """Indices of the ``count`` most used atoms, most used first."""
        values = self.score(score)
        if not 1 <= count <= values.numel():
            raise ValueError(f"most_used: count must be in [1, {values.numel()}], got {count}")
        return torch.argsort(values, descending=True, stable=True)[:count]


USAGE_SCORES: dict[str, Callable[[AtomUsage], torch.Tensor]] = {
    "mean_abs": lambda usage: usage.mean_abs,
    "top1": lambda usage: usage.top1_fraction,
    # Ties in top-1 counts (many atoms are never the strongest) are broken by mean |c'|.
    "top1_then_mean_abs": lambda usage: usage.top1_fraction + 1e-6 * usage.mean_abs,
}


@torch.no_grad()
def atom_usage(
    rd: RetrieverDictionary,
    data: Iterable[Any] | torch.Tensor,
    *,
    model: nn.Module | None = None,
    max_batches: int | None = None,
) -> AtomUsage:
    """Atom usage statistics of ``rd`` over ``data``.

    ``data`` holds the RD's input features, or model inputs when ``model`` (which contains
    ``rd``) is given; batches may be tensors, ``(images, targets)`` or ``{"image": ...}``.
    When ``torch.distributed`` is initialised the statistics are summed over all ranks.

    Example:
        >>> import torch
        >>> from rd_core import RetrieverDictionary
        >>> usage = atom_usage(RetrieverDictionary(8, num_atoms=16), torch.randn(4, 8, 5, 5))
        >>> usage.num_positions, usage.mean_abs.shape
        (100, torch.Size([16]))
    """
    check_rd("atom_usage", rd)
    check_data("atom_usage", data)
    check_module("atom_usage", model, optional=True)
    check_int("atom_usage", "max_batches", max_batches, 1, optional=True)
    abs_sum = torch.zeros(rd.num_atoms, dtype=torch.float64)
    top1 = torch.zeros(rd.num_atoms, dtype=torch.float64)
    positions = torch.zeros((), dtype=torch.float64)
    for features in iter_rd_inputs(model, rd, data, max_batches):
        c = rd.coefficients(features).float()
        abs_sum += c.abs().sum(dim=(0, 2, 3)).double().cpu()
        top1 += torch.bincount(c.argmax(1).flatten().cpu(), minlength=rd.num_atoms).double()
        positions += c.shape[0] * c.shape[2] * c.shape[3]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        stats = torch.cat([abs_sum, top1, positions.view(1)])
        device = next(rd.parameters()).device
        if torch.distributed.get_backend() == "nccl":
            stats = stats.to(device)
        torch.distributed.all_reduce(stats)
        stats = stats.cpu()
        abs_sum, top1, positions = stats[: rd.num_atoms], stats[rd.num_atoms : -1], stats[-1]
    total = int(positions.item())
    if total == 0:
        raise ValueError("atom_usage: data is empty (no batch was seen)")
    return AtomUsage(
        mean_abs=(abs_sum / total).float(),
        top1_fraction=(top1 / total).float(),
        num_positions=total,
    )


# --------------------------------------------------------------------------- plot
def _atomic_savefig(figure: Any, path: Path, **kwargs: Any) -> None:
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, **kwargs))


def plot_coefficients(
    rd: RetrieverDictionary,
    features: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    sample: int = 0,
    dpi: int = 100,
) -> Path:
    """Save a figure of ``rd``'s coefficients for ``features`` (its input) to ``path``.

    Panels: input feature norm, strongest atom per position, its coefficient, the
    coefficient/input correlation map, and how often each atom is the strongest. With
    ``model`` (which contains ``rd``), ``features`` are model input images. Needs
    matplotlib (``pip install rd-core[plot]``).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from rd_core import RetrieverDictionary
        >>> out = Path(tempfile.mkdtemp()) / "rd.png"
        >>> rd = RetrieverDictionary(8, num_atoms=16)
        >>> plot_coefficients(rd, torch.randn(1, 8, 6, 6), out).exists()
        True
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_coefficients needs matplotlib: pip install rd-core[plot]"
        ) from error
    check_rd("plot_coefficients", rd)
    check_tensor("plot_coefficients", "features", features, (4,))
    check_int("plot_coefficients", "dpi", dpi, 1)
    check_int("plot_coefficients", "sample", sample, 0)
    if not 0 <= sample < features.shape[0]:
        raise ValueError(f"sample: must be in [0, {features.shape[0]}), got {sample}")
    path = check_path("plot_coefficients", "path", path)
    check_module("plot_coefficients", model, optional=True)
    if model is not None:
        features = rd_inputs(model, rd, features)
    maps = coefficient_maps(rd, features)
    counts = torch.bincount(maps.top_atom.flatten(), minlength=rd.num_atoms)

    figure, axes = plt.subplots(1, 5, figsize=(20, 4))
    panels = [
        (features[sample].float().norm(dim=0).cpu(), "input feature norm", "viridis"),
        (maps.top_atom[sample], "strongest atom (index)", "tab20"),
        (maps.top_coefficient[sample], "strongest coefficient c'", "magma"),
        (maps.input_correlation[sample], "corr(c', cos(x, atoms))", "coolwarm"),
    ]
    for axis, (image, title, cmap) in zip(axes, panels):
        shown = axis.imshow(image.numpy(), cmap=cmap)
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
        figure.colorbar(shown, ax=axis, fraction=0.046)
    axes[4].bar(range(rd.num_atoms), counts.numpy(), width=1.0)
    axes[4].set_title("positions where the atom is strongest")
    axes[4].set_xlabel("atom")
    figure.suptitle(
        f"RD {rd.variant}: N={rd.num_atoms}, f={rd.in_channels}, "
        f"{int((counts > 0).sum())} atoms strongest somewhere"
    )
    figure.tight_layout()
    try:
        _atomic_savefig(figure, path, dpi=dpi)
    finally:
        plt.close(figure)
    return path
