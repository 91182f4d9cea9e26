"""The trainer's options and their checks: every bad value is named before anything runs.

Example:
    >>> cfg = TrainConfig(model="resnet10t", data_dir=".", output="runs/x", image_size=64)
    >>> cfg.image_hw
    (64, 64)
    >>> TrainConfig(model="resnet10t", data_dir=".", output="x", lr=float("nan")).check()
    Traceback (most recent call last):
    ...
    ValueError: lr=nan is invalid: expected a finite number > 0
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

__all__ = ["AMP_DTYPES", "TrainConfig"]

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

# name -> (lowest, highest, lowest allowed itself?): finite numbers within a range
_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, math.inf, False),
    "momentum": (0.0, 1.0, True),
    "weight_decay": (0.0, math.inf, True),
    "warmup_epochs": (0.0, math.inf, True),
    "min_lr": (0.0, math.inf, True),
    "mixup": (0.0, math.inf, True),
    "cutmix": (0.0, math.inf, True),
    "smoothing": (0.0, 1.0, True),
    "model_ema_decay": (0.0, 1.0, False),
    "temp_epochs": (0.0, math.inf, True),
    "temp_init": (0.0, 1.0, True),
}
_POSITIVE_INTS = ("epochs", "batch_size")
_NON_NEGATIVE_INTS = ("threads", "seed")
_NAMES = ("model", "data_dir", "output", "train_split", "val_split", "opt", "sched", "device")


@dataclass
class TrainConfig:
    """Options of :func:`train` (the command line ``timm-knowledge train`` has one flag each).

    ``image_size`` is the training and validation resolution, an int or ``(H, W)`` (default
    224). ``input_size`` is its deprecated name (one release; ``FutureWarning``).
    """

    model: str
    data_dir: str
    output: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "validation"
    epochs: int = 100
    batch_size: int = 64
    image_size: int | tuple[int, int] | None = None
    opt: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "cosine"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.0
    no_aug: bool = False
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    temp_epochs: float = 10.0
    temp_init: float = 1.0
    resume: str | None = None
    workers: int = -1  # DataLoader workers; -1: from the usable cores (timm_knowledge.threads)
    threads: int = 0  # torch intra-op threads; 0: from the usable cores and the load
    seed: int = 0
    skip_bad_images: bool = False  # leave out unreadable images (warned); default: fail, named
    device: str = "cpu"
    input_size: int | None = None  # deprecated: image_size

    def __post_init__(self) -> None:
        if self.input_size is not None:
            if self.image_size is not None:
                raise TypeError(
                    "TrainConfig: pass image_size only ('input_size' is its deprecated name)"
                )
            warnings.warn(
                "TrainConfig: 'input_size' is deprecated, use 'image_size'",
                FutureWarning,
                stacklevel=3,
            )
            self.image_size, self.input_size = self.input_size, None
        if self.image_size is None:
            self.image_size = 224

    @classmethod
    def from_checkpoint(cls, resume: str | Path, **overrides: Any) -> TrainConfig:
        """The options a run was started with (saved in its ``last.pth``), with ``overrides``;
        ``resume`` is the ``last.pth`` or its run folder. ``output`` defaults to that folder.

        Example:
            >>> TrainConfig.from_checkpoint("no/such/run")
            Traceback (most recent call last):
            ...
            ValueError: resume='no/such/run' is invalid: no such run folder or last.pth
        """
        path = Path(resume)
        path = path / "last.pth" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"resume={str(resume)!r} is invalid: no such run folder or last.pth")
        try:
            saved = json.loads(torch.load(path, map_location="cpu", weights_only=True)["config"])
        except Exception as err:  # truncated or foreign: named, not torch's traceback
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"resume={str(resume)!r} cannot be read ({first}); it is not a complete last.pth "
                "(truncated or not a checkpoint): resume from another copy or start again"
            ) from None
        known = {f.name for f in dataclasses.fields(cls)}
        options = {k: v for k, v in saved.items() if k in known and k != "input_size"}
        if isinstance(options.get("image_size"), list):
            options["image_size"] = tuple(options["image_size"])
        overrides.pop("resume", None)
        return cls(**{**options, "output": str(path.parent), **overrides, "resume": str(path)})

    @property
    def image_hw(self) -> tuple[int, int]:
        """``image_size`` as ``(H, W)``."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def check(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the first bad option, its value and what
        is valid."""
        for name in _NAMES:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}={value!r} is invalid: expected a non-empty string")
        for name in _POSITIVE_INTS + _NON_NEGATIVE_INTS + ("workers",):
            value = getattr(self, name)
            low = 1 if name in _POSITIVE_INTS else -1 if name == "workers" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                kind = {1: "a positive integer", 0: "an integer >= 0"}.get(
                    low, "an integer >= 0, or -1 (from the usable cores)"
                )
                raise ValueError(f"{name}={value!r} is invalid: expected {kind}")
        self._check_image_size()
        for name, (low, high, low_ok) in _RANGES.items():
            value = getattr(self, name)
            bad_type = isinstance(value, bool) or not isinstance(value, (int, float))
            if bad_type or not math.isfinite(value) or value > high or value < low:
                bad = True
            else:
                bad = value == low and not low_ok
            if bad:
                bounds = f"> {low:g}" if not low_ok else f">= {low:g}"
                if high != math.inf:
                    bounds += f" and <= {high:g}"
                raise ValueError(f"{name}={value!r} is invalid: expected a finite number {bounds}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs={self.model_kwargs!r} must be a dict of build arguments")
        if ":" not in self.model and not timm.is_model(self.model):  # hf-hub:, local-dir: pass
            raise ValueError(
                f"model={self.model!r} is not registered in timm's factory "
                "(timm.list_models() names them; project models need their package imported)"
            )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device={self.device!r} is invalid: {e}") from None
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(
                f"amp_dtype={self.amp_dtype!r} is invalid: expected one of {list(AMP_DTYPES)}"
            )
        if not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir={self.data_dir!r} is invalid: not a directory")
        self._check_splits()
        if self.resume is not None and (
            not isinstance(self.resume, str) or not Path(self.resume).is_file()
        ):
            raise ValueError(f"resume={self.resume!r} is invalid: no such checkpoint file")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(
                f"batch_size={self.batch_size} is invalid with mixup/cutmix: it must be even"
            )

    def _check_splits(self) -> None:
        """Each split is a folder of ``data_dir`` (timm's synonyms count: ``val`` for
        ``validation``); otherwise timm would read ``data_dir`` itself as the split."""
        from timm.data.dataset_factory import _search_split

        root = Path(self.data_dir)
        for option in ("train_split", "val_split"):
            split = getattr(self, option)
            if Path(_search_split(str(root), split)).resolve() == root.resolve():
                present = sorted(p.name for p in root.iterdir() if p.is_dir())
                raise ValueError(
                    f"data_dir={self.data_dir!r} has no {split!r} folder ({option}={split!r}); "
                    f"it has {present}; expected train/ and validation/ (or val/) folders of "
                    "class folders"
                )

    def _check_image_size(self) -> None:
        size = self.image_size
        pair = size if isinstance(size, (tuple, list)) else (size,)
        if len(pair) not in (1, 2) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
        ):
            raise ValueError(
                f"image_size={size!r} is invalid: expected a positive integer or (H, W)"
            )
