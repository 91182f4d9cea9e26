"""``GraphClassifier``: the authors' YOLOv9 classifier (v9-c-cls) from a layer table, as a
plain timm classifier.

A classifier table (``yolov9_c_cls``, ``yolo_rd_9c_cls`` in ``yolov9.yaml``) is a backbone
followed by one :class:`Classification` layer (the authors' head: Conv 1x1 to 1024 channels with
BatchNorm and SiLU, global average pool, Linear). The model has timm's classifier interface
(``forward_features`` / ``forward_head``, ``get_classifier`` / ``reset_classifier``,
``num_features``, ``feature_info`` and ``forward_intermediates`` for ``features_only``), so
``timm.create_model("yolov9_c_cls", num_classes=10)`` trains with ``timm-knowledge train``.

    >>> import torch
    >>> model = GraphClassifier("yolov9_c_cls", num_classes=10).eval()
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 10])
    >>> model.reset_classifier(0)
    >>> model(torch.zeros(1, 3, 64, 64)).shape  # pooled features (timm's num_classes=0)
    torch.Size([1, 1024])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_fraction, check_images, check_int
from .blocks import BLOCKS, Conv, RepConv
from .graph import BackboneFeatures, Layer, LayerGraph, parse_table

__all__ = ["Classification", "GraphClassifier", "is_classifier_table"]

HEAD_BLOCK = "Classification"


class Classification(nn.Module):
    """The authors' classification head: ``Linear(pool(Conv_1x1(x)))``.

    ``conv`` is a :class:`~yolo_heads.architectures.blocks.Conv` (BatchNorm eps 1e-3, SiLU) to
    ``neck_channels`` (1024 in v9-c-cls), ``pool`` a global average pool, ``head`` the Linear
    (their attribute names, so their weights load as they are).

    >>> Classification(512, num_classes=80)(torch.zeros(2, 512, 2, 2)).shape
    torch.Size([2, 80])
    """

    def __init__(self, in_channels: int, num_classes: int = 80, neck_channels: int = 1024) -> None:
        super().__init__()
        self.conv = Conv(in_channels, neck_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = nn.Linear(neck_channels, num_classes)
        self.out_channels = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv(x)).flatten(1))


BLOCKS[HEAD_BLOCK] = Classification


def is_classifier_table(table: Mapping[str, Any]) -> bool:
    """Whether a layer table ends in a :class:`Classification` layer (a classifier)."""
    rows = [row for section in ("backbone", "neck", "head") for row in table.get(section) or []]
    return any(isinstance(row, list) and len(row) > 1 and row[1] == HEAD_BLOCK for row in rows)


class GraphClassifier(BackboneFeatures, nn.Module):
    """A classifier from a layer table (see :mod:`yolo_heads.architectures.graph`).

    Args:
        architecture: a classifier table: ``yolov9_c_cls`` (the authors' v9-c-cls) or
            ``yolo_rd_9c_cls`` (the same with the Retriever-Dictionary block of rd-9c at B3).
        num_classes: class count (the authors' default 80); 0 gives the pooled features.
        in_chans: input channels.
        drop_rate: dropout before the Linear (timm's ``drop_rate``; the authors' have none).
        dictionary: initial atoms of the table's Retriever-Dictionary (``yolo_rd_9c_cls``): a
            tensor ``[N, C]``, a dict-init ``Dictionary`` or the path of its ``.safetensors``
            artifact; the atom count follows it (vision initialisation, YOLO-RD section 3.2).
        auxiliary: accepted for the same call as :class:`GraphDetector`; classifier tables have
            no auxiliary branch.
        **layer_args: per-tag block arguments, e.g. ``B3={"num_atoms": 256}``.

    Images are ``[B, C, H, W]`` in [0, 1], not normalised, as the authors' models expect; any
    size works (the head pools globally), 32 px upwards keeps every stage above 1 x 1.
    """

    def __init__(
        self,
        architecture: str,
        num_classes: int = 80,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        dictionary: Any = None,
        auxiliary: bool = False,
        **layer_args: dict[str, Any],
    ) -> None:
        from . import get_architecture
        from .detector import _backbone_features, _override

        super().__init__()
        fn = "GraphClassifier"
        table = get_architecture(architecture)
        if not is_classifier_table(table):
            raise ValueError(
                f"architecture={architecture!r} is a detector table; build it with GraphDetector"
            )
        check_int("num_classes", num_classes, low=0, fn=fn)
        check_int("in_chans", in_chans, fn=fn)
        self.drop_rate = check_fraction("drop_rate", drop_rate, fn=fn)
        layers = parse_table(architecture, table)
        for tag, extra in layer_args.items():
            layers = _override(architecture, layers, tag, extra)
        rd_tag, atoms = None, None
        if dictionary is not None:
            rd_tag, atoms = _rd_layer(architecture, layers), _atoms(dictionary)
            extra = {"num_atoms": int(atoms.shape[0]), "rd_kwargs": {"dictionary": atoms}}
            layers = _override(architecture, layers, rd_tag, extra)
        if layers[-1].block != HEAD_BLOCK:
            raise ValueError(f"architecture {architecture!r}: the last layer is not {HEAD_BLOCK}")
        modules, channels = [], {-1: in_chans}
        for layer in layers:
            ins = [channels[s] for s in layer.sources]
            args = dict(layer.args)
            if layer.block == HEAD_BLOCK:
                args["num_classes"] = max(num_classes, 1)
            module = BLOCKS[layer.block](ins if layer.many else ins[0], **args)
            modules.append(module)
            channels[layer.index] = module.out_channels
        self.architecture, self.in_chans = architecture, in_chans
        self.layers = nn.ModuleList(modules)
        self.graph = LayerGraph(layers)
        self.num_features = self.classification.head.in_features
        self.num_classes = num_classes
        if num_classes == 0:
            self.classification.head = nn.Identity()
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "in_chans": in_chans,
            "drop_rate": drop_rate,
            **layer_args,
        }
        if rd_tag is not None:  # the weights carry the atoms; the config only their count
            self.config[rd_tag] = {**layer_args.get(rd_tag, {}), "num_atoms": atoms.shape[0]}
        self.feature_info = [
            {
                "num_chs": self.layers[layer.index].out_channels,
                "reduction": reduction,
                "module": f"layers.{layer.index}",
                "index": layer.index,
            }
            for layer, reduction in _backbone_features(layers, table)
        ]
        self.rd_at = next(
            (f"layers.{layer.index}" for layer in layers if layer.block.endswith("RD")), None
        )
        self.label_names: list[str] | None = None

    @property
    def classification(self) -> Classification:
        """The head layer (``conv``, ``pool``, ``head``)."""
        return self.layers[len(self.graph.specs) - 1]

    # ------------------------------------------------------------------ timm classifier API
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The head's 1x1 convolution output ``[B, num_features, H/32, W/32]``."""
        check_images(images, self.in_chans, 1)  # any size: the head pools globally
        last = len(self.graph.specs) - 1
        source = self.graph.specs[last].sources[0]
        x = self.graph.run(self.layers, images, last, (source,))[source]
        return self.classification.conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and the Linear (``pre_logits``: the pooled features)."""
        x = self.classification.pool(x).flatten(1)
        x = F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x
        return x if pre_logits else self.classification.head(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` (pooled features when ``num_classes`` is 0)."""
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm's API)."""
        return self.classification.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new Linear for ``num_classes`` (0: none, the model returns pooled features)."""
        check_int("num_classes", num_classes, low=0, fn="reset_classifier")
        if global_pool not in (None, "avg"):
            raise ValueError(
                f"global_pool={global_pool!r} is not valid; this model pools by average ('avg')"
            )
        self.num_classes = self.config["num_classes"] = num_classes
        head = self.classification
        device = head.conv.conv.weight.device
        head.head = (
            nn.Linear(self.num_features, num_classes).to(device) if num_classes else nn.Identity()
        )

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
        **_: Any,
    ) -> Any:
        """timm's feature API over the backbone (``feature_info``: strides 8/16/32); with
        ``intermediates_only=False`` also the final features, as ``(final, intermediates)``."""
        picks = self._feature_picks(len(self.feature_info) if indices is None else indices)
        wanted = tuple(self.feature_info[i]["index"] for i in picks)
        if intermediates_only:
            out = self.graph.run(self.layers, x, max(wanted) + 1, wanted)
            return [out[i] for i in wanted]
        last = len(self.graph.specs) - 1
        source = self.graph.specs[last].sources[0]
        out = self.graph.run(self.layers, x, last, (*wanted, source))
        return self.classification.conv(out[source]), [out[i] for i in wanted]

    # ------------------------------------------------------------------ the authors' weights
    def reparameterize(self) -> GraphClassifier:
        """Fold every RepConv into one convolution (eval-mode outputs unchanged); returns self."""
        for module in self.modules():
            if isinstance(module, RepConv):
                module.reparameterize()
        return self

    def drop_auxiliary(self) -> GraphClassifier:
        """Nothing to drop (classifier tables have no auxiliary branch), so
        :func:`~yolo_heads.fuse_for_inference` treats it as the detectors; returns self."""
        return self

    def forward_tags(self, images: torch.Tensor) -> dict[str, Any]:
        """Every tagged layer's output (``Main``: the logits, ``B3`` ...)."""
        tagged = {layer.index: layer.tag for layer in self.graph.specs if layer.tag}
        out = self.graph.run(self.layers, images, len(self.graph.specs), tuple(tagged))
        return {tagged[i]: value for i, value in out.items()}

    def knowledge_methods(self) -> list[str]:
        """The papers' methods this classifier uses (``yolo-rd``), for model cards."""
        return ["yolo-rd"] if self.rd_at else []


def _rd_layer(architecture: str, layers: list[Layer]) -> str:
    """The tag of the table's Retriever-Dictionary block (where ``dictionary=`` goes)."""
    found = [layer.tag for layer in layers if layer.block.endswith("RD")]
    if not found or found[0] is None:
        raise ValueError(
            f"dictionary= is only for a table with a Retriever-Dictionary block (e.g. "
            f"'yolo_rd_9c_cls'); {architecture!r} has none"
        )
    return found[0]


def _atoms(dictionary: Any) -> torch.Tensor:
    """Atoms ``[N, C]`` from a tensor, a dict-init Dictionary or its artifact's path."""
    if isinstance(dictionary, (str, os.PathLike)):
        from ..config import load_dictionary

        dictionary = load_dictionary(dictionary)
    atoms = getattr(dictionary, "atoms", dictionary)
    if not isinstance(atoms, torch.Tensor) or atoms.ndim != 2:
        raise TypeError(
            f"dictionary={type(dictionary).__name__} is not valid; expected atoms [N, C], a "
            "dict-init Dictionary or the path of its .safetensors artifact"
        )
    return atoms.detach().float()


def fit_authors_state(
    model: GraphClassifier | str, state: dict[str, torch.Tensor], strict_classes: bool = False
) -> tuple[GraphClassifier, list[str]]:
    """``state`` (the authors' weights with this project's keys, ``layers.<i>.*``) checked
    against ``model`` (built from its name when a string); with another class count the Linear
    keeps the model's initialisation (``strict_classes=True`` refuses). Returns the model and
    the keys whose values were replaced by the model's own; ``state`` is completed in place.
    Used by :func:`yolo_heads.official.load`."""
    from ..official import to_authors_key

    if isinstance(model, str):
        model = GraphClassifier(model)
    own = model.state_dict()
    name = model.architecture
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(
            f"source does not fit {name}: its key {to_authors_key(unexpected[0])!r} "
            f"({len(unexpected)} such keys) has no place in the model"
        )
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"source does not fit {name}: it has no {to_authors_key(missing[0])!r} "
            f"({len(missing)} keys missing)"
        )
    head = f"layers.{len(model.graph.specs) - 1}.head."
    skipped = []
    for key, value in state.items():
        if value.shape == own[key].shape:
            continue
        if strict_classes or not key.startswith(head):
            raise ValueError(
                f"source does not fit {name}: {to_authors_key(key)!r} has shape "
                f"{tuple(value.shape)}, the model {tuple(own[key].shape)}"
            )
        skipped.append(key)
        state[key] = own[key]
    return model, skipped
