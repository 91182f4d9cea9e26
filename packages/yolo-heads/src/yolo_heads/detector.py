"""``YOLODetector``: a timm backbone, a neck and a head, with optional RD and implicit knowledge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ._checks import check_choice, check_images, check_int, check_targets
from .backbone import create_backbone
from .heads import HEADS
from .knowledge import attach_retriever_dictionary, implicit_feature_alignment
from .necks import MAX_DEPTH, NECKS
from .nms import predict_from_outputs

#: the head name of the classification head, retired: classification is timm's
RETIRED_HEAD = "classification"


def _rd_kwargs(rd: dict[str, Any] | bool) -> tuple[str | None, dict[str, Any]]:
    if rd is True:
        rd = {}
    if not isinstance(rd, dict):
        raise TypeError(
            f"rd={rd!r} is not valid; expected None, True or a dict such as "
            "{'at': 'layer2', 'num_atoms': 512, 'dictionary': atoms}"
        )
    rd = dict(rd)
    at = rd.pop("at", None)
    if rd.get("dictionary") is not None and "num_atoms" not in rd:
        rd["num_atoms"] = None  # take the count from the dictionary
    return at, rd


def _rd_config(rd: Any) -> Any:
    """``rd`` for a JSON build config: a dictionary's atoms become their count (the weights
    carry the atoms themselves)."""
    if isinstance(rd, dict):
        rd = dict(rd)
        atoms = rd.pop("dictionary", None)
        atoms = getattr(atoms, "atoms", atoms)
        if isinstance(atoms, torch.Tensor):
            rd.setdefault("num_atoms", atoms.shape[0])
    return rd


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _config(args: dict[str, Any]) -> dict[str, Any] | None:
    """The constructor arguments, JSON-serialisable, for rebuilding from a checkpoint."""
    names = [
        "backbone",
        "num_classes",
        "neck",
        "head",
        "implicit",
        "neck_channels",
        "neck_depth",
        "implicit_prior",
        "head_kwargs",
        "loss_kwargs",
        "in_chans",
    ]
    config = {n: args[n] for n in names}
    config["rd"] = _rd_config(args["rd"])
    config.update(args["backbone_kwargs"])
    return config if _jsonable(config) else None


class YOLODetector(nn.Module):
    """YOLO detector on any timm backbone (``features_only``, strides 8/16/32).

    Args:
        backbone: timm model name (e.g. ``"resnet18"``, ``"kw_resnet18"`` after
            ``import kernelwarehouse``) or a module returning a list of feature maps.
        num_classes: number of object classes.
        neck: ``"pan"`` (default) or ``"fpn"`` (see :data:`yolo_heads.necks.NECKS`).
        head: ``"anchor_free"`` (DFL + task-aligned assignment, YOLOv9), ``"anchor_based"``
            (three anchors per level, YOLOR/YOLOv7) or ``"yolov9"``. Classification is timm's
            (``timm.create_model("yolov9_c_cls")``, ``timm-knowledge train``).
        implicit: YOLOR implicit knowledge: feature alignment (ImplicitAdd) on every neck output
            and prediction refinement (add before, multiply after) on every output convolution.
            Needs ``implicit-knowledge``; ``implicit_prior`` picks its modelling.
        rd: a Retriever-Dictionary (needs ``rd-core``): ``True`` or a dict with ``at`` (module
            name inside the timm backbone; default the stage that produces the stride-8 map, the
            backbone middle layer that YOLO-RD uses), ``dictionary`` (atoms [N, C] or a
            ``dict_init`` Dictionary), ``num_atoms`` and any other ``RetrieverDictionary``
            argument.
        neck_channels: width of every neck level.
        neck_depth: bottlenecks per CSP block in the neck.
        head_kwargs: extra head arguments (e.g. ``reg_max``, ``anchors``, ``image_size_hint``).
        loss_kwargs: loss gains and options (see :mod:`yolo_heads.losses`).
        in_chans: input channels.
        **backbone_kwargs: passed to ``timm.create_model``.

    >>> model = YOLODetector("resnet18", num_classes=10, neck_channels=32)
    >>> outputs = model(torch.zeros(2, 3, 64, 64))
    >>> total, parts = model.loss(outputs, [
    ...     {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([3])},
    ...     {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    >>> sorted(parts)
    ['box', 'cls', 'dfl']
    >>> model.eval().predict(torch.zeros(1, 3, 64, 64), conf=0.0)[0]["boxes"].shape[1]
    4
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        num_classes: int = 80,
        neck: str = "pan",
        head: str = "anchor_free",
        implicit: bool = False,
        rd: dict[str, Any] | bool | None = None,
        neck_channels: int = 64,
        neck_depth: int = 1,
        implicit_prior: str = "vector",
        head_kwargs: dict[str, Any] | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        in_chans: int = 3,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        # Before the backbone is built: a bad neck or head argument fails at once.
        fn = "YOLODetector"
        check_choice("neck", neck, NECKS, fn=fn)
        if head == RETIRED_HEAD:
            raise ValueError(
                f"{fn}: head={head!r} was retired (one classification path): classify with a timm "
                "classifier, e.g. timm.create_model('yolov9_c_cls', num_classes=N) (the authors' "
                "YOLOv9 classifier), trained by `timm-knowledge train --model yolov9_c_cls "
                "--data-dir <image folder>`"
            )
        check_choice("head", head, HEADS, fn=fn)
        check_int("num_classes", num_classes, fn=fn)
        check_int("neck_channels", neck_channels, low=2, fn=fn)
        check_int("neck_depth", neck_depth, high=MAX_DEPTH, fn=fn)
        check_int("in_chans", in_chans, fn=fn)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.config = _config(locals()) if isinstance(backbone, str) else None
        self.head_name, self.implicit = head, implicit
        # Class names and dataset category ids per label, set from a checkpoint's config.json.
        self.label_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self.backbone = create_backbone(backbone, in_chans=in_chans, **backbone_kwargs)
        # Images come in as [0, 1]; the backbone sees them normalised as its timm config says
        # (ImageNet statistics by default), like a dictionary encoder reading the same layer.
        cfg = getattr(self.backbone.body, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", IMAGENET_DEFAULT_STD)
        if len(mean) != in_chans:
            mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.rd_at: str | None = None
        if rd:
            at, rd_kwargs = _rd_kwargs(rd)
            if at is None:
                # YOLO-RD's place: the backbone middle layer, the stage giving the stride-8 map.
                at = self.backbone.module_names[0]
                if at is None:
                    raise ValueError(
                        "rd has no 'at' and the backbone module has no feature_info naming the "
                        "stride-8 stage; give rd={'at': '<module name>', ...}"
                    )
            attach_retriever_dictionary(
                self.backbone.body, at, image_size=64, in_chans=in_chans, **rd_kwargs
            )
            self.rd_at = at
        self.neck = NECKS[neck](self.backbone.channels, channels=neck_channels, depth=neck_depth)
        self.alignment = (
            implicit_feature_alignment(self.neck.out_channels, implicit_prior) if implicit else None
        )
        self.head = HEADS[head](
            self.neck.out_channels,
            num_classes,
            strides=self.backbone.strides,
            implicit=implicit,
            implicit_prior=implicit_prior,
            **(head_kwargs or {}),
        )
        self._loss = self.head.loss_fn(**(loss_kwargs or {}))

    def knowledge_methods(self) -> list[str]:
        """The papers' methods this detector uses (``yolo-rd``, ``yolor``), for model cards."""
        return [name for name, used in (("yolo-rd", self.rd_at), ("yolor", self.implicit)) if used]

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimiser factory keeps out of weight decay: the implicit
        representations (constants whose scale is their meaning), besides biases and norms."""
        names = set()
        for module_name, module in self.named_modules():
            if type(module).__module__.startswith("implicit_knowledge"):
                prefix = f"{module_name}." if module_name else ""
                names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
        return names

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Neck outputs (after implicit feature alignment when enabled) for images in [0, 1]."""
        feats = self.neck(self.backbone((images - self.mean) / self.std))
        return self.alignment(feats) if self.alignment is not None else feats

    def forward(self, images: torch.Tensor) -> Any:
        """Raw head outputs for :meth:`loss` (one tensor per level).

        ``images`` are ``[B, in_chans, H, W]`` in [0, 1] with H and W multiples of 32; the
        backbone's normalisation (``mean``/``std`` buffers) is applied here.
        """
        check_images(images, self.in_chans, max(self.backbone.strides))
        return self.head(self.features(images))

    def loss(
        self, outputs: Any, targets: Sequence[dict[str, torch.Tensor]], image_size=None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its weighted parts.

        ``targets`` holds one dict per image with ``boxes`` [N, 4] (xyxy pixels of the input
        image) and ``labels`` [N]; ``N = 0`` is a background image. ``image_size`` (H, W) enables
        the check that boxes lie inside the image (inferred from the outputs when omitted).
        """
        if image_size is None:
            h, w = outputs[0].shape[-2:] if outputs[0].ndim == 4 else outputs[0].shape[2:4]
            image_size = (h * self.backbone.strides[0], w * self.backbone.strides[0])
        targets = check_targets(targets, outputs[0].shape[0], image_size, self.num_classes)
        return self._loss(outputs, targets)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        conf: float = 0.25,
        iou: float = 0.65,
        max_det: int = 300,
        multi_label: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        """Per-image ``boxes`` [K, 4] (xyxy pixels of the input), ``scores`` [K], ``labels`` [K].

        Runs in the module's current mode; call ``model.eval()`` first for inference.
        """
        outputs = self(images)
        return predict_from_outputs(self.head, outputs, images, conf, iou, max_det, multi_label)
