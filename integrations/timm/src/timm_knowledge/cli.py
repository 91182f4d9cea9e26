"""``timm-knowledge`` command line: ``timm-knowledge train --model kw_resnet18 --data-dir ...``.

Every :class:`timm_knowledge.train.TrainConfig` field is one flag (``--temp-epochs 20``,
``--model-ema``, ``--amp``, ``--model-kwargs '{"budget": 0.5}'``). Run under ``torchrun`` for
DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence

from .train import TrainConfig, train

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timm-knowledge")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("train", help="train a classifier with timm's recipe pieces")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if hint is bool:
            sub.add_argument(flag, action="store_true", help=f"(default: {f.default})")
        elif f.name == "model_kwargs":
            sub.add_argument(flag, type=json.loads, default={}, help="JSON build arguments")
        else:
            kind = {int: int, float: float}.get(hint, str)
            default = None if required else f.default
            sub.add_argument(
                flag, type=kind, required=required, default=default, help=f"(default: {default})"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    args.pop("command")
    train(TrainConfig(**args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
