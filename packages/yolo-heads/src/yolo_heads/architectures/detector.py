"""``GraphDetector``: one of the authors' detectors (a layer table) with yolo-heads' interface.

It has what the trainer, evaluation, export and checkpoints use on
:class:`~yolo_heads.YOLODetector` (``head`` with ``decode``, ``loss``, ``predict``, ``config``,
``num_classes``, ``in_chans``) plus timm's ``feature_info`` / ``forward_intermediates`` over the
backbone section, so ``features_only``, rd-core's ``attach`` and kernelwarehouse's ``convert``
treat it like any timm model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_images, check_int, check_targets
from ..nms import predict_from_outputs
from .blocks import BLOCKS, RepConv
from .classifier import is_classifier_table
from .darknet import DarknetInfo, build_darknet, parse_cfg
from .graph import HEAD_BLOCKS, BackboneFeatures, Layer, LayerGraph, parse_table

#: Images reach the authors' models as [0, 1] without normalisation (their transforms).
AUX_WEIGHT = 0.25  # the authors' ``loss.aux``: PGI's auxiliary loss counts a quarter


def _build(
    layers: list[Layer], table: dict[str, Any], num_classes: int, in_chans: int
) -> list[nn.Module]:
    from ..heads import AnchorBasedHead, SegmentHead, YOLOv9Head

    channels: dict[int, Any] = {-1: in_chans}
    modules: list[nn.Module] = []
    strides = list(table.get("strides", (8, 16, 32)))
    for layer in layers:
        ins = [channels[s] for s in layer.sources]
        in_channels = ins if layer.many else ins[0]
        if layer.block == "Detect":
            module: nn.Module = YOLOv9Head(
                in_channels, num_classes, strides, reg_max=table.get("reg_max", 16), **layer.args
            )
            out = None
        elif layer.block == "Segment":
            # sources: the three detection levels, then the stride-4 map of the prototypes
            module = SegmentHead(
                in_channels[:-1],
                num_classes,
                strides,
                detect="yolov9",
                prototype_channels=in_channels[-1],
                reg_max=table.get("reg_max", 16),
                **layer.args,
            )
            out = None
        elif layer.block == "IDetect":
            module = AnchorBasedHead(
                in_channels, num_classes, strides, anchors=table["anchors"], implicit=True
            )
            out = None
        else:
            module = BLOCKS[layer.block](in_channels, **layer.args)
            out = module.out_channels
        modules.append(module)
        channels[layer.index] = out
    return modules


class GraphDetector(BackboneFeatures, nn.Module):
    """A detector from a layer table (see :mod:`yolo_heads.architectures.graph`).

    Args:
        architecture: a name in :func:`yolo_heads.architectures.list_architectures`
            (``yolov9_t`` ... ``yolo_rd_9c``, ``yolov7``; YOLOR's ``yolor_csp``,
            ``yolor_csp_x``, ``yolor_p6``, ``yolor_w6``; ``yolo_cfg`` with ``cfg=``).
        num_classes: class count (80 for the authors' COCO weights).
        auxiliary: build PGI's auxiliary branch (trained with ``loss``, never run at inference).
        in_chans: input channels.
        loss_kwargs: options of the head's loss (gains, ``assigner``); the authors' defaults.
        aux_weight: weight of the auxiliary loss (the authors' 0.25).
        rd: add a Retriever-Dictionary (rd-core) as :class:`~yolo_heads.YOLODetector` does:
            ``True`` or a dict with ``at`` (default: the stride-8 backbone layer B3),
            ``dictionary``, ``num_atoms`` and other ``RetrieverDictionary`` arguments.
        cfg: for ``architecture="yolo_cfg"``: a darknet cfg file (path) or its text; the text
            is kept in ``config`` so checkpoints rebuild the model anywhere.
        **layer_args: per-tag block arguments, e.g. ``B3={"num_atoms": 256}`` for rd-9c.

    Images are ``[B, C, H, W]`` in [0, 1] (H, W multiples of 32), not normalised, as the authors'
    models expect.

    >>> model = GraphDetector("yolov9_t", num_classes=3).eval()
    >>> [tuple(o.shape) for o in model(torch.zeros(1, 3, 64, 64))]
    [(1, 67, 8, 8), (1, 67, 4, 4), (1, 67, 2, 2)]
    """

    def __init__(
        self,
        architecture: str,
        num_classes: int = 80,
        auxiliary: bool = True,
        in_chans: int = 3,
        loss_kwargs: dict[str, Any] | None = None,
        aux_weight: float = AUX_WEIGHT,
        rd: dict[str, Any] | bool | None = None,
        cfg: str | os.PathLike | None = None,
        **layer_args: dict[str, Any],
    ) -> None:
        from ..detector import _rd_config, _rd_kwargs
        from . import CFG_ARCHITECTURE, get_architecture

        super().__init__()
        fn = "GraphDetector"
        table = get_architecture(architecture)
        if is_classifier_table(table):
            raise ValueError(
                f"architecture={architecture!r} is a classifier; build it with GraphClassifier "
                f"(or timm.create_model({architecture!r}))"
            )
        check_int("num_classes", num_classes, fn=fn)
        check_int("in_chans", in_chans, fn=fn)
        #: a darknet cfg's head levels and the authors' key names (None for layer tables)
        self.darknet: DarknetInfo | None = None
        if "cfg" in table:
            if layer_args:
                raise ValueError(
                    f"{architecture}: {sorted(layer_args)} are not valid; a cfg architecture "
                    "takes no per-layer arguments (edit the cfg file instead)"
                )
            cfg = _cfg_text(architecture, table, cfg)
            layers, modules, self.darknet = _darknet(
                architecture, table, cfg, num_classes, in_chans
            )
        else:
            if cfg is not None:
                raise ValueError(
                    f"cfg= is only for architecture={CFG_ARCHITECTURE!r} (a darknet cfg file); "
                    f"{architecture!r} is a layer table"
                )
            layers = parse_table(architecture, table)
            if not auxiliary:
                layers = [layer for layer in layers if layer.section != "auxiliary"]
            for tag, extra in layer_args.items():
                layers = _override(architecture, layers, tag, extra)
            modules = _build(layers, table, num_classes, in_chans)
        self.architecture, self.num_classes, self.in_chans = architecture, num_classes, in_chans
        self.aux_weight = float(aux_weight)
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "auxiliary": auxiliary,
            "in_chans": in_chans,
            "loss_kwargs": loss_kwargs,
            "aux_weight": aux_weight,
            "rd": _rd_config(rd),
            **({"cfg": cfg} if architecture == CFG_ARCHITECTURE else {}),
            **layer_args,
        }
        self.label_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self.layers = nn.ModuleList(modules)
        self.graph = LayerGraph(layers)
        heads = [layer for layer in layers if layer.block in HEAD_BLOCKS]
        self.main_index = next(layer.index for layer in heads if layer.tag == "Main")
        aux = [layer.index for layer in heads if layer.tag == "AUX"]
        self.aux_index = aux[0] if aux else None
        self.strides = list(self.head.strides)
        self.feature_info = [
            {
                "num_chs": self.layers[layer.index].out_channels,
                "reduction": reduction,
                "module": f"layers.{layer.index}",
                "index": layer.index,
            }
            for layer, reduction in (
                _backbone_features(layers, table)
                if self.darknet is None
                else [
                    (layers[i], r)
                    for i, r in zip(self.darknet.feature_indices, self.darknet.feature_strides)
                ]
            )
        ]
        self.rd_at = next(
            (f"layers.{layer.index}" for layer in layers if layer.block.endswith("RD")), None
        )
        if rd:
            from ..knowledge import attach_retriever_dictionary

            at, rd_kwargs = _rd_kwargs(rd)
            at = at or self.feature_info[0]["module"]
            attach_retriever_dictionary(self, at, image_size=64, in_chans=in_chans, **rd_kwargs)
            self.rd_at = at
        options = dict(table.get("loss", {}), **(loss_kwargs or {}))
        self._loss = self.head.loss_fn(**options)
        self._aux_loss = self.aux_head.loss_fn(**options) if self.aux_head is not None else None

    @property
    def head(self) -> nn.Module:
        """The main detection head (``decode``, ``flatten``, ``strides``)."""
        return self.layers[self.main_index]

    @property
    def aux_head(self) -> nn.Module | None:
        """PGI's auxiliary head, or None when the branch was not built."""
        return None if self.aux_index is None else self.layers[self.aux_index]

    def forward(self, images: torch.Tensor) -> Any:
        """Main head outputs; in training mode with the auxiliary branch, ``(main, aux)``."""
        check_images(images, self.in_chans, max(self.strides))
        if self.training and self.aux_index is not None:
            out = self._run(images, len(self.graph.specs), (self.main_index, self.aux_index))
            return out[self.main_index], out[self.aux_index]
        return self._run(images, self.main_index + 1, (self.main_index,))[self.main_index]

    def _run(self, images: torch.Tensor, stop: int, keep: tuple[int, ...]) -> dict[int, Any]:
        return self.graph.run(self.layers, images, stop, keep)

    def forward_tags(self, images: torch.Tensor) -> dict[str, Any]:
        """Every tagged layer's output (``Main``, ``AUX``, ``B3`` ...), all layers run."""
        tagged = {layer.index: layer.tag for layer in self.graph.specs if layer.tag}
        out = self._run(images, len(self.graph.specs), tuple(tagged))
        return {tagged[i]: value for i, value in out.items()}

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = True,
        **_: Any,
    ) -> list[torch.Tensor]:
        """timm's feature API over the backbone: the ``feature_info`` maps picked by ``indices``
        (all by default; an int n: the last n)."""
        picks = self._feature_picks(len(self.feature_info) if indices is None else indices)
        wanted = tuple(self.feature_info[i]["index"] for i in picks)
        out = self._run(x, max(wanted) + 1, wanted)
        return [out[i] for i in wanted]

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 3, **_: Any) -> list[int]:
        """As :class:`BackboneFeatures`', and the auxiliary branch goes with the head."""
        picks = super().prune_intermediate_layers(indices)
        self.aux_index, self._aux_loss = None, None
        return picks

    def reparameterize(self) -> GraphDetector:
        """Fold every RepConv into one convolution (eval-mode outputs unchanged); returns self."""
        for module in self.modules():
            if isinstance(module, RepConv):
                module.reparameterize()
        return self

    def drop_auxiliary(self) -> GraphDetector:
        """Remove PGI's auxiliary branch (the deploy model); returns self."""
        if self.aux_index is not None:
            # the auxiliary section comes last in every table
            count = sum(layer.section != "auxiliary" for layer in self.graph.specs)
            self.layers = self.layers[:count]
            self.graph = self.graph.truncated(count)
            self.aux_index, self._aux_loss = None, None
            self.config["auxiliary"] = False
        return self

    def knowledge_methods(self) -> list[str]:
        """The papers' methods this detector uses (``yolo-rd``, ``yolor``), for model cards."""
        from implicit_knowledge import ImplicitAdd

        implicit = any(isinstance(m, ImplicitAdd) for m in self.modules())
        return [name for name, used in (("yolo-rd", self.rd_at), ("yolor", implicit)) if used]

    def no_weight_decay(self) -> set[str]:
        """Implicit vectors (YOLOv7's head) stay out of weight decay, as biases and norms do."""
        return {
            name
            for name, _ in self.named_parameters()
            if name.endswith("prior.value") or ".prior." in name
        }

    def loss(
        self, outputs: Any, targets: Sequence[dict[str, torch.Tensor]], image_size=None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Main loss plus ``aux_weight`` x the auxiliary head's, part by part (the authors'
        ``DualLoss``). ``outputs`` is what :meth:`forward` returned."""
        main, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
        if image_size is None:
            first = main[0]
            h, w = first.shape[-2:] if first.ndim == 4 else first.shape[2:4]
            image_size = (h * self.strides[0], w * self.strides[0])
        targets = check_targets(targets, main[0].shape[0], image_size, self.num_classes)
        total, parts = self._loss(main, targets)
        if aux is not None and self._aux_loss is not None:
            aux_total, aux_parts = self._aux_loss(aux, targets)
            total = total + self.aux_weight * aux_total
            parts = {k: v + self.aux_weight * aux_parts[k] for k, v in parts.items()}
        return total, parts

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        conf: float = 0.25,
        iou: float = 0.65,
        max_det: int = 300,
        multi_label: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        """Per-image ``boxes`` [K, 4] (xyxy pixels), ``scores`` [K], ``labels`` [K]."""
        outputs = self(images)
        if isinstance(outputs, tuple):
            outputs = outputs[0]
        return predict_from_outputs(self.head, outputs, images, conf, iou, max_det, multi_label)


def _override(name: str, layers: list[Layer], tag: str, extra: Any) -> list[Layer]:
    """A table layer's args updated by keyword (``B3={"num_atoms": 256}``)."""
    if not isinstance(extra, dict):
        raise TypeError(f"{name}: {tag}={extra!r} must be a dict of block arguments")
    found = [layer for layer in layers if layer.tag == tag]
    if not found:
        tags = sorted(layer.tag for layer in layers if layer.tag)
        raise ValueError(f"{name}: unknown layer tag {tag!r}; tags are {tags}")
    return [
        Layer(**{**vars(layer), "args": {**layer.args, **extra}}) if layer.tag == tag else layer
        for layer in layers
    ]


def _cfg_text(architecture: str, table: dict[str, Any], cfg: Any) -> str:
    """The cfg text: the shipped file of ``architecture``, or ``cfg`` (path or text)."""
    from . import CFG_ARCHITECTURE, get_cfg

    if table.get("cfg"):
        if cfg is not None:
            raise ValueError(
                f"cfg= is not valid with architecture={architecture!r} (it ships its cfg); use "
                f"architecture={CFG_ARCHITECTURE!r} for a cfg file of your own"
            )
        return get_cfg(architecture)
    if isinstance(cfg, os.PathLike) or (isinstance(cfg, str) and "[" not in cfg):
        path = Path(cfg)
        if not path.is_file():
            raise FileNotFoundError(f"cfg={str(cfg)!r}: no such file (nor is it cfg text)")
        return path.read_text(encoding="utf-8")
    if not isinstance(cfg, str):
        raise ValueError(
            f"architecture={architecture!r} needs cfg= (a darknet cfg file or its text), got "
            f"{cfg!r}"
        )
    return cfg


def _darknet(
    architecture: str, table: dict[str, Any], text: str, num_classes: int, in_chans: int
) -> tuple[list[Layer], list[nn.Module], DarknetInfo]:
    name = table.get("cfg") or "cfg"
    return build_darknet(
        parse_cfg(text, name), num_classes, in_chans, name, features=table.get("features")
    )


def _backbone_features(layers: list[Layer], table: dict[str, Any]):
    strides = list(table.get("strides", (8, 16, 32)))
    tags = ("B3", "B4", "B5")
    found = {layer.tag: layer for layer in layers if layer.section == "backbone"}
    return [(found[t], s) for t, s in zip(tags, strides) if t in found]
