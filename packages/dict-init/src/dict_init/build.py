"""``build_dictionary``: encode a dataset, normalise, cluster with k-means, map, package.

This is YOLO-RD's initialisation (section 3.2, Algorithm 1 lines 1-4): traverse the dataset
with an encoder, run k-means on the vectors, and keep the N centres as dictionary atoms.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from ._distributed import barrier, broadcast_object, rank_and_world
from ._validation import bad_value, check_positive_int
from .dictionary import Dictionary
from .extract import extract_features
from .kmeans import kmeans
from .normalize import create_normalizer
from .projection import project_atoms
from .sources import TransformedSource


def build_dictionary(
    encoder: Any,
    data: Any,
    num_atoms: int = 512,
    seed: int = 0,
    *,
    feature_dim: int | None = None,
    projection: str = "pca",
    normalization: str | None = None,
    positions_per_image: int | None = 64,
    batch_size: int = 32,
    work_dir: str | os.PathLike | None = None,
    keep_features: bool = False,
    kmeans_options: dict[str, Any] | None = None,
    progress: bool = True,
    skip_bad_images: bool = False,
    group: Any = None,
) -> Dictionary:
    """Build a :class:`~dict_init.dictionary.Dictionary` of ``num_atoms`` atoms from ``data``.

    Args:
        encoder: any encoder from :mod:`dict_init.encoders`.
        data: images (folder, COCO JSON, tensors...) or texts, see :func:`extract_features`.
        num_atoms: N, the number of atoms (the paper uses 512).
        seed: seeds position sampling, k-means and any random projection.
        feature_dim: the target dimension f; when it differs from the encoder's, atoms are
            mapped with ``projection`` (``"pca"`` or ``"orthogonal"``, see
            :mod:`dict_init.projection`). ``None`` keeps the encoder's dimension.
        normalization: ``"none"``, ``"standard"`` (per dimension) or ``"tanh"``; default is
            the encoder's (``"standard"`` for language encoders as in the paper).
        positions_per_image: random positions kept per image; ``None`` keeps every position as
            the paper does (then k-means sees every pixel of every image: slower).
        batch_size: images per forward pass.
        work_dir: where feature shards go (default: a temporary folder, removed afterwards
            unless ``keep_features``).
        kmeans_options: extra keyword arguments for :func:`~dict_init.kmeans.kmeans`
            (``backend="faiss"``, ``algorithm="minibatch"``, ``max_iter``...).
        progress: tqdm bars for encoding and clustering.
        skip_bad_images: leave out image files that cannot be read instead of raising;
            ``metadata["num_skipped_images"]`` says how many (see :func:`extract_features`).
        group: torch.distributed group: extraction and k-means split over its ranks.

    Example:
        >>> import torch
        >>> from dict_init.encoders import VisionEncoder
        >>> images = torch.rand(8, 3, 32, 32)
        >>> d = build_dictionary(VisionEncoder("resnet18", at="layer2", image_size=32), images,
        ...                      num_atoms=16, seed=0, progress=False)
        >>> d.atoms.shape, d.metadata["num_features"]
        (torch.Size([16, 128]), 128)
    """
    check_positive_int("num_atoms", num_atoms)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad_value("seed", seed, "an int >= 0")
    normalization = normalization or getattr(encoder, "default_normalization", "none")
    normalizer = create_normalizer(normalization)
    rank, world = rank_and_world(group)
    temporary = work_dir is None
    if temporary:
        work_dir = broadcast_object(tempfile.mkdtemp(prefix="dict-init-"), group)
    try:
        features = extract_features(
            encoder, data, Path(work_dir) / "features", batch_size=batch_size,
            positions_per_image=positions_per_image, seed=seed, progress=progress,
            skip_bad_images=skip_bad_images, group=group,
        )  # fmt: skip
        if num_atoms > features.num_vectors:
            raise bad_value(
                "num_atoms",
                num_atoms,
                f"at most the {features.num_vectors} feature vectors extracted from data "
                "(use more images or positions_per_image)",
            )
        local = features.part(rank) if world > 1 else features
        normalizer.fit(local, group)
        source = TransformedSource(local, normalizer)
        options = {"progress": progress, **(kmeans_options or {})}
        result = kmeans(source, num_atoms, seed=seed, group=group, **options)
        atoms, extras = result.centers, dict(normalizer.state())
        encoder_dim = atoms.shape[1]
        mapped = None
        if feature_dim is not None and feature_dim != encoder_dim:
            atoms, maps = project_atoms(
                atoms, feature_dim, projection, seed, features=source, group=group
            )
            extras.update(maps)
            mapped = projection
    finally:
        barrier(group)
        if temporary and not keep_features and rank == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
    metadata = {
        "encoder": encoder.describe(),
        "layer": encoder.describe().get("layer"),
        "data": features.metadata.get("data"),
        "num_items": features.metadata.get("items"),
        **{
            key: features.metadata[key]
            for key in ("num_skipped_images", "skipped_images")
            if key in features.metadata
        },
        "num_vectors": features.num_vectors,
        "positions_per_image": positions_per_image,
        "num_features": atoms.shape[1],
        "encoder_dim": encoder_dim,
        "projection": mapped,
        "normalization": normalization,
        "seed": seed,
        "kmeans": {
            **result.info,
            "inertia": result.inertia,
            "n_iter": result.n_iter,
            "converged": result.converged,
            "empty_clusters": int((result.counts == 0).sum()),
        },
        "features_dir": str(features.root) if keep_features or not temporary else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dict_init_version": __version__,
    }
    return Dictionary(atoms, metadata, extras)
