"""``timm-knowledge`` command line: ``timm-knowledge train --model kw_resnet18 --data-dir ...``.

``timm-knowledge compress OUT/model --num-atoms 256 --data-dir ...`` distils a trained ``rd_*``
model's Retriever-Dictionary into fewer atoms (:mod:`timm_knowledge.compress`).

Every :class:`timm_knowledge.train.TrainConfig` field is one flag (``--temp-epochs 20``,
``--model-ema``, ``--amp``, ``--model-kwargs '{"budget": 0.5}'``). ``--resume RUN`` (the run
folder or its ``last.pth``) needs no other flag: the run's saved options are used, and flags
given with it override them. Ctrl-C stops with one line and exit status 130 (resume continues
from the last finished epoch). Run under ``torchrun`` for DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence

from .train import TrainConfig, train

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown flag, a bad number) as one line and exit status 2. No
    abbreviations: ``--epoch 1`` is an error, not ``--epochs 1``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _image_size(text: str) -> int | tuple[int, int]:
    """``224`` or ``224,192`` (H, W)."""
    parts = [int(p) for p in text.split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not SIZE or H,W")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


# flags whose value is not a plain int / float / str
_SPECIAL = {
    "model_kwargs": dict(type=json.loads, help="JSON build arguments"),
    "image_size": dict(type=_image_size, help="SIZE or H,W (default: 224)"),
    "input_size": dict(type=int, help="deprecated: use --image-size"),
    "resume": dict(
        metavar="RUN", help="continue the run in RUN (its folder or last.pth), its options saved"
    ),
}
_REQUIRED = [
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="timm-knowledge")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("train", help="train a classifier with timm's recipe pieces")
    hints = typing.get_type_hints(TrainConfig)
    # only the flags given are in the result: the defaults are TrainConfig's or, with --resume,
    # the run's saved options (_config)
    unset = argparse.SUPPRESS
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if hint is bool:
            sub.add_argument(
                flag, action="store_true", default=unset, help=f"(default: {f.default})"
            )
        elif f.name in _SPECIAL:
            sub.add_argument(flag, default=unset, **_SPECIAL[f.name])
        else:
            kind = {int: int, float: float}.get(hint, str)
            shown = "required unless --resume" if f.name in _REQUIRED else f"default: {f.default}"
            sub.add_argument(flag, type=kind, default=unset, help=f"({shown})")
    from .compress import add_arguments as compress_arguments

    compress_arguments(
        commands.add_parser(
            "compress", help="distil an rd_* model's dictionary into fewer atoms (YOLO-RD 3.3)"
        )
    )
    return parser


def _config(parser: argparse.ArgumentParser, given: dict) -> TrainConfig:
    """The run's options: the flags given, over the resumed run's saved options."""
    if "resume" in given:
        return TrainConfig.from_checkpoint(given.pop("resume"), **given)
    missing = ["--" + name.replace("_", "-") for name in _REQUIRED if name not in given]
    if missing:
        parser.error(
            f"train: the following arguments are required: {', '.join(missing)} "
            "(or --resume RUN to continue a run)"
        )
    return TrainConfig(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a bad option prints one line on stderr and returns 2.

    Example:
        >>> main(["train", "--model", "resnet10t", "--data-dir", "/no/such", "--output", "x"])
        2
    """
    parser = _parser()
    try:
        args = vars(parser.parse_args(argv))
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    command = args.pop("command")
    if command == "compress":
        from .compress import run as compress

        return compress(args)
    try:
        cfg = _config(parser, args)
        cfg.check()
    except SystemExit as e:  # a required flag missing (already printed)
        return int(e.code or 0)
    except (ValueError, TypeError) as e:
        print(f"timm-knowledge {command}: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg)
    except ValueError as e:  # data or checkpoint that cannot be used, named
        print(f"timm-knowledge {command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: as yolo-heads, one line; --resume continues the run
        print(f"timm-knowledge {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
