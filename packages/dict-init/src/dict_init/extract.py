"""Stream a dataset through an encoder and write the features to disk in shards.

Images are read one by one, encoded in batches, and (optionally) a random subset of positions
is kept per image; the subset depends only on ``seed`` and the image's index, so a run split
over torch.distributed ranks keeps exactly the rows one process would. Rows go to
:class:`~dict_init.shards.ShardWriter` as they come, so memory holds one batch and one shard.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from itertools import islice
from typing import Any

import torch
from tqdm.auto import tqdm

from . import data as data_sources
from ._distributed import barrier, broadcast_object, rank_and_world
from ._validation import bad_value, check_finite, check_path, check_positive_int
from .shards import FeatureShards, ShardWriter

# Large odd multiplier so (seed, index) pairs map to distinct generator seeds.
_SEED_STRIDE = 1_000_003
# skipped image paths kept in the metadata (the count is always complete)
_LISTED_SKIPS = 20


def sample_positions(num_positions: int, keep: int | None, seed: int, index: int) -> torch.Tensor:
    """Which of an item's ``num_positions`` positions to keep (all, or ``keep`` at random).

    The choice depends only on ``seed`` and the item ``index``.

    Example:
        >>> sample_positions(5, None, 0, 3).tolist()
        [0, 1, 2, 3, 4]
        >>> bool((sample_positions(64, 8, 0, 3) == sample_positions(64, 8, 0, 3)).all())
        True
    """
    if keep is None or keep >= num_positions:
        return torch.arange(num_positions)
    g = torch.Generator().manual_seed(seed * _SEED_STRIDE + index)
    return torch.randperm(num_positions, generator=g)[:keep].sort().values


def _batches(items, batch_size):
    items = iter(items)
    while batch := list(islice(items, batch_size)):
        yield batch


def extract_features(
    encoder: Any,
    data: Any,
    out_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 32,
    positions_per_image: int | None = None,
    seed: int = 0,
    shard_size: int = 65536,
    progress: bool = True,
    skip_bad_images: bool = False,
    group: Any = None,
) -> FeatureShards:
    """Encode ``data`` and write its vectors as shards under ``out_dir``.

    Args:
        encoder: an image encoder (``VisionEncoder``, ``CLIPImageEncoder``) or a text encoder
            (``SentenceEncoder``, ``GPTTextEncoder``).
        data: for images, a folder, a COCO JSON path, a ``[N, 3, H, W]`` tensor, or any
            sequence / iterable of image tensors (``[3, H, W]``, float in [0, 1] or uint8),
            arrays, PIL images or ``(image, target)`` pairs; for texts, strings.
        out_dir: where the shards go (default: a new temporary folder).
        batch_size: items per forward pass.
        positions_per_image: keep this many random positions per image (``None``: all).
        seed: seeds the position sampling.
        shard_size: rows per shard file.
        progress: show a tqdm bar (rank 0).
        skip_bad_images: leave out image files that are missing or cannot be decoded (a
            ``UserWarning`` says how many; ``metadata["num_skipped_images"]`` and
            ``metadata["skipped_images"]``, the first 20 paths, record them). By default such
            a file raises :class:`~dict_init.data.BadImageError` naming it.
        group: torch.distributed group; each rank encodes its part of the data.

    Returns:
        :class:`~dict_init.shards.FeatureShards` over all ranks' rows (rank order).

    Example:
        >>> import torch
        >>> from dict_init.encoders import VisionEncoder
        >>> enc = VisionEncoder("resnet18", at="layer3", image_size=32)
        >>> feats = extract_features(enc, torch.rand(4, 3, 32, 32), progress=False)
        >>> feats.num_vectors, feats.dim  # 2 x 2 positions per image, 256 channels
        (16, 256)
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("shard_size", shard_size)
    if positions_per_image is not None:
        check_positive_int("positions_per_image", positions_per_image)
    kind = getattr(encoder, "kind", None)
    if kind not in ("image", "text"):
        raise bad_value("encoder", type(encoder).__name__, "an image or text encoder")
    rank, world = rank_and_world(group)
    if out_dir is None:
        out_dir = broadcast_object(tempfile.mkdtemp(prefix="dict-init-features-"), group)
    out_dir = check_path("out_dir", out_dir)
    writer = ShardWriter(out_dir, shard_size=shard_size, prefix=f"rank{rank}")
    size = encoder.image_size if kind == "image" else None
    total = data_sources.num_items(data)
    bar = tqdm(
        total=None if total is None else (total + world - 1) // world,
        desc=f"encoding ({kind}s)",
        disable=not progress or rank != 0,
        unit=kind,
    )
    seen = 0
    skipped: list[str] | None = [] if skip_bad_images else None
    items = data_sources.iter_items(data, size, rank, world, skipped)
    for batch in _batches(items, batch_size):
        indices = [index for index, _ in batch]
        if kind == "image":
            vectors = encoder.encode(torch.stack([item for _, item in batch]))
        else:
            if not all(isinstance(item, str) for _, item in batch):
                raise bad_value("data", "non-text items", "strings for a text encoder")
            vectors = encoder.encode([item for _, item in batch]).unsqueeze(1)
        check_finite(f"features of items {indices[0]}..{indices[-1]}", vectors)
        for index, item_vectors in zip(indices, vectors):
            keep = sample_positions(item_vectors.shape[0], positions_per_image, seed, index)
            writer.add(item_vectors[keep], torch.full((keep.numel(),), index))
        seen += len(batch)
        bar.update(len(batch))
    bar.close()
    part = writer.close()
    counts, skips = [seen], [skipped or []]
    if world > 1:
        parts = [None] * world
        torch.distributed.all_gather_object(parts, part, group=group)
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, (seen, skipped or []), group=group)
        counts, skips = [g[0] for g in gathered], [g[1] for g in gathered]
    else:
        parts = [part]
    skipped_all = [path for rank_skips in skips for path in rank_skips]
    if skipped_all and rank == 0:
        warnings.warn(
            f"extract_features: skipped {len(skipped_all)} unreadable image(s) of "
            f"{len(skipped_all) + sum(counts)}, first: {skipped_all[0]}",
            stacklevel=2,
        )
    if sum(counts) == 0:
        valid = "at least one image or text"
        if skipped_all:
            valid = f"at least one readable image (all {len(skipped_all)} were skipped)"
        raise bad_value("data", data_sources.describe(data), valid)
    metadata = {
        "encoder": encoder.describe(),
        "data": data_sources.describe(data),
        "items": sum(counts),
        "positions_per_image": positions_per_image,
        "seed": seed,
        "world_size": world,
    }
    if skip_bad_images:
        metadata["num_skipped_images"] = len(skipped_all)
        metadata["skipped_images"] = skipped_all[:_LISTED_SKIPS]
    if rank == 0:
        FeatureShards.from_parts(out_dir, parts, metadata)
    barrier(group)
    return FeatureShards(out_dir)
