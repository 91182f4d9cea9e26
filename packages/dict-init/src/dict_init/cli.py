"""Command line: ``dict-init build ...`` and ``dict-init inspect ...``.

    dict-init build --encoder timm:resnet18 --layer layer2 --data images/ --num-atoms 512 \\
        --out atoms.safetensors --plot atoms.png
    dict-init build --encoder sentence --data coco-classes --num-atoms 32 --feature-dim 256 \\
        --out language.safetensors
    dict-init inspect atoms.safetensors --plot atoms.png

Under ``torchrun --nproc_per_node N -m dict_init.cli build ...`` (or the ``dict-init`` script)
the ranks join one process group (gloo on CPU, nccl on CUDA): each encodes its share of the
data, k-means runs over all of them, and rank 0 alone writes the artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import __version__
from .build import build_dictionary
from .dictionary import Dictionary
from .encoders import ENCODERS, coco_captions, coco_class_names, create_encoder
from .kmeans import ALGORITHMS, KMEANS_BACKENDS
from .normalize import NORMALIZERS
from .projection import PROJECTIONS


def _texts(data: str) -> list[str]:
    """``coco-classes``, a ``.txt`` file (one text per line) or a COCO captions JSON."""
    if data == "coco-classes":
        return coco_class_names()
    path = Path(data)
    if path.suffix == ".txt" and path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json" and path.is_file():
        return coco_captions(path)
    raise SystemExit(
        f"error: --data={data!r} is invalid for a text encoder: expected 'coco-classes', "
        "a .txt file with one text per line, or a COCO captions .json"
    )


def _join_torchrun(device: str) -> tuple[bool, str]:
    """Join the process group torchrun describes in the environment; ``(joined, device)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False, device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if device == "cuda":  # one GPU per local rank
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return True, device


def _build(args: argparse.Namespace) -> int:
    joined, args.device = _join_torchrun(args.device)
    try:
        return _build_on_rank(args)
    finally:
        if joined:
            dist.destroy_process_group()


def _build_on_rank(args: argparse.Namespace) -> int:
    rank = dist.get_rank() if dist.is_initialized() else 0
    options: dict[str, Any] = {"device": args.device}
    if args.encoder.startswith(("timm", "clip", "open_clip")) and args.image_size:
        options["image_size"] = args.image_size
    if args.encoder.startswith("timm"):
        options.update(layer=args.layer, pretrained=args.pretrained)
    encoder = create_encoder(args.encoder, **options)
    data: Any = _texts(args.data) if encoder.kind == "text" else args.data
    kmeans_options = {"backend": args.backend, "algorithm": args.algorithm,
                      "max_iter": args.max_iter}  # fmt: skip
    d = build_dictionary(
        encoder, data, args.num_atoms, seed=args.seed, feature_dim=args.feature_dim,
        projection=args.projection, normalization=args.normalization,
        positions_per_image=args.positions_per_image or None, batch_size=args.batch_size,
        work_dir=args.work_dir, keep_features=args.work_dir is not None,
        kmeans_options=kmeans_options, progress=not args.quiet and rank == 0,
    )  # fmt: skip
    if rank != 0:  # every rank holds the same atoms; one writes them
        return 0
    path = d.save(args.out)
    print(f"wrote {path} and {path.with_suffix('.json')}: {d}")
    if args.plot:
        from .plot import plot_atoms

        print(f"wrote {plot_atoms(d, args.plot)}")
    return 0


def atom_statistics(atoms: torch.Tensor) -> dict[str, float]:
    """Norms and cosine similarities of the atoms (how spread out the dictionary is)."""
    norms = atoms.norm(dim=1)
    unit = torch.nn.functional.normalize(atoms, dim=1)
    cos = unit @ unit.T
    off = cos[~torch.eye(len(atoms), dtype=torch.bool)]
    nearest = cos.fill_diagonal_(-1.0).amax(1) if len(atoms) > 1 else torch.zeros(1)
    return {
        "norm_mean": float(norms.mean()),
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "cosine_mean": float(off.mean()) if off.numel() else 0.0,
        "nearest_cosine_mean": float(nearest.mean()),
        "nearest_cosine_max": float(nearest.max()),
    }


def _inspect(args: argparse.Namespace) -> int:
    d = Dictionary.load(args.path)
    report = {
        "path": str(args.path),
        "num_atoms": d.num_atoms,
        "dim": d.dim,
        "extras": {k: list(v.shape) for k, v in d.extras.items()},
        "statistics": atom_statistics(d.atoms),
        "metadata": d.metadata,
    }
    print(json.dumps(report, indent=2, default=str))
    if args.plot:
        from .plot import plot_atoms

        print(f"wrote {plot_atoms(d, args.plot)}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dict-init", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    top.add_argument("--version", action="version", version=f"dict-init {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="encode a dataset and cluster it into atoms")
    build.add_argument(
        "--encoder",
        required=True,
        help=f"<kind>:<model>, kind in {sorted(ENCODERS)} (timm:resnet18, "
        "clip:openai/clip-vit-base-patch32, open_clip:ViT-B-32, sentence, gpt:gpt2-medium)",
    )
    build.add_argument("--layer", help="timm: module name (default: the middle feature stage)")
    build.add_argument("--pretrained", action="store_true", help="timm: pretrained weights")
    build.add_argument("--image-size", type=int, help="input size (default: the model's)")
    build.add_argument("--data", required=True,
                       help="images: a folder or a COCO .json; texts: coco-classes, a .txt, "
                            "or a COCO captions .json")  # fmt: skip
    build.add_argument("--num-atoms", type=int, default=512)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", required=True, help="the .safetensors file to write")
    build.add_argument("--feature-dim", type=int, help="target dimension f (default: encoder's)")
    build.add_argument("--projection", default="pca", choices=sorted(PROJECTIONS))
    build.add_argument("--normalization", choices=sorted(NORMALIZERS),
                       help="default: the encoder's (standard for text)")  # fmt: skip
    build.add_argument("--positions-per-image", type=int, default=64, help="0: every position")
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--work-dir", help="keep the feature shards here")
    build.add_argument("--backend", default="torch", choices=sorted(KMEANS_BACKENDS))
    build.add_argument("--algorithm", default="lloyd", choices=ALGORITHMS)
    build.add_argument("--max-iter", type=int, default=100)
    build.add_argument("--device", default="cpu")
    build.add_argument("--plot", help="also save a 2-D picture of the atoms here (png, svg...)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_build)
    inspect = sub.add_parser("inspect", help="print a dictionary's metadata and statistics")
    inspect.add_argument("path", help="a .safetensors dictionary")
    inspect.add_argument("--plot", help="save a 2-D picture of the atoms here")
    inspect.set_defaults(run=_inspect)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
