"""``hub-knowledge``: convert the authors' checkpoints, publish folders, seed offline caches.

    hub-knowledge convert-kernelwarehouse CKPT --arch kw_resnet18 --config cfg.json --out DIR
    hub-knowledge convert-yolo-rd CKPT --prefix 4.dconv. --out rd.safetensors
    hub-knowledge convert-yolo CKPT --model yolov9_t --out DIR
    hub-knowledge push DIR org/name [--token T] [--endpoint URL]
    hub-knowledge add-to-cache DIR org/name [--cache-dir D]

Commands are registered in :data:`COMMANDS` (name -> (add arguments, run)). Converting is the
method packages' business (``kernelwarehouse.official``, ``rd_core.official``,
``yolo_heads.publish``); the commands only read files, call them and write what they return.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str):
    def register(pair):
        COMMANDS[name] = (help, *pair)
        return pair

    return register


def _config(text: str) -> dict:
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config={text!r} is neither a JSON file nor JSON text ({e})") from None


def _kw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="the authors' .pth (read weights-only) or .safetensors")
    p.add_argument("--arch", required=True, help="kw_resnet18, kw_resnet50, ...")
    p.add_argument("--config", required=True, help="the authors' settings: JSON file or text")
    p.add_argument("--prefix", default="", help="keep keys with this prefix, removed")
    p.add_argument("--temperature", type=float, default=0.0, help="attention tau (default 0)")
    p.add_argument("--out", required=True, help="folder to write (model.safetensors, config, card)")
    p.add_argument("--model-name", help="repo id shown in the model card")


def _kw_run(args: argparse.Namespace) -> None:
    from .converters import convert_kernelwarehouse
    from .save import save_for_hub

    model, report = convert_kernelwarehouse(
        args.checkpoint,
        args.arch,
        _config(args.config),
        prefix=args.prefix,
        temperature=args.temperature,
    )
    save_for_hub(
        model,
        args.out,
        model_name=args.model_name,
        lineage={"converted_from": report.source, "authors_code": "OSVAI/KernelWarehouse"},
    )
    print(
        f"{report.architecture}: {report.num_params:,} parameters, outputs within "
        f"{report.max_abs_diff:.2g} of the authors' layout -> {args.out}"
    )


command("convert-kernelwarehouse", "KernelWarehouse authors' checkpoint -> Hub folder")(
    (_kw_args, _kw_run)
)


def _rd_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint holding the authors' RD module (DConv)")
    p.add_argument("--prefix", default=None, help="the RD module's key prefix (default: find it)")
    p.add_argument("--residual", type=float, default=0.8, help="their alpha (default 0.8)")
    p.add_argument("--out", required=True, help="output .safetensors (rd-core authors variant)")


def _rd_run(args: argparse.Namespace) -> None:
    from rd_core import official  # the method package knows its authors' layout

    from .checkpoint import save_weights

    rd = official.load(args.checkpoint, prefix=args.prefix, residual=args.residual)
    save_weights(
        rd,
        args.out,
        architecture="rd_core.RetrieverDictionary",
        metadata={key: json.dumps(value) for key, value in rd.config.items()},
    )
    print(f"RD f={rd.in_channels} N={rd.num_atoms} k={rd.kernel_size} -> {args.out}")


command("convert-yolo-rd", "YOLO-RD authors' RD module -> rd-core weights")((_rd_args, _rd_run))


def _yolo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="the authors' .pt / Lightning .ckpt (read weights-only)")
    p.add_argument(
        "--model", required=True, help="yolov9_t, yolov9_s, yolov9_m, yolov9_c, yolo_rd_9c, yolov7"
    )
    p.add_argument("--out", required=True, help="folder to write (model.safetensors, config, card)")
    p.add_argument("--model-name", help="repo id shown in the model card")
    p.add_argument("--raw", action="store_true", help="a .ckpt's raw weights instead of the EMA")


def _yolo_run(args: argparse.Namespace) -> None:
    from .converters.yolo import convert_yolo

    _, report = convert_yolo(
        args.checkpoint, args.model, args.out, repo_id=args.model_name, ema=not args.raw
    )
    print(
        f"{report.architecture}: {report.num_params:,} parameters, rebuilt outputs within "
        f"{report.max_abs_diff:.2g} of the conversion -> {args.out}"
    )


command("convert-yolo", "YOLOv9 / YOLO-RD / YOLOv7 authors' checkpoint -> Hub folder with card")(
    (_yolo_args, _yolo_run)
)


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--token", default=None)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", default="Add model")


def _push_run(args: argparse.Namespace) -> None:
    from .push import push_folder

    info = push_folder(
        args.folder,
        args.repo_id,
        token=args.token,
        endpoint=args.endpoint,
        private=args.private or None,
        commit_message=args.message,
    )
    print(info.commit_url)


command("push", "commit a saved folder to a Hub repository")((_push_args, _push_run))


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--revision", default="main")


def _cache_run(args: argparse.Namespace) -> None:
    from .cache import add_to_cache

    print(add_to_cache(args.folder, args.repo_id, cache_dir=args.cache_dir, revision=args.revision))


command("add-to-cache", "lay a folder into the Hugging Face cache (offline use)")(
    (_cache_args, _cache_run)
)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown flag, a missing argument) as one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hub-knowledge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)  # subparsers are _Parser too
    for name, (help, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help))
    return parser


# What a user can get wrong (a missing or unreadable file, a read-only output folder, a bad
# value): one line on stderr and exit status 2, never a traceback. CheckpointError is a
# ValueError; PermissionError and FileNotFoundError are OSErrors.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a user error, with one line on stderr).

    Example:
        >>> main(["add-to-cache", "/no/such/folder", "org/name"])
        2
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    try:
        COMMANDS[args.command][2](args)
    except USER_ERRORS as e:
        message = " ".join(str(e).split()) or e.__class__.__name__
        print(f"hub-knowledge {args.command}: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
