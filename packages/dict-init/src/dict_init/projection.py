"""Mapping atoms to the target feature dimension when the encoder's differs.

rd-core needs atoms ``[N, f]`` with ``f`` the channels of the layer the module sits on, while
CLIP gives 512-d, MiniLM 384-d and GPT-2 medium 1024-d vectors. Atoms are clustered in the
encoder's space and then mapped by a linear map ``P`` (stored with the dictionary):

* ``"pca"``: the top-``f`` principal directions of the atoms (needs ``f`` at most
  ``min(N, D)``); keeps as much of the atoms' spread as a linear map to ``f`` dimensions can.
* ``"orthogonal"``: a fixed random matrix with orthonormal rows or columns from ``seed``
  (QR of a Gaussian). Going up in dimension it is an isometry, so distances between atoms are
  kept exactly; going down it is a Johnson-Lindenstrauss style random projection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._validation import bad_value, check_choice, check_positive_int


def pca_projection(
    atoms: torch.Tensor, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [D, dim], mean [D])`` with P the top principal directions of ``atoms``."""
    n, d = atoms.shape
    if dim > min(n, d):
        raise bad_value(
            "feature_dim", dim, f"at most min(num_atoms, encoder dim) = {min(n, d)} for "
            "projection='pca'; use projection='orthogonal' to go up in dimension"
        )  # fmt: skip
    mean = atoms.double().mean(0)
    _, _, v = torch.linalg.svd(atoms.double() - mean, full_matrices=False)
    basis = v[:dim].T  # [D, dim]
    # Fix the sign of each direction so the result does not depend on the SVD routine.
    signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(dim)])
    return (basis * signs).float(), mean.float()


def orthogonal_projection(
    atoms: torch.Tensor, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P [D, dim], zeros [D])`` with orthonormal columns (dim <= D) or rows (dim > D)."""
    d = atoms.shape[1]
    g = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(max(d, dim), min(d, dim), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # unique QR: the map depends only on the seed
    matrix = q if dim <= d else q.T  # [D, dim]
    return matrix.float(), torch.zeros(d)


PROJECTIONS: dict[str, Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "pca": pca_projection,
    "orthogonal": orthogonal_projection,
}


def project_atoms(
    atoms: torch.Tensor, dim: int, method: str = "pca", seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Map ``atoms [N, D]`` to ``[N, dim]``; returns the atoms and the map's tensors.

    Example:
        >>> import torch
        >>> atoms, maps = project_atoms(torch.randn(16, 8), 4, "pca")
        >>> atoms.shape, maps["projection.matrix"].shape
        (torch.Size([16, 4]), torch.Size([8, 4]))
    """
    check_positive_int("feature_dim", dim)
    check_choice("projection", method, PROJECTIONS)
    matrix, mean = PROJECTIONS[method](atoms, dim, seed)
    return (atoms - mean) @ matrix, {"projection.matrix": matrix, "projection.mean": mean}
