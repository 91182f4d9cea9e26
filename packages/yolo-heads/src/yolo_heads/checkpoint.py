"""One checkpoint format: a Hub folder (``config.json`` + ``model.safetensors``).

The same folder is what ``yolo-heads val/predict/export`` read, what ``hub_knowledge.load`` and
``timm.create_model("local-dir:<folder>", pretrained=True)`` rebuild (``config.json`` is timm's
format, architecture ``yolo_detector``), and what a Hub repository holds. A training run's
``last`` folder also has ``trainer_state.pt`` (optimiser, scheduler, EMA, grad scaler, RNG,
epoch; tensors only, read with ``torch.load(weights_only=True)``). A folder is written as a
whole: a sibling temporary folder is filled and swapped in.

Example:
    >>> import tempfile, timm, torch
    >>> from yolo_heads import YOLODetector
    >>> model = YOLODetector("resnet18", num_classes=2, neck_channels=16).eval()
    >>> folder = save_checkpoint(model, tempfile.mkdtemp() + "/best", label_names=["cat", "dog"])
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json', 'model.safetensors']
    >>> clone = load_checkpoint(folder).eval()
    >>> x = torch.rand(1, 3, 64, 64)
    >>> bool(torch.equal(clone(x)[0], model(x)[0])), clone.label_names
    (True, ['cat', 'dog'])
    >>> timm_clone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    >>> bool(torch.equal(timm_clone(x)[0], model(x)[0]))
    True
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ._checks import check_device, check_int, check_int_list, check_list, check_path
from ._files import existing_folder, write_folder_atomic
from .architectures import GraphDetector, list_architectures
from .registry import ARCHITECTURE, PRETRAINED_CFG

__all__ = [
    "CONFIG_NAME",
    "STATE_NAME",
    "WEIGHTS_NAME",
    "create_detector",
    "detector_config",
    "load_checkpoint",
    "load_trainer_state",
    "read_config",
    "save_checkpoint",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "trainer_state.pt"


def _unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def _check_labels(fn: str, label_names: Any, category_ids: Any, image_size: Any) -> None:
    if label_names is not None:
        check_list(
            "label_names",
            label_names,
            item=lambda name, v: _check_label(fn, name, v),
            expected="a list of class names (str), one per class",
            fn=fn,
        )
    if category_ids is not None:
        check_int_list("category_ids", category_ids, low=None, fn=fn)
    if image_size is not None:
        check_int("image_size", image_size, fn=fn)


def _check_label(fn: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{fn}: {name}={value!r} is not valid; expected a class name (str)")
    return value


def _check_metadata(metadata: Any) -> None:
    """``metadata`` goes into config.json: a dict of JSON values (finite numbers), checked per
    key so that the message names the one that is not."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise TypeError(
            f"metadata={metadata!r:.80} is not valid; expected a dict of JSON-serialisable values"
        )
    for key, value in metadata.items():
        try:
            json.dumps({key: value}, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"metadata[{key!r}]={value!r:.60} is not valid ({err}); expected JSON values "
                "(str, finite numbers, bool, None, lists and dicts of them; e.g. float(tensor))"
            ) from None


def _with_atom_counts(model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the atom count every Retriever-Dictionary of ``model`` has now.

    Dictionary compression (:func:`rd_core.compress`, ``yolo-heads compress``) swaps an RD for
    a smaller one after the model was built, so the build arguments it was created with no
    longer rebuild it: an attached RD's count goes into ``rd``, a built-in RD block's (rd-9c's
    ``B3``) into its layer tag's arguments.
    """
    rd_core = sys.modules.get("rd_core")  # no RD can be in a model when rd-core is not loaded
    if rd_core is None:
        return args
    args = copy.deepcopy(args)
    inserted = {id(insertion.rd) for insertion in rd_core.attached(model).values()}
    for name, module in model.named_modules():
        if not isinstance(module, rd_core.RetrieverDictionary):
            continue
        if id(module) in inserted:
            rd = args.get("rd")
            if rd:  # built with rd=...: the count goes with it (one RD per detector)
                args["rd"] = {**(rd if isinstance(rd, dict) else {}), "num_atoms": module.num_atoms}
            continue
        # a block of an authors' layer table, "layers.<i>.<...>": its tag's arguments
        parts = name.split(".")
        specs = getattr(getattr(model, "graph", None), "specs", None)
        spec = specs[int(parts[1])] if specs and parts[0] == "layers" else None
        if spec is None or not spec.tag:
            raise ValueError(
                f"the Retriever-Dictionary {name!r} ({module.num_atoms} atoms) has no place in "
                "the model's build config; it cannot be saved to be rebuilt"
            )
        if spec.args.get("num_atoms") != module.num_atoms:
            args[spec.tag] = {**(args.get(spec.tag) or {}), "num_atoms": module.num_atoms}
    return args


def detector_config(
    model: nn.Module,
    *,
    label_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    image_size: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """timm's ``config.json`` for a :class:`~yolo_heads.YOLODetector` built from a timm name."""
    from . import __version__

    _check_labels("detector_config", label_names, category_ids, image_size)
    model = _unwrap(model)
    args = getattr(model, "config", None)
    if args is None:
        raise ValueError(
            f"model={type(model).__name__} has no JSON build config (a detector on a backbone "
            "module instead of a timm name, or a dictionary that is not a tensor); build it from "
            "a timm backbone name to save it"
        )
    num_classes = model.num_classes
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(
            f"label_names has {len(label_names)} names; the detector has {num_classes} classes"
        )
    if category_ids is not None and len(category_ids) != num_classes:
        raise ValueError(
            f"category_ids has {len(category_ids)} ids; the detector has {num_classes} classes"
        )
    _check_metadata(metadata)
    architecture = getattr(model, "architecture", ARCHITECTURE)
    pretrained_cfg = dict(PRETRAINED_CFG, num_classes=num_classes)
    if image_size is not None:
        pretrained_cfg["input_size"] = (model.in_chans, image_size, image_size)
    config: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": None,
        "pretrained_cfg": pretrained_cfg,
        "model_args": _with_atom_counts(model, dict(args)),
        "knowledge": {
            "producer": f"yolo-heads {__version__}",
            "entrypoint_module": "yolo_heads.registry",
            "task": "object-detection",
            "methods": model.knowledge_methods(),
            "category_ids": list(category_ids) if category_ids is not None else None,
            **(metadata or {}),
        },
    }
    if label_names is not None:
        config["label_names"] = list(label_names)
    return config


def save_checkpoint(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    image_size: int | None = None,
    metadata: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a Hub folder (``config.json``, ``model.safetensors``), atomically.

    Args:
        model: a :class:`~yolo_heads.YOLODetector` built from a timm backbone name.
        folder: the folder to (re)write as a whole.
        label_names, category_ids: class names and the dataset's category ids, per label.
        image_size: the training image size (recorded as timm's ``input_size``).
        metadata: JSON-serialisable extras (epoch, metrics, ...), under ``knowledge``.
        trainer_state: written as ``trainer_state.pt`` for resuming (tensors, numbers, dicts).
    """
    folder = check_path("folder", folder, new=True, fn="save_checkpoint")
    _check_labels("save_checkpoint", label_names, category_ids, image_size)
    config = detector_config(
        model,
        label_names=label_names if label_names is not None else getattr(model, "label_names", None),
        category_ids=category_ids
        if category_ids is not None
        else getattr(model, "category_ids", None),
        image_size=image_size,
        metadata=metadata,
    )
    text = json.dumps(config, indent=2, allow_nan=False)
    # Tied or shared storages are not allowed in safetensors: store independent copies.
    tensors = {
        k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_NAME)

    return write_folder_atomic(folder, fill)


def _folder(folder: str | os.PathLike, what: str = "folder") -> Path:
    check_path(what, folder)
    path = existing_folder(folder)
    if not path.is_dir():
        hint = ""
        if Path(folder).is_file():
            hint = "; give the checkpoint folder (config.json + model.safetensors), not a file"
        raise FileNotFoundError(f"{what}={str(folder)!r} is not a checkpoint folder{hint}")
    return path


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked to describe a yolo-heads detector."""
    path = _folder(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"folder={str(folder)!r} has no {CONFIG_NAME}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None
    known = [ARCHITECTURE, *list_architectures()]
    if config.get("architecture") not in known or "model_args" not in config:
        raise ValueError(
            f"{str(path)!r} describes architecture={config.get('architecture')!r}, not a "
            f"yolo-heads detector (one of {known} with model_args)"
        )
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path.parent)!r} has no {path.name}")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file (truncated or another format: {err})"
        ) from None


def load_checkpoint(
    folder: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load a checkpoint folder into ``model``, or rebuild the detector from ``config.json``.

    The rebuilt detector carries ``label_names`` and ``category_ids`` from the config (or
    ``None``). Weights for another architecture are refused with the first differing tensor.
    """
    device = check_device("device", device, fn="load_checkpoint")
    path = _folder(folder)
    config = read_config(path)
    state = _read_weights(path / WEIGHTS_NAME)
    if model is None:
        model = create_detector(config["architecture"], **config["model_args"])
    target = _unwrap(model)
    own = target.state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        if mismatched:
            key = mismatched[0]
            detail = (
                f"{len(mismatched)} tensors differ in shape, e.g. {key!r} "
                f"{tuple(state[key].shape)} vs {tuple(own[key].shape)} in the model"
            )
        else:
            detail = f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
        raise ValueError(f"checkpoint {str(path)!r} is for another architecture: {detail}")
    target.load_state_dict(state)
    target.label_names = config.get("label_names")
    target.category_ids = config.get("knowledge", {}).get("category_ids")
    return model.to(device)


def create_detector(architecture: str, **model_args: Any) -> nn.Module:
    """The detector a checkpoint's ``config.json`` names: ``yolo_detector`` (a timm backbone,
    :class:`~yolo_heads.YOLODetector`) or one of the authors' architectures
    (:class:`~yolo_heads.architectures.GraphDetector`)."""
    from .detector import YOLODetector

    if architecture == ARCHITECTURE:
        return YOLODetector(**model_args)
    return GraphDetector(architecture, **model_args)


def load_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.pt`` of a run's ``last`` folder (``torch.load(weights_only=True)``)."""
    path = _folder(folder) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path.parent)!r} has no {STATE_NAME}; only a run's 'last' folder can be resumed"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign: one clear message, not torch's
        raise ValueError(f"{str(path)!r} cannot be read as trainer state ({err})") from None
