"""A picture of the atoms: a 2-D PCA projection, optionally over a sample of the features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write


def project_2d(atoms: torch.Tensor, features: torch.Tensor | None = None) -> tuple[Any, Any]:
    """2-D PCA coordinates of ``atoms`` (and ``features`` in the same axes).

    The axes are the atoms' two principal directions, so the picture shows how the atoms
    spread. Example:
        >>> xy, _ = project_2d(torch.randn(10, 5))
        >>> xy.shape
        torch.Size([10, 2])
    """
    atoms = atoms.float()
    mean = atoms.mean(0)
    _, _, v = torch.linalg.svd(atoms - mean, full_matrices=False)
    matrix = v[: min(2, *atoms.shape)].T
    xy = (atoms - mean) @ matrix
    fxy = None if features is None else (features.float() - mean) @ matrix
    return xy, fxy


def plot_atoms(
    atoms: Any,
    path: str | os.PathLike,
    *,
    features: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Save a scatter plot of the atoms (2-D PCA) to ``path`` (png, pdf, svg...), atomically.

    Args:
        atoms: a :class:`~dict_init.dictionary.Dictionary` or a tensor ``[N, f]``.
        path: the image file to write.
        features: optional feature rows drawn in grey behind the atoms.
        title: the figure title (default: the dictionary's description).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'dict-init[plot]'") from error
    tensor = atoms.atoms if hasattr(atoms, "atoms") else torch.as_tensor(atoms)
    xy, fxy = project_2d(tensor, features)
    if xy.shape[1] == 1:
        xy = torch.cat([xy, torch.zeros_like(xy)], 1)
        fxy = None if fxy is None else torch.cat([fxy, torch.zeros_like(fxy)], 1)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    if fxy is not None:
        ax.scatter(fxy[:, 0], fxy[:, 1], s=2, c="0.75", label="features", rasterized=True)
    ax.scatter(xy[:, 0], xy[:, 1], s=12, c="tab:red", label=f"atoms ({len(xy)})")
    ax.set_xlabel("PC 1 of the atoms")
    ax.set_ylabel("PC 2 of the atoms")
    ax.set_title(title or repr(atoms) if hasattr(atoms, "atoms") else title or "atoms")
    ax.legend(loc="best")
    fig.tight_layout()
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt))
    finally:
        plt.close(fig)
    return path
