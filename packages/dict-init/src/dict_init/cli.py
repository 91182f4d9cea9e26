"""Command line: ``dict-init build ...`` and ``dict-init inspect ...``.

    dict-init build --encoder timm:resnet18 --at layer2 --data images/ --num-atoms 512 \\
        --out atoms.safetensors --plot atoms.png
    dict-init build --encoder sentence --data coco-classes --num-atoms 32 --feature-dim 256 \\
        --out language.safetensors
    dict-init inspect atoms.safetensors --plot atoms.png

Under ``torchrun --nproc_per_node N -m dict_init.cli build ...`` (or the ``dict-init`` script)
the ranks join one process group (gloo on CPU, nccl on CUDA): each encodes its share of the
data, k-means runs over all of them, and rank 0 alone writes the artifact.

User errors (a missing file, an output folder that cannot be written, a bad flag or value)
print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
import warnings
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
    raise ValueError(
        f"--data={data!r} is invalid for a text encoder: expected 'coco-classes', "
        "a .txt file with one text per line, or a COCO captions .json"
    )


IMAGE_KINDS = ("timm", "clip", "open_clip")


def _check_writable(flag: str, value: str, folder: Path) -> None:
    """Fail before any work when ``folder`` (where ``flag`` writes) cannot take a new file."""
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(0, "it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{flag}={value!r}: cannot write into {folder} ({reason})") from None


def _check_build_args(args: argparse.Namespace) -> None:
    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"--out={args.out!r} is invalid: expected a file ending in .safetensors")
    kind = args.encoder.partition(":")[0]
    if kind in IMAGE_KINDS and not Path(args.data).exists():
        raise ValueError(
            f"--data={args.data!r}: no such folder or file (expected an image folder or a "
            "COCO .json)"
        )
    _check_writable("--out", args.out, Path(args.out).parent)
    if args.plot:
        _check_writable("--plot", args.plot, Path(args.plot).parent)
    if args.work_dir:
        _check_writable("--work-dir", args.work_dir, Path(args.work_dir))


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
    _check_build_args(args)
    joined, args.device = _join_torchrun(args.device)
    try:
        return _build_on_rank(args)
    finally:
        if joined:
            dist.destroy_process_group()


def _build_on_rank(args: argparse.Namespace) -> int:
    rank = dist.get_rank() if dist.is_initialized() else 0
    options: dict[str, Any] = {"device": args.device}
    if args.encoder.startswith(IMAGE_KINDS) and args.image_size is not None:
        options["image_size"] = args.image_size
    if args.encoder.startswith("timm"):
        options.update(at=args.at, pretrained=args.pretrained)
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
        skip_bad_images=args.skip_bad_images,
    )  # fmt: skip
    if rank != 0:  # every rank holds the same atoms; one writes them
        return 0
    path = d.save(args.out)
    print(f"wrote {path} and {path.with_suffix('.json')}: {d}")
    if d.metadata.get("num_skipped_images"):
        print(
            f"skipped {d.metadata['num_skipped_images']} unreadable image(s), first: "
            f"{d.metadata['skipped_images'][0]}"
        )
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
    if args.plot:
        _check_writable("--plot", args.plot, Path(args.plot).parent)
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


def _count(minimum: int) -> Any:
    """An argparse type: an int >= ``minimum`` (argparse names the flag and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is invalid: expected an int >= {minimum}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and a suggestion for a misspelt flag.

    Abbreviated flags are refused: with them a typo such as ``--num-atom`` silently meant
    ``--num-atoms`` and a new flag could change what an old command line means.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        if message.startswith("unrecognized arguments:"):
            flags = sorted({o for a in _all_actions(self) for o in a.option_strings})
            hints = []
            for token in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(token.split("=")[0], flags, n=1)
                if token.startswith("-") and close:
                    hints.append(f"{token} -> {close[0]}?")
            if hints:
                message += f" (did you mean: {', '.join(hints)})"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _all_actions(top: argparse.ArgumentParser) -> list[argparse.Action]:
    actions = list(top._actions)
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += _all_actions(sub)
    return actions


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="dict-init", description=__doc__,
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
    build.add_argument("--at", help="timm: module name (default: the middle feature stage)")
    build.add_argument("--layer", help="deprecated name of --at")
    build.add_argument("--pretrained", action="store_true", help="timm: pretrained weights")
    build.add_argument("--image-size", type=_count(1), help="input size (default: the model's)")
    build.add_argument("--data", required=True,
                       help="images: a folder or a COCO .json; texts: coco-classes, a .txt, "
                            "or a COCO captions .json")  # fmt: skip
    build.add_argument("--skip-bad-images", action="store_true",
                       help="leave out unreadable image files (says how many)")  # fmt: skip
    build.add_argument("--num-atoms", type=_count(1), default=512)
    build.add_argument("--seed", type=_count(0), default=0)
    build.add_argument("--out", required=True, help="the .safetensors file to write")
    build.add_argument("--feature-dim", type=_count(1),
                       help="target dimension f (default: encoder's)")  # fmt: skip
    build.add_argument("--projection", default="pca", choices=sorted(PROJECTIONS))
    build.add_argument("--normalization", choices=sorted(NORMALIZERS),
                       help="default: the encoder's (standard for text)")  # fmt: skip
    build.add_argument("--positions-per-image", type=_count(0), default=64,
                       help="0: every position")  # fmt: skip
    build.add_argument("--batch-size", type=_count(1), default=32)
    build.add_argument("--work-dir", help="keep the feature shards here")
    build.add_argument("--backend", default="torch", choices=sorted(KMEANS_BACKENDS))
    build.add_argument("--algorithm", default="lloyd", choices=ALGORITHMS)
    build.add_argument("--max-iter", type=_count(1), default=100)
    build.add_argument("--device", default="cpu")
    build.add_argument("--plot", help="also save a 2-D picture of the atoms here (png, svg...)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_build)
    inspect = sub.add_parser("inspect", help="print a dictionary's metadata and statistics")
    inspect.add_argument("path", help="a .safetensors dictionary")
    inspect.add_argument("--plot", help="save a 2-D picture of the atoms here")
    inspect.set_defaults(run=_inspect)
    return top


def _flags_before_command(top: argparse.ArgumentParser, argv: list[str]) -> None:
    """A flag before the command: argparse would only say "arguments are required: command",
    never naming the flag; name it, the commands, and the closest flag of any command."""
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    own = {o for a in top._actions for o in a.option_strings}
    unknown = []
    for token in argv:
        if token in sub.choices:
            break
        if token.startswith("-") and token.split("=")[0] not in own:
            unknown.append(token)
    if not unknown:
        return
    flags = sorted({o for a in _all_actions(top) for o in a.option_strings})
    hints = [
        f"{token} -> {close[0]}"
        for token in unknown
        if (close := difflib.get_close_matches(token.split("=")[0], flags, n=1))
    ]
    hint = f" (did you mean: {', '.join(hints)}?)" if hints else ""
    top.exit(
        2,
        f"{top.prog}: error: unrecognized arguments: {' '.join(unknown)}{hint}; expected a "
        f"command first: {', '.join(sub.choices)} (see {top.prog} --help)\n",
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    top = parser()
    _flags_before_command(top, list(sys.argv[1:] if argv is None else argv))
    args = top.parse_args(argv)
    if args.command == "build" and args.layer is not None:
        if args.at is not None:
            build = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
            build.choices["build"].error("pass --at only (--layer is its deprecated name)")
        warnings.warn("dict-init build: '--layer' is deprecated, use '--at'", FutureWarning, 2)
        args.at = args.layer
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user error)."""
    try:
        args = _parse(argv)
    except SystemExit as stop:  # --help, --version, and argparse's one-line errors
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"dict-init {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dict-init {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
