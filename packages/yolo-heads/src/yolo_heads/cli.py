"""``yolo-heads``: train, validate, predict and export detectors from the command line.

    yolo-heads digits data/digits                       # the demo's data set (COCO JSON + PNG)
    yolo-heads train --config digits out=runs/digits schedule.epochs=10 model.rd.enabled=true
    yolo-heads train --resume runs/digits                # continue an interrupted run
    yolo-heads val --weights runs/digits/weights/best --data data/digits/val.json
    yolo-heads predict --weights runs/digits/weights/best --source data/digits/val
    yolo-heads export --weights runs/digits/weights/best --format onnx
    yolo-heads compress runs/digits/weights/best --num-atoms 256   # -> weights/best-rd256
    torchrun --nproc_per_node=2 -m yolo_heads.cli train --config digits   # DDP (gloo on CPU)

``train`` takes one YAML config (a path, or a built-in name: ``digits``, ``coco``) and any
number of ``key=value`` overrides; ``yolo-heads train --help`` lists every key with its
default. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = ["main"]


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


def _config_keys() -> str:
    from .config import CONFIGS, RunConfig

    flat: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value and key != "backbone_kwargs":
                walk(value, f"{prefix}{key}.")
            else:
                shown = "(required)" if value == "???" else json.dumps(value)
                flat.append(f"  {prefix}{key}={shown}")

    walk(OmegaConf.to_container(OmegaConf.structured(RunConfig)), "")
    builtin = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    return (
        "config keys (override any as key=value; defaults shown):\n"
        + "\n".join(flat)
        + f"\n\nbuilt-in configs: {builtin}"
    )


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="yolo-heads", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a detector from a YAML config",
        epilog=_config_keys(),
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
    )
    p.add_argument("--config", help="YAML config: a path or a built-in name (default: none)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")

    p = sub.add_parser("val", help="COCO metrics of a checkpoint", formatter_class=fmt)
    p.add_argument("--weights", required=True, help="checkpoint folder (config.json + weights)")
    p.add_argument("--data", required=True, help="COCO JSON or YOLO data YAML")
    p.add_argument("--split", default="val", help="split of a YOLO data YAML")
    p.add_argument("--image-size", type=int, help="default: the checkpoint's training size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.65)
    p.add_argument("--max-det", type=int, default=100)

    p = sub.add_parser("predict", help="detect objects in images", formatter_class=fmt)
    p.add_argument("--weights", required=True, help="checkpoint folder")
    p.add_argument("--source", required=True, help="an image file or a folder of images")
    p.add_argument("--image-size", type=int, help="default: the checkpoint's training size")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.65)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--out", default="runs/predict", help="where drawn images and JSON go")

    p = sub.add_parser("export", help="ONNX (NMS inside) or torch.export", formatter_class=fmt)
    p.add_argument("--weights", required=True, help="checkpoint folder")
    p.add_argument("--format", choices=("onnx", "torch-export"), default="onnx")
    p.add_argument("--image-size", type=int, help="default: the checkpoint's training size")
    p.add_argument("--conf", type=float, default=0.25, help="ONNX: score threshold")
    p.add_argument("--iou", type=float, default=0.65, help="ONNX: NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="ONNX: detections per image")
    p.add_argument("--out", help="output file (default: beside the weights)")

    p = sub.add_parser(
        "compress",
        help="distil a checkpoint's Retriever-Dictionary into fewer atoms (YOLO-RD 3.3)",
        formatter_class=fmt,
    )
    p.add_argument("weights", help="checkpoint folder, e.g. RUN/weights/best")
    p.add_argument("--num-atoms", type=int, required=True, help="atoms to keep (< the trained)")
    p.add_argument("--out", help="folder to write (default: WEIGHTS-rdN beside the weights)")
    p.add_argument("--data", help="images to distil on (default: the run's data.train)")
    p.add_argument("--split", default="train", help="split of a YOLO data YAML")
    p.add_argument("--images", help="a COCO JSON's image folder (default: beside it)")
    p.add_argument("--image-size", type=int, help="default: the checkpoint's training size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (paper: 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--temperature", type=float, default=0.1, help="tau of equation 8")
    p.add_argument(
        "--max-positions", type=int, default=4096, help="positions per batch in the loss; 0: all"
    )
    p.add_argument(
        "--usage-score",
        default="mean_abs",
        help="how the kept atoms are ranked: mean_abs, top1 or top1_then_mean_abs",
    )
    p.add_argument("--max-batches", type=int, help="batches per epoch (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--loss",
        default="cosine",
        help="cosine (Algorithm 1 line 21, the default: kept AP on digits) or contrastive "
        "(equation 8: AP 0.080 -> 0.010 on digits)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser(
        "digits", help="write the handwritten-digits detection set", formatter_class=fmt
    )
    p.add_argument("out", help="output folder (train.json, val.json and images)")
    p.add_argument("--train", type=int, default=640, help="training images")
    p.add_argument("--val", type=int, default=160, help="validation images")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size-spread",
        action="store_true",
        help="COCO small, medium and large digits (160 px canvases, log-uniform sides 12-150 px;"
        " --image-size is ignored) instead of the demo's small ones",
    )
    return parser


def _check_weights(weights: str) -> None:
    """``--weights`` is a checkpoint folder, checked before torch loads (seconds of CPU)."""
    from ._files import existing_folder

    folder = existing_folder(weights)
    if not folder.is_dir():
        hint = " (give the checkpoint folder, not a file in it)" if Path(weights).is_file() else ""
        raise UsageError(f"--weights {weights!r} is not a checkpoint folder{hint}")
    if not (folder / "config.json").is_file():
        raise UsageError(f"--weights {weights!r} has no config.json; expected a checkpoint folder")


def _weights(args: argparse.Namespace):
    from .checkpoint import load_checkpoint, read_config
    from .threads import plan_cpu

    config = read_config(args.weights)
    plan = plan_cpu(workers=0)  # val, predict, export: threads as a training run chooses them
    plan.apply()
    print(plan.describe(), file=sys.stderr)  # stdout stays the command's result
    size = args.image_size or config["pretrained_cfg"].get("input_size", (3, 640, 640))[-1]
    return load_checkpoint(args.weights), int(size)


class _StdoutLines(logging.Handler):
    """Prints log messages to the current ``sys.stdout``, one line each, flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def _train(args: argparse.Namespace) -> int:
    from .config import check_data_files, load_config

    if args.resume and args.config:
        raise UsageError("--resume takes the run's own config.yaml; do not also pass --config")
    if not args.resume:  # the config and its data files are checked before torch loads
        cfg = load_config(args.config, args.overrides)
        check_data_files(cfg)

    import torch
    import torch.distributed as dist

    from .run import resume_config, run_training

    if args.resume:
        cfg = resume_config(args.resume, args.overrides)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    # without bars the trainer logs its lines (threads, one per epoch): print them as they come
    printer = _StdoutLines()
    train_log = logging.getLogger("yolo_heads.train")
    level = train_log.level
    if args.no_progress:
        train_log.addHandler(printer)
        train_log.setLevel(logging.INFO)
    try:
        result = run_training(
            cfg, resume=args.resume, progress=not args.no_progress, plots=not args.no_plots
        )
    finally:
        train_log.removeHandler(printer)
        train_log.setLevel(level)
        if dist.is_initialized():
            dist.destroy_process_group()
    if result.history and (not dist.is_initialized()):
        last = result.history[-1]
        shown = " ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "epoch")
        print(f"epoch {last['epoch']}: {shown}")
    best = f"{result.best} (epoch {result.best_epoch})" if result.best else None
    print(f"run folder: {cfg.out}  (best: {best}, last: {result.last})")
    return 0


def _val(args: argparse.Namespace) -> int:
    _check_weights(args.weights)
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data!r} does not exist; expected a COCO JSON or data YAML")
    from .data import create_dataset
    from .evaluate import evaluate_detector
    from .fuse import fuse_for_inference

    model, size = _weights(args)
    segmenter = hasattr(model.head, "coefficients")  # instance masks scored beside the boxes
    dataset = create_dataset(args.data, split=args.split, image_size=size, masks=segmenter)
    if len(dataset.class_names) != model.num_classes:
        raise UsageError(
            f"--data {args.data!r} has {len(dataset.class_names)} classes but --weights "
            f"{args.weights!r} was trained for {model.num_classes} classes: its labels would be "
            "scored as the wrong categories; validate on the data set it was trained on"
        )
    metrics = evaluate_detector(
        fuse_for_inference(model),
        dataset,
        batch_size=args.batch_size,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
    )
    boxes = {k: v for k, v in metrics.items() if not k.startswith("mask_")}
    masks = {k[len("mask_") :]: v for k, v in metrics.items() if k.startswith("mask_")}
    prefix = "box:  " if masks else ""
    print(prefix + " ".join(f"{k}={v:.4f}" for k, v in boxes.items()))
    if masks:
        print("mask: " + " ".join(f"{k}={v:.4f}" for k, v in masks.items()))
    return 0


def _images(source: Path) -> list[Path]:
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in suffixes)
        if not files:
            raise UsageError(f"--source {str(source)!r} holds no images ({sorted(suffixes)})")
        return files
    if not source.is_file():
        raise UsageError(f"--source {str(source)!r} does not exist")
    return [source]


def _predict(args: argparse.Namespace) -> int:
    _check_weights(args.weights)
    images = _images(Path(args.source))  # before the model loads

    import numpy as np
    import torch
    from PIL import Image

    from ._files import write_text_atomic
    from .data.letterbox import boxes_to_original, letterbox
    from .fuse import fuse_for_inference
    from .masks import encode_rle, masks_to_original
    from .plots import draw_detections

    model, size = _weights(args)
    fused = fuse_for_inference(model)
    names = model.label_names or [str(i) for i in range(model.num_classes)]
    out = Path(args.out)
    records = []
    for path in images:
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as err:
            raise UsageError(f"--source image {str(path)!r} cannot be read ({err})") from None
        canvas, meta = letterbox(image, size)
        tensor = torch.from_numpy(canvas.copy()).permute(2, 0, 1).float()[None] / 255.0
        pred = fused.predict(tensor, conf=args.conf, iou=args.iou, max_det=args.max_det)[0]
        boxes = boxes_to_original(pred["boxes"], meta)
        # drawn on the image as given, with the boxes the JSON lists (every one above --conf)
        original = torch.from_numpy(image.copy()).permute(2, 0, 1).float()[None] / 255.0
        drawn = dict(pred, boxes=boxes)
        masks = None
        if "masks" in pred:  # a segmenter: its masks on the image as given, too
            masks = masks_to_original(pred["masks"], meta)
            drawn["masks"] = masks
        draw_detections(original, None, [drawn], names, out / f"{path.stem}.png", conf=args.conf)
        records.append(
            {
                "file": str(path),
                "boxes_xyxy": [[round(float(v), 2) for v in b] for b in boxes],
                "scores": [round(float(s), 5) for s in pred["scores"]],
                "labels": [names[int(i)] for i in pred["labels"]],
            }
        )
        if masks is not None:  # COCO RLE on the image as given
            records[-1]["masks_rle"] = [encode_rle(m) for m in masks]
    write_text_atomic(out / "predictions.json", json.dumps(records, indent=1))
    found = sum(len(r["scores"]) for r in records)
    print(f"{found} objects in {len(records)} images -> {out}/")
    return 0


def _export(args: argparse.Namespace) -> int:
    import importlib.util

    if args.format == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(
                f"--format onnx needs {' and '.join(missing)}, which is not installed: "
                "pip install 'yolo-heads[export]'"
            )
    _check_weights(args.weights)
    from .export import export_onnx, export_program

    model, size = _weights(args)
    weights = Path(args.weights)
    if args.format == "onnx":
        out = Path(args.out) if args.out else weights / "model.onnx"
        path = export_onnx(
            model, out, image_size=size, conf=args.conf, iou=args.iou, max_det=args.max_det
        )
        print(
            f"NMS is inside the graph with conf={args.conf:g}, iou={args.iou:g}, "
            f"max_det={args.max_det} baked in: boxes scoring under {args.conf:g} never come out "
            "(a young model may give none); export again with --conf / --iou / --max-det to change"
        )
    else:
        import torch

        out = Path(args.out) if args.out else weights / "model.pt2"
        program = export_program(model, image_size=size)
        from ._files import write_atomic

        path = write_atomic(out, lambda tmp: torch.export.save(program, str(tmp)))
    print(f"exported {args.format}: {path}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    # numbers first: a typo fails at once, before torch is imported
    for flag, value, low in (
        ("--num-atoms", args.num_atoms, 2),
        ("--batch-size", args.batch_size, 1),
        ("--epochs", args.epochs, 1),
        ("--max-positions", args.max_positions, 0),
        ("--seed", args.seed, 0),
        ("--max-batches", args.max_batches, 1),
        ("--image-size", args.image_size, 32),
    ):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value} is not valid; expected an integer >= {low}")
    for flag, value in (("--lr", args.lr), ("--temperature", args.temperature)):
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{flag} {value} is not valid; expected a finite number > 0")
    if args.max_positions == 1:
        raise UsageError("--max-positions 1 is not valid; expected 0 (all) or an integer >= 2")
    from .checkpoint import read_config
    from .compress import compress_checkpoint
    from .threads import plan_cpu

    read_config(args.weights)  # a checkpoint folder, before the data is read
    plan = plan_cpu(workers=0)
    plan.apply()
    print(plan.describe(), file=sys.stderr)
    result = compress_checkpoint(
        args.weights,
        args.num_atoms,
        out=args.out,
        data=args.data,
        split=args.split,
        image_dir=args.images,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        temperature=args.temperature,
        max_positions=args.max_positions or None,
        usage_score=args.usage_score,
        max_batches=args.max_batches,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        loss=args.loss,
    )
    print(f"distilled on {result.data}")
    print(result.summary())
    return 0


def _digits(args: argparse.Namespace) -> int:
    from .data import SIZE_SPREAD, make_digits_detection

    size = args.image_size
    common = {"image_size": size, "digit_size": (size // 6, int(size / 2.5))}
    if args.size_spread:
        common = dict(SIZE_SPREAD)
    train = make_digits_detection(args.out, args.train, seed=args.seed, split="train", **common)
    val = make_digits_detection(args.out, args.val, seed=args.seed + 1, split="val", **common)
    print(f"train: {train}\nval: {val}")
    return 0


def _unknown_arguments(parser: argparse.ArgumentParser, command: str, unknown: list[str]):
    """Exit 2 with the command's usage, the unknown arguments, its valid options and the
    closest one (argparse alone prints the top-level usage and names no valid option)."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    flags = [o for a in command_parser._actions for o in a.option_strings if o.startswith("--")]
    message = f"unrecognized arguments: {' '.join(unknown)}; valid options: {', '.join(flags)}"
    close = [
        f"{match[0]} instead of {token}"
        for token in unknown
        if token.startswith("-")
        and (match := difflib.get_close_matches(token.split("=")[0], flags, n=1))
    ]
    if close:
        message += f" (did you mean {', '.join(close)}?)"
    command_parser.error(message)


COMMANDS = {
    "train": _train,
    "val": _val,
    "predict": _predict,
    "export": _export,
    "compress": _compress,
    "digits": _digits,
}


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError

    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_arguments(parser, args.command, unknown)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, FileNotFoundError, PermissionError, ValueError) as err:
        print(f"yolo-heads {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"yolo-heads {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
