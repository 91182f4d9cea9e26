"""Mapping atoms to the target feature dimension when the encoder's differs.

rd-core needs atoms ``[N, f]`` with ``f`` the channels of the layer the module sits on, while
CLIP gives 512-d, MiniLM 384-d and GPT-2 medium 1024-d vectors. Atoms are clustered in the
encoder's space and then mapped by a fixed linear map ``a -> (a - mean) @ P`` (``P`` ``[D, f]``
and ``mean`` are stored with the dictionary as ``projection.matrix`` / ``projection.mean``):

* ``"pca"``: the top-``f`` principal directions of the *features* (covariance accumulated in
  one streamed pass, so it works for any number of atoms and for data larger than memory);
  keeps as much of the data's spread as a linear map to ``f`` dimensions can. Needs ``f <= D``.
* ``"orthogonal"``: a fixed random matrix with orthonormal columns (``f <= D``) or rows
  (``f > D``) from ``seed`` (QR of a Gaussian). Going up in dimension it is an isometry, so
  distances between atoms are kept exactly; going down it is a random projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._distributed import all_reduce_
from ._validation import bad_value, check_choice, check_positive_int
from .sources import VectorSource, as_source


def _fix_signs(basis: torch.Tensor) -> torch.Tensor:
    """Make each column's largest entry positive: the map then depends only on the data."""
    signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(basis.shape[1])])
    return basis * signs


def pca_projection(
    source: VectorSource, dim: int, seed: int = 0, group: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [D, dim], mean [D])``: top principal directions of the rows of ``source``."""
    d = source.dim
    if dim > d:
        raise bad_value(
            "feature_dim", dim, f"at most the encoder dimension {d} for projection='pca'; "
            "use projection='orthogonal' to go up in dimension"
        )  # fmt: skip
    total = torch.zeros(d, dtype=torch.float64)
    outer = torch.zeros(d, d, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for chunk in source.iter_chunks(65536):
        chunk = chunk.double().cpu()
        total += chunk.sum(0)
        outer += chunk.T @ chunk
        count += chunk.shape[0]
    for t in (total, outer, count):
        all_reduce_(t, group)
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    basis = vectors[:, -dim:].flip(1)
    return _fix_signs(basis).float(), mean.float()


def orthogonal_projection(
    source: VectorSource, dim: int, seed: int = 0, group: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [D, dim], zeros [D])`` with orthonormal columns (dim <= D) or rows (dim > D)."""
    d = source.dim
    g = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(max(d, dim), min(d, dim), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # unique QR: the map depends only on the seed
    matrix = q if dim <= d else q.T  # [D, dim]
    return matrix.float(), torch.zeros(d)


PROJECTIONS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "pca": pca_projection,
    "orthogonal": orthogonal_projection,
}


def project_atoms(
    atoms: torch.Tensor,
    dim: int,
    method: str = "pca",
    seed: int = 0,
    *,
    features: Any = None,
    group: Any = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Map ``atoms [N, D]`` to ``[N, dim]``; returns the atoms and the map's tensors.

    Args:
        atoms: the atoms in the encoder's space.
        dim: the target dimension f.
        method: ``"pca"`` or ``"orthogonal"``.
        seed: seeds the orthogonal map.
        features: rows (tensor or source) the PCA is fitted on; default: the atoms.
        group: torch.distributed group when ``features`` is one rank's part.

    Example:
        >>> import torch
        >>> atoms, maps = project_atoms(torch.randn(16, 8), 4, "pca")
        >>> atoms.shape, maps["projection.matrix"].shape
        (torch.Size([16, 4]), torch.Size([8, 4]))
    """
    check_positive_int("feature_dim", dim)
    check_choice("projection", method, PROJECTIONS)
    source = as_source(atoms if features is None else features, name="features")
    if source.dim != atoms.shape[1]:
        raise bad_value("features.dim", source.dim, f"the atoms' dimension {atoms.shape[1]}")
    matrix, mean = PROJECTIONS[method](source, dim, seed, group)
    return (atoms - mean) @ matrix, {"projection.matrix": matrix, "projection.mean": mean}
