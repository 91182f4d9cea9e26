"""One run, one YAML file: model, data, augmentation, schedule and output folder.

The schema is a set of dataclasses read with OmegaConf, so a YAML file, ``key=value``
overrides from the command line (``model.rd.num_atoms=64``) and the defaults merge with type
checks, and an unknown key is an error that names it. The resolved config is written into the
run folder (``config.yaml``) so that a run can be repeated exactly.

Example:
    >>> cfg = load_config(overrides=["model.backbone=resnet18", "schedule.epochs=3"])
    >>> cfg.model.backbone, cfg.schedule.epochs, cfg.model.rd.enabled
    ('resnet18', 3, False)
    >>> detector_kwargs(cfg)["neck_channels"]
    64
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ImplicitConfig",
    "ModelConfig",
    "RDConfig",
    "RunConfig",
    "ScheduleConfig",
    "check_data_files",
    "detector_kwargs",
    "load_config",
    "save_config",
]


class ConfigError(ValueError):
    """A config file or override that cannot be used (the message names the key and value)."""


@dataclass
class RDConfig:
    """YOLO-RD's Retriever-Dictionary in the backbone (rd-core)."""

    enabled: bool = False
    at: str | None = None  # module name in the timm backbone; None: the stride-8 stage
    num_atoms: int = 512
    dictionary: str | None = None  # a dict-init artifact (.safetensors); None: random atoms
    trainable_dictionary: bool = True
    variant: str = "paper"  # or "authors" (their public code)
    kernel_size: int = 5
    residual: float = 0.8


@dataclass
class ImplicitConfig:
    """YOLOR implicit knowledge: feature alignment on the neck, refinement on the head."""

    enabled: bool = False
    prior: str = "vector"  # vector, network or factorized (implicit-knowledge priors)


@dataclass
class ModelConfig:
    # One of the authors' detectors (yolov9_t/s/m/c, yolo_rd_9c, yolov7, yolor_csp/csp_x/p6/w6;
    # `model=yolov9_t` for short). When set, backbone/neck/head keys are not used.
    architecture: str | None = None
    # A darknet cfg file of your own (YOLOR's format): built as architecture yolo_cfg.
    cfg: str | None = None
    weights: str | None = None  # start from: an authors' checkpoint file or a checkpoint folder
    auxiliary: bool = True  # the authors' architectures: train PGI's auxiliary branch
    backbone: str = "resnet18"  # any timm name with features_only (kw_* after kernelwarehouse)
    # timm.create_model keyword arguments, e.g. {channels: [16, 32, 64, 128]} or {budget: 0.5}
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    neck: str = "pan"
    neck_channels: int = 64
    neck_depth: int = 1
    head: str = "anchor_free"  # anchor_free, anchor_based
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    rd: RDConfig = field(default_factory=RDConfig)
    implicit: ImplicitConfig = field(default_factory=ImplicitConfig)


@dataclass
class DataConfig:
    train: str = "???"  # COCO JSON or YOLO data YAML (required)
    val: str | None = None  # same kinds; None: no validation
    train_images: str | None = None  # COCO JSON only: its image folder (default: beside it)
    val_images: str | None = None
    image_size: int = 64  # canvas side, multiple of 32
    num_workers: int = -1  # DataLoader workers; -1: from the usable cores (yolo_heads.threads)
    cache: bool = False  # decode every image once and keep it in memory
    skip_bad_images: bool = False  # leave out unreadable training images (default: fail, named)


@dataclass
class AugmentConfig:
    enabled: bool = True
    scale: list[float] = field(default_factory=lambda: [0.6, 1.0])  # of the fitting size
    flip: float = 0.0  # horizontal flip probability (digits are not mirror-symmetric)
    mosaic: float = 0.0  # probability of a 4-image mosaic (Ultralytics: 1.0)
    close_mosaic: int = 10  # mosaic off for the last N epochs
    translate: float = 0.0  # random affine translation, fraction of the image (Ultralytics: 0.1)
    affine_scale: float = 0.0  # random affine scale 1 +- this (Ultralytics' scale: 0.5)
    hsv_h: float = 0.0  # hue shift, fraction of the colour circle (Ultralytics: 0.015)
    hsv_s: float = 0.0  # saturation gain 1 +- this (Ultralytics: 0.7)
    hsv_v: float = 0.0  # value gain 1 +- this (Ultralytics: 0.4)


@dataclass
class ScheduleConfig:
    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "adamw"  # any timm.optim.create_optimizer_v2 name
    lr: float = 4e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine ends at lr * min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm; 0 turns clipping off
    ema: bool = True
    ema_decay: float = 0.999
    amp: bool = True  # bf16 autocast on CPU, fp16 + grad scaler on CUDA
    val_interval: int = 1  # validate every N epochs (and after the last)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0: from the usable cores and the load
    max_bad_steps: int = 10  # non-finite losses in a row before training stops


#: what a run trains: boxes, or boxes and instance masks
TASKS = ("detect", "segment")


@dataclass
class RunConfig:
    # detect, or segment: the head gains mask coefficients and prototypes (model.head picks the
    # detection part: anchor_free / yolov9; an architecture must be a segmenter such as
    # yolov9_c_seg) and the data must carry masks (COCO segmentation, YOLO-seg polygons)
    task: str = "detect"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    out: str = "runs/train"  # the run folder


def _check(cfg: DictConfig) -> None:
    s, d, m = cfg.schedule, cfg.data, cfg.model
    positive = {
        "schedule.epochs": s.epochs,
        "schedule.batch_size": s.batch_size,
        "schedule.val_interval": s.val_interval,
        "schedule.max_bad_steps": s.max_bad_steps,
        "data.image_size": d.image_size,
        "model.neck_channels": m.neck_channels,
        "model.neck_depth": m.neck_depth,
        "model.rd.num_atoms": m.rd.num_atoms,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value!r} is not valid; expected an integer >= 1")
    for key, value in {"schedule.lr": s.lr, "schedule.ema_decay": s.ema_decay}.items():
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key}={value!r} is not valid; expected a finite number > 0")
    for key, value in {
        "schedule.weight_decay": s.weight_decay,
        "schedule.grad_clip": s.grad_clip,
        "schedule.min_lr_ratio": s.min_lr_ratio,
        "schedule.warmup_steps": s.warmup_steps,
    }.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key}={value!r} is not valid; expected a finite number >= 0")
    for key, value, low in (
        ("data.num_workers", d.num_workers, -1),
        ("schedule.threads", s.threads, 0),
    ):
        if value < low:
            raise ConfigError(
                f"{key}={value!r} is not valid; expected an integer >= {low} ({low}: auto)"
            )
    if d.image_size % 32:
        raise ConfigError(f"data.image_size={d.image_size} is not valid; expected a multiple of 32")
    if len(cfg.augment.scale) != 2 or not 0 < cfg.augment.scale[0] <= cfg.augment.scale[1]:
        raise ConfigError(
            f"augment.scale={list(cfg.augment.scale)} is not valid; expected [low, high] with "
            "0 < low <= high"
        )
    aug = cfg.augment
    for key, top in (
        ("flip", 1.0), ("mosaic", 1.0), ("translate", 0.5), ("affine_scale", 0.9),
        ("hsv_h", 0.5), ("hsv_s", 1.0), ("hsv_v", 1.0),
    ):  # fmt: skip
        value = aug[key]
        if not (math.isfinite(value) and 0 <= value <= top):
            raise ConfigError(f"augment.{key}={value} is not valid; expected [0, {top}]")
    if aug.close_mosaic < 0:
        raise ConfigError(f"augment.close_mosaic={aug.close_mosaic} is not valid; expected >= 0")
    if m.architecture is not None:
        from .architectures import list_architectures, list_classifiers

        if m.architecture in list_classifiers():
            raise ConfigError(
                f"model.architecture={m.architecture!r} is a classifier; yolo-heads trains "
                f"detectors: train it with `timm-knowledge train --model {m.architecture} "
                "--data-dir <image folder>`"
            )
        if m.architecture not in list_architectures():
            raise ConfigError(
                f"model.architecture={m.architecture!r} is not valid; expected one of "
                f"{list_architectures()} (or leave it unset for a timm backbone)"
            )
    if m.cfg is not None or m.architecture == "yolo_cfg":
        _check_cfg(m.cfg, m.architecture)
    _check_task(cfg.task, m)
    if s.ema_decay >= 1:
        raise ConfigError(f"schedule.ema_decay={s.ema_decay} is not valid; expected < 1")


def _check_task(task: str, m: DictConfig) -> None:
    """``task``: one of :data:`TASKS`, and a model that can do it."""
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is not valid; expected one of {list(TASKS)}")
    if task != "segment":
        return
    from .heads.segment import DETECTION_HEADS

    if m.architecture is not None or m.cfg is not None:
        from .architectures import get_architecture, list_architectures

        segmenters = [n for n in list_architectures() if _has_block(get_architecture(n), "Segment")]
        if m.architecture not in segmenters:
            raise ConfigError(
                f"task=segment with model.architecture={m.architecture!r}: it has no segmentation "
                f"head; the segmenters are {segmenters} (or leave model.architecture unset for "
                "a timm backbone with a segmentation head)"
            )
    elif m.head not in DETECTION_HEADS:
        raise ConfigError(
            f"task=segment with model.head={m.head!r}: the segmentation head carries one of "
            f"{list(DETECTION_HEADS)}"
        )


def _has_block(table: dict[str, Any], block: str) -> bool:
    return any(
        isinstance(row, list) and len(row) > 1 and row[1] == block
        for section in table.values()
        if isinstance(section, list)
        for row in section
    )


def _check_cfg(cfg: str | None, architecture: str | None) -> None:
    """``model.cfg``: an existing darknet cfg file that parses (errors name its line)."""
    from .architectures.darknet import parse_cfg

    if cfg is None:
        raise ConfigError("model.architecture=yolo_cfg needs model.cfg=<darknet cfg file>")
    if architecture not in (None, "yolo_cfg"):
        raise ConfigError(
            f"model.cfg={cfg!r} builds its own architecture; leave model.architecture unset "
            f"(it is {architecture!r})"
        )
    path = Path(cfg)
    if not path.is_file():
        raise ConfigError(f"model.cfg={cfg!r} does not exist; expected a darknet cfg file")
    try:
        parse_cfg(path.read_text(encoding="utf-8"), str(path))
    except ValueError as err:
        raise ConfigError(f"model.cfg: {err}") from None


CONFIGS = Path(__file__).parent / "configs"


def builtin_config(name: str | os.PathLike) -> Path:
    """``name`` as a path, or the built-in config of that name (``digits``, ``coco``)."""
    path = Path(name)
    # Only a file shadows a built-in name: the demo writes its data set to ./digits
    if not path.is_file() and (CONFIGS / f"{path}.yaml").is_file():
        return CONFIGS / f"{path}.yaml"
    return path


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """Defaults, then the YAML file at ``path`` (or a built-in name), then ``key=value``
    overrides; checked.

    Raises :class:`ConfigError` naming the key for an unknown key, a value of the wrong type
    or a value out of range.
    """
    schema = OmegaConf.structured(RunConfig)
    try:
        layers = [schema]
        if path is not None:
            path = builtin_config(path)
            if not path.is_file():
                builtin = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
                what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
                raise ConfigError(
                    f"config={str(path)!r} {what}; expected a YAML file or a built-in config "
                    f"name: {builtin}"
                )
            layers.append(OmegaConf.load(path))
        # `model=yolov9_t`: the authors' architecture by name, as Ultralytics' `model=`
        overrides = [
            f"model.architecture={o[len('model=') :]}" if o.startswith("model=") else o
            for o in overrides
        ]
        # `data=coco8.yaml`: both splits from one YOLO data YAML, as Ultralytics' `data=`
        overrides = [
            part
            for o in overrides
            for part in (_data_shortcut(o) if o.startswith("data=") else [o])
        ]
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(
                f"override {bad[0]!r} is not valid; expected key=value, e.g. schedule.epochs=10"
            )
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as err:
        # OmegaConf's first line says what is wrong; the key is in full_key
        key = getattr(err, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"config: {where}{str(err).splitlines()[0]}") from None
    if missing:
        raise ConfigError(f"config: {missing} must be set (e.g. data.train=path/to/train.json)")
    _check(cfg)
    return cfg


def check_data_files(cfg: DictConfig) -> None:
    """``data.train`` and ``data.val`` exist; a missing digits set names the command that
    writes it (``yolo-heads digits DIR``). Cheap: the CLI runs it before torch loads."""
    for key in ("train", "val"):
        value = cfg.data[key]
        if value is None or Path(value).is_file():
            continue
        path = Path(value)
        what = "is a folder" if path.is_dir() else "does not exist"
        message = f"data.{key}={value!r} {what}"
        if not path.is_absolute():
            message += f" (relative to the current folder {os.getcwd()})"
        if path.name in ("train.json", "val.json") and "digits" in path.parent.name:
            message += (
                f"; the digits set is written by `yolo-heads digits {path.parent}` (or point "
                f"data.train= / data.val= at yours)"
            )
        else:
            message += "; expected a COCO annotation JSON or a YOLO data YAML"
        raise ConfigError(message)


def _data_shortcut(override: str) -> list[str]:
    """``data=path/data.yaml`` (Ultralytics' form): one YOLO data YAML sets ``data.train`` and,
    when the YAML lists a ``val`` split, ``data.val``."""
    value = override[len("data=") :]
    if Path(value).suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(
            f"data={value!r} is not valid; data= takes a YOLO data YAML (train, val, names) "
            "for both splits; a COCO JSON holds one split: set data.train= and data.val="
        )
    listed = None
    if Path(value).is_file():
        import yaml

        try:
            listed = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"data={value!r} is not valid YAML ({err})") from None
    has_val = not isinstance(listed, dict) or listed.get("val") is not None
    return [f"data.train={value}", *([f"data.val={value}"] if has_val else [])]


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved ``cfg`` as YAML, atomically."""
    from ._files import write_text_atomic

    return write_text_atomic(Path(path), OmegaConf.to_yaml(cfg, resolve=True))


def detector_kwargs(cfg: DictConfig, num_classes: int | None = None) -> dict[str, Any]:
    """:class:`~yolo_heads.YOLODetector` keyword arguments for ``cfg.model``, or with an
    ``architecture`` key, :class:`~yolo_heads.architectures.GraphDetector`'s.

    The RD's ``dictionary`` path is read here (a dict-init artifact); its atoms initialise the
    RD and its size sets ``num_atoms``.
    """
    m = OmegaConf.to_container(cfg.model, resolve=True)
    rd = m["rd"]
    if rd.pop("enabled"):
        path = rd.pop("dictionary")
        if path is not None:
            rd["dictionary"] = load_dictionary(path)
            rd.pop("num_atoms")
    else:
        rd = None
    if m["architecture"] is not None or m["cfg"] is not None:
        kwargs = {
            "architecture": m["architecture"] or "yolo_cfg",
            "auxiliary": m["auxiliary"],
            "loss_kwargs": m["loss_kwargs"] or None,
            "rd": rd,
        }
        if m["cfg"] is not None:  # the text: a checkpoint rebuilds the model without the file
            kwargs["cfg"] = Path(m["cfg"]).read_text(encoding="utf-8")
        return kwargs if num_classes is None else {**kwargs, "num_classes": num_classes}
    head, head_kwargs = m["head"], {"image_size_hint": cfg.data.image_size, **m["head_kwargs"]}
    if cfg.get("task", "detect") == "segment":  # the detection head inside the segmentation head
        head, head_kwargs = "segment", {"detect": head, **head_kwargs}
    kwargs: dict[str, Any] = {
        "backbone": m["backbone"],
        "neck": m["neck"],
        "neck_channels": m["neck_channels"],
        "neck_depth": m["neck_depth"],
        "head": head,
        "head_kwargs": head_kwargs,
        "loss_kwargs": m["loss_kwargs"],
        "implicit": m["implicit"]["enabled"],
        "implicit_prior": m["implicit"]["prior"],
        **m["backbone_kwargs"],
    }
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if rd is not None:
        kwargs["rd"] = rd
    return kwargs


def load_dictionary(path: str | os.PathLike) -> Any:
    """A dict-init dictionary artifact (needs ``dict-init``)."""
    try:
        from dict_init import Dictionary
    except ImportError as err:
        raise ConfigError(
            f"model.rd.dictionary={str(path)!r} needs the dict-init package to read the artifact "
            "(pip install ./packages/dict-init)"
        ) from err
    return Dictionary.load(path)
