"""The authors' checkpoints (MultimediaTechLab/YOLO; WongKinYiu/yolor) in this project's
detectors.

:func:`load` reads every layout their code writes into a :class:`GraphDetector`:

- the released ``.pt`` (``v9-t.pt`` ...): a flat state dict keyed ``0.conv.weight``;
- their Lightning ``.ckpt``: ``state_dict`` with the raw weights under ``model.model.<i>.`` and the
  EMA weights under ``ema.model.<i>.``. **The EMA weights are taken by default** (``ema=True``):
  they are the ones the trainer validates; the authors' own loader keeps the raw ones (their
  issues #136 and #165);
- the state dict of their ``YOLO`` module (``model.<i>.``, as in the test fixtures' records);
- any of these without the auxiliary branch (a deploy checkpoint): the model drops its branch.

Only ``torch.load(weights_only=True)`` or safetensors read files: no pickle runs.
Their layer ``i`` is our ``layers.<i>`` with the same block attribute names, except three
modules that are this project's own: the Retriever-Dictionary (``dconv.CG/GIE/D`` ->
``dconv.retriever.generator/exchanger``, ``dconv.dictionary``) and YOLOv7's implicit head
(``heads.<l>.implicit_a/head_conv/implicit_m`` -> ``out.<l>.add/conv/mul``).

:func:`authors_outputs` gives the raw outputs keyed like the fixtures (``out.Main.0.class`` ...).

YOLOR (``yolor_csp``, ``yolor_csp_x``, ``yolor_p6``, ``yolor_w6``, ``yolo_cfg``): their ``.pt``
is ``{"model": Darknet.state_dict(), "epoch", "best_fitness" (numpy), ...}``, read with
``weights_only=True`` (numpy's array reconstruction allowed, nothing else), or the bare
``Darknet.state_dict()``; keys ``module_list.<i>.Conv2d.weight`` / ``.BatchNorm2d.*`` /
``.implicit`` are ``layers.<i>.*`` here except the head's, which the model's
:attr:`~yolo_heads.architectures.darknet.DarknetInfo.renames` map. Their outputs:
``out.level.<l>`` [B, 3, H, W, 5 + C] and ``out.decoded`` [B, N, 5 + C].

    >>> import torch
    >>> from yolo_heads.architectures import GraphDetector
    >>> theirs = {to_authors_key(k): v for k, v in GraphDetector("yolov9_t").state_dict().items()}
    >>> model = load(theirs, model="yolov9_t")
    >>> sorted(authors_outputs(model, torch.zeros(1, 3, 64, 64)))[:3]
    ['out.AUX.0.anchor', 'out.AUX.0.class', 'out.AUX.0.vector']
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import GraphClassifier, GraphDetector, list_classifiers
from .architectures.classifier import fit_authors_state
from .heads import AnchorBasedHead, SegmentHead, YOLOv9Head

__all__ = ["authors_outputs", "load", "read_state_dict", "to_authors_key"]

log = logging.getLogger(__name__)

PREFIX = "layers."
# (their path inside a layer, ours); applied in order to the part after the layer index
_RENAMES = (
    (re.compile(r"^dconv\.CG\."), "dconv.retriever.generator."),
    (re.compile(r"^dconv\.GIE\."), "dconv.retriever.exchanger."),
    (re.compile(r"^dconv\.D\."), "dconv.dictionary."),
    (re.compile(r"^heads\.(\d+)\.implicit_a\.implicit$"), r"out.\1.add.prior.value"),
    (re.compile(r"^heads\.(\d+)\.implicit_m\.implicit$"), r"out.\1.mul.prior.value"),
    (re.compile(r"^heads\.(\d+)\.head_conv\."), r"out.\1.conv."),
)
_LAYER_KEY = re.compile(r"^(\d+)\.(.+)$")


def read_state_dict(source: str | os.PathLike | Mapping[str, Any], ema: bool = True) -> dict:
    """The authors' weights in ``source`` as a flat ``{"<i>.<path>": tensor}`` dict."""
    if isinstance(source, (str, os.PathLike)):
        source = _read_file(Path(source))
    if not isinstance(source, Mapping):
        raise TypeError(
            f"source={type(source).__name__} is not valid; expected a path or a state dict"
        )
    state: Mapping[str, Any] = source
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError("source holds no tensors: not a checkpoint of the authors' models")
    prefixes = ("ema.model.", "model.model.") if ema else ("model.model.", "ema.model.")
    for prefix in (*prefixes, "model.", "module.model.", "module_list.", ""):
        picked = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if picked and all(_LAYER_KEY.match(k) for k in picked):
            if prefix in ("ema.model.", "model.model."):
                log.info("official.load: took the %s weights (%s)", prefix[:-1], prefix)
            return picked
    first = next(iter(tensors))
    raise ValueError(
        f"source: key {first!r} is not in any layout of the authors' checkpoints "
        "('<i>.<path>', 'model.<i>.<path>', Lightning 'model.model.' / 'ema.model.', YOLOR's "
        "'module_list.<i>.<path>')"
    )


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"source={str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # YOLOR's train.py stores its fitness values as numpy arrays beside the weights:
            # allow numpy's array reconstruction (data only), nothing else.
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # one clear message, not pickle's
        raise ValueError(
            f"source={str(path)!r} cannot be read with torch.load(weights_only=True) ({err}); "
            "only tensor checkpoints are read, never arbitrary pickle"
        ) from None


def _numpy_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def to_ours(key: str) -> str:
    """An authors' key (``"4.dconv.CG.conv.weight"``) as this project's state-dict key."""
    match = _LAYER_KEY.match(key)
    if match is None:
        raise ValueError(f"key {key!r} does not start with a layer index")
    index, rest = match.groups()
    for pattern, replacement in _RENAMES:
        rest = pattern.sub(replacement, rest)
    return f"{PREFIX}{index}.{rest}"


def to_authors_key(key: str, model: GraphDetector | None = None) -> str:
    """This project's key as the authors' released ``.pt`` names it (the inverse of loading);
    for a darknet-cfg ``model`` (YOLOR) as their ``Darknet.state_dict()`` names it
    (``module_list.<i>...``)."""
    if model is not None and getattr(model, "darknet", None) is not None:
        return model.darknet.to_authors(key[len(PREFIX) :])
    rest = key[len(PREFIX) :]
    index, rest = rest.split(".", 1)
    rest = re.sub(r"^dconv\.retriever\.generator\.", "dconv.CG.", rest)
    rest = re.sub(r"^dconv\.retriever\.exchanger\.", "dconv.GIE.", rest)
    rest = re.sub(r"^dconv\.dictionary\.", "dconv.D.", rest)
    rest = re.sub(r"^out\.(\d+)\.add\.prior\.value$", r"heads.\1.implicit_a.implicit", rest)
    rest = re.sub(r"^out\.(\d+)\.mul\.prior\.value$", r"heads.\1.implicit_m.implicit", rest)
    rest = re.sub(r"^out\.(\d+)\.conv\.", r"heads.\1.head_conv.", rest)
    return f"{index}.{rest}"


def _class_rows(value: torch.Tensor, own: torch.Tensor, anchors: int) -> torch.Tensor:
    """YOLOv7 head rows: keep box + objectness per anchor, take the class rows from ``own``."""
    theirs = value.reshape(anchors, -1, *value.shape[1:])
    mine = own.detach().clone().reshape(anchors, -1, *own.shape[1:])
    mine[:, :5] = theirs[:, :5].reshape(mine[:, :5].shape)
    return mine.reshape(own.shape)


def load(
    source: str | os.PathLike | Mapping[str, Any],
    model: str | GraphDetector | GraphClassifier = "yolov9_c",
    *,
    ema: bool = True,
    strict_classes: bool = False,
) -> GraphDetector:
    """The authors' weights in ``source`` loaded into ``model`` (an architecture name or a
    :class:`GraphDetector`); returns the model.

    A checkpoint without the auxiliary branch drops the model's. With another class count the
    class outputs keep the model's initialisation (YOLOv7: the class rows of each anchor) and the
    skipped keys are logged and listed in ``model.skipped_keys``; ``strict_classes=True``
    refuses instead. YOLOv9 heads keep the checkpoint's class-branch width (the authors' width
    depends on the class count), so the returned model may be a rebuilt one: use the return
    value. Any other mismatch raises ``ValueError`` naming the first key.

    The classifiers (``model="yolov9_c_cls"``, a :class:`GraphClassifier`): with another class
    count the final Linear keeps the model's initialisation.

    YOLOR's models (``model="yolor_csp"`` ...): ``source`` is their ``.pt`` (``ckpt["model"]``,
    the EMA ``Darknet.state_dict()``) or that state dict; with another class count the class
    rows of each anchor (output convolution and ImplicitMul) keep the model's initialisation.
    """
    if _is_darknet(model):
        return _load_darknet(source, model, strict_classes=strict_classes)
    if isinstance(model, GraphClassifier) or model in list_classifiers():
        state = {to_ours(k): v for k, v in read_state_dict(source, ema=ema).items()}
        model, skipped = fit_authors_state(model, state, strict_classes)
        return _load_reporting(model, state, skipped, "class-output tensors")
    state = {
        # their implicit vectors are [1, C, 1, 1], implicit-knowledge's [C]
        to_ours(k): v.reshape(-1) if k.endswith(".implicit") else v
        for k, v in read_state_dict(source, ema=ema).items()
    }
    if isinstance(model, str):
        has_aux = any(k.startswith(PREFIX) for k in state) and _has_auxiliary(model, state)
        model = GraphDetector(model, auxiliary=has_aux)
    if not isinstance(model, GraphDetector):
        raise TypeError(
            f"model={type(model).__name__} is not valid; expected an architecture name or a "
            "GraphDetector"
        )
    model = _with_checkpoint_class_width(model, state)
    own = model.state_dict()
    if model.aux_index is not None and not any(_is_aux(model, k) for k in state):
        model.drop_auxiliary()
        own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(
            f"source does not fit {model.architecture}: its key {to_authors_key(unexpected[0])!r} "
            f"({len(unexpected)} such keys) has no place in the model"
        )
    # the anchors are a buffer here, a table entry there: the model's own values stay
    state.update({k: v for k, v in own.items() if k.endswith(".anchors") and k not in state})
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"source does not fit {model.architecture}: it has no {to_authors_key(missing[0])!r} "
            f"({len(missing)} keys missing)"
        )
    skipped, anchors = [], _v7_anchors(model)
    for key, value in list(state.items()):
        if value.shape == own[key].shape:
            continue
        if strict_classes or not _is_class_output(model, key):
            raise ValueError(
                f"source does not fit {model.architecture}: {to_authors_key(key)!r} has shape "
                f"{tuple(value.shape)}, the model {tuple(own[key].shape)}"
            )
        skipped.append(key)
        if anchors and value.numel() % anchors == 0:
            state[key] = _class_rows(value.reshape(-1, *own[key].shape[1:]), own[key], anchors)
        else:
            state[key] = own[key]
    return _load_reporting(model, state, skipped, "class-output tensors")


def _load_reporting(model: Any, state: dict, skipped: list[str], what: str) -> Any:
    """Load ``state`` into ``model``, log and keep (``model.skipped_keys``) the re-initialised
    class outputs; returns the model."""
    if skipped:
        what = what % len(skipped) if "%d" in what else f"{len(skipped)} {what}"
        log.warning(
            "official.load: class count differs; re-initialised %s: %s", what, ", ".join(skipped)
        )
    model.load_state_dict(state)
    model.skipped_keys = skipped
    return model


def _is_darknet(model: Any) -> bool:
    from .architectures import get_architecture, list_architectures

    if isinstance(model, str):
        return model in list_architectures() and "cfg" in get_architecture(model)
    return getattr(model, "darknet", None) is not None


def _load_darknet(
    source: str | os.PathLike | Mapping[str, Any],
    model: str | GraphDetector,
    *,
    strict_classes: bool,
) -> GraphDetector:
    """YOLOR's ``Darknet`` weights into a cfg-built :class:`GraphDetector`."""
    theirs = read_state_dict(source)
    if isinstance(model, str):
        model = GraphDetector(model)
    info = model.darknet
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in theirs.items():
        ours = PREFIX + info.to_ours(key)
        if ours not in own:
            raise ValueError(
                f"source does not fit {model.architecture}: its key 'module_list.{key}' "
                f"(shape {tuple(value.shape)}) has no place in the model"
            )
        # their implicit vectors are [1, C, 1, 1], implicit-knowledge's [C]
        state[ours] = value.reshape(-1) if key.endswith(".implicit") else value
    # the anchors are a buffer here, cfg text there: the model's own values stay
    state.update({k: v for k, v in own.items() if k.endswith(".anchors") and k not in state})
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"source does not fit {model.architecture}: it has no "
            f"{to_authors_key(missing[0], model)!r} ({len(missing)} keys missing)"
        )
    skipped = []
    head = f"{PREFIX}{info.head_index}.out."
    for key, value in list(state.items()):
        if value.shape == own[key].shape:
            continue
        if strict_classes or not key.startswith(head) or key.endswith("add.prior.value"):
            raise ValueError(
                f"source does not fit {model.architecture}: {to_authors_key(key, model)!r} has "
                f"shape {tuple(value.shape)}, the model {tuple(own[key].shape)}"
            )
        skipped.append(key)
        anchors = model.head.num_anchors
        state[key] = _class_rows(value.reshape(-1, *own[key].shape[1:]), own[key], anchors)
    return _load_reporting(model, state, skipped, "the class rows of %d tensors")


def _with_checkpoint_class_width(model: GraphDetector, state: Mapping[str, Any]) -> GraphDetector:
    """``model``, rebuilt with the checkpoint's class-branch width where the authors' formula
    gives another for this class count (YOLOv9 heads: ``max(c0, min(2 C, 128))``)."""
    overrides = {}
    for tag, index in (("Main", model.main_index), ("AUX", model.aux_index)):
        key = f"{PREFIX}{index}.heads.0.class_conv.0.conv.weight"
        if index is None or key not in state:
            continue
        width = state[key].shape[0]
        if width != model.state_dict()[key].shape[0]:
            overrides[tag] = {**model.config.get(tag, {}), "class_channels": int(width)}
    if not overrides:
        return model
    log.info("official.load: class branches keep the checkpoint's width %s", overrides)
    config = {k: v for k, v in model.config.items() if k not in overrides}
    return GraphDetector(model.architecture, **config, **overrides)


def _has_auxiliary(architecture: str, state: Mapping[str, Any]) -> bool:
    deploy = GraphDetector(architecture, auxiliary=False)
    return len(state) > len(deploy.state_dict())


def _is_aux(model: GraphDetector, key: str) -> bool:
    index = int(key[len(PREFIX) :].split(".", 1)[0])
    return model.graph.specs[index].section == "auxiliary"


def _v7_anchors(model: GraphDetector) -> int:
    head = model.head
    return head.num_anchors if isinstance(head, AnchorBasedHead) else 0


def _is_class_output(model: GraphDetector, key: str) -> bool:
    rest = key[len(PREFIX) :].split(".", 1)[1]
    # a segmenter's detection sub-heads (v9-c-seg) sit under detect.
    return bool(
        re.match(r"^(detect\.)?heads\.\d+\.class_conv\.2\.|^out\.\d+\.(conv\.|mul\.)", rest)
    )


@torch.no_grad()
def authors_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The raw outputs the authors' ``YOLO.forward`` returns, keyed like the fixtures.

    YOLOv9 heads: ``out.<tag>.<l>.class`` [B, C, H, W], ``.anchor`` [B, R, 4, H, W] (bin
    logits), ``.vector`` [B, 4, H, W] (expected distances); YOLOv7: ``out.Main.<l>``
    [B, 3 (5 + C), H, W]; segmenters (v9-c-seg): ``out.<tag>.<l>`` [B, M, H, W] mask
    coefficients and ``out.<tag>.3`` [B, M, H4, W4] prototypes, as their forward returns (ours
    also computes boxes and classes, left out here). Tags are ``Main`` and, when built, ``AUX``
    (which the authors' forward runs in eval too). YOLOR (``Darknet.forward``'s
    ``(decoded, (p_0, p_1, p_2))``): ``out.level.<l>`` [B, 3, H, W, 5 + C] raw,
    ``out.decoded`` [B, N, 5 + C] (box centre and size in pixels, sigmoid objectness and
    classes). Classifiers (v9-c-cls): ``out.Main`` [B, C],
    the logits. Runs ``model`` in eval mode.
    """
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, GraphClassifier):  # v9-c-cls: the logits
            return {"out.Main": model(images)}
        tagged = model.forward_tags(images)
    finally:
        model.train(was_training)
    out: dict[str, torch.Tensor] = {}
    if getattr(model, "darknet", None) is not None:
        levels = tagged["Main"]
        out.update({f"out.level.{level}": raw for level, raw in enumerate(levels)})
        out["out.decoded"] = model.head.decode_xywh(levels)
        return out
    for tag, head in (("Main", model.head), ("AUX", model.aux_head)):
        if head is None:
            continue
        if isinstance(head, SegmentHead):  # theirs returns only coefficients and prototypes
            _, coefficients, prototypes = head.split(tagged[tag])
            out.update({f"out.{tag}.{level}": c for level, c in enumerate(coefficients)})
            out[f"out.{tag}.{len(coefficients)}"] = prototypes
            continue
        for level, raw in enumerate(tagged[tag]):
            key = f"out.{tag}.{level}"
            if isinstance(head, YOLOv9Head):
                b, _, h, w = raw.shape
                bins = 4 * head.reg_max
                out[f"{key}.class"] = raw[:, bins:]
                out[f"{key}.anchor"] = raw[:, :bins].view(b, 4, head.reg_max, h, w).transpose(1, 2)
                out[f"{key}.vector"] = head.heads[level].anc2vec(raw[:, :bins])
            else:
                b, a, h, w, c = raw.shape
                out[key] = raw.permute(0, 1, 4, 2, 3).reshape(b, a * c, h, w)
    return out
