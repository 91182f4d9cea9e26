"""``yolo_detector`` in timm's factory, so a saved detector folder rebuilds anywhere timm runs.

A folder written by :func:`yolo_heads.save_checkpoint` holds timm's ``config.json``
(``architecture: yolo_detector`` and the detector's build arguments in ``model_args``) and
``model.safetensors``, which is what ``timm.create_model("local-dir:<folder>", pretrained=True)``
and ``timm.create_model("hf-hub:<repo>", pretrained=True)`` read.

The authors' detectors (:mod:`yolo_heads.architectures`: ``yolov9_t`` ... ``yolo_rd_9c``,
``yolov7``, YOLOR's ``yolor_csp`` ... ``yolor_w6``; ``yolo_cfg`` with ``cfg=``) are registered
by name too; their ``features_only`` gives the backbone's stride 8/16/32(/64) maps (the tables'
B3/B4/B5) through ``forward_intermediates``. The authors' classifier ``yolov9_c_cls`` (and
``yolo_rd_9c_cls``, with rd-9c's Retriever-Dictionary) is a plain timm classifier
(:class:`~yolo_heads.architectures.GraphClassifier`): ``num_classes``, ``reset_classifier``,
``features_only``, and ``timm-knowledge train`` trains it.

Example:
    >>> import timm, yolo_heads
    >>> model = timm.create_model("yolo_detector", num_classes=3, neck_channels=16)
    >>> type(model).__name__, model.pretrained_cfg["architecture"]
    ('YOLODetector', 'yolo_detector')
    >>> backbone = timm.create_model("yolov9_t", features_only=True)
    >>> backbone.feature_info.channels(), backbone.feature_info.reduction()
    ([64, 96, 128], [8, 16, 32])
    >>> classifier = timm.create_model("yolov9_c_cls", num_classes=10)
    >>> classifier.get_classifier(), classifier.pretrained_cfg["classifier"]
    (Linear(in_features=1024, out_features=10, bias=True), 'layers.9.head')
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .architectures import (
    GraphClassifier,
    GraphDetector,
    get_architecture,
    list_architectures,
    list_classifiers,
)
from .detector import YOLODetector

ARCHITECTURE = "yolo_detector"

# The detector normalises inside (its backbone's statistics), so timm's data pipeline must
# not: mean 0, std 1.
PRETRAINED_CFG: dict[str, Any] = {
    "input_size": (3, 640, 640),
    "fixed_input_size": False,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
    "crop_pct": 1.0,
    "num_classes": 80,
    "classifier": "head",
    "first_conv": None,
    "license": "apache-2.0",
}


def _classifier_cfg(name: str) -> dict[str, Any]:
    """A classifier table's timm config: [0, 1] images (mean 0, std 1), its Linear named."""
    head = len(get_architecture(name)["backbone"]) + len(get_architecture(name).get("head", []))
    return dict(
        PRETRAINED_CFG,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        first_conv="layers.0.conv.conv",
        classifier=f"layers.{head - 1}.head",
    )


# The authors' models take [0, 1] images without normalisation, as the generic detector does.
default_cfgs = generate_default_cfgs(
    {
        ARCHITECTURE: dict(PRETRAINED_CFG),
        **{
            name: dict(
                PRETRAINED_CFG,
                first_conv=get_architecture(name).get("first_conv", "layers.0.conv.conv"),
                classifier=None,
            )
            for name in list_architectures()
        },
        **{name: _classifier_cfg(name) for name in list_classifiers()},
    }
)


@register_model
def yolo_detector(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A :class:`~yolo_heads.YOLODetector` from its keyword arguments (see its docstring)."""
    if kwargs.get("features_only"):
        raise ValueError("features_only=True: yolo_detector is a detector; build its backbone")
    return build_model_with_cfg(YOLODetector, ARCHITECTURE, pretrained, **kwargs)


def _architecture_entrypoint(name: str):
    # every backbone feature: strides 8/16/32, and 64 for YOLOR's P6 / W6
    out_indices = tuple(range(len(get_architecture(name).get("features") or (8, 16, 32))))
    model_class = GraphClassifier if name in list_classifiers() else GraphDetector

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build_model_with_cfg(
            partial(model_class, name),
            name,
            pretrained,
            feature_cfg={"feature_cls": "getter", "out_indices": out_indices},
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    source = get_architecture(name).get("source")
    entrypoint.__doc__ = (
        f"The authors' {source} as a {model_class.__name__} (yolo-heads)."
        if source
        else "yolov9_c_cls with rd-9c's Retriever-Dictionary at B3 (yolo-heads)."
        if model_class is GraphClassifier
        else "A GraphDetector from a darknet cfg file: cfg=<path or text> (yolo-heads)."
    )
    return register_model(entrypoint)


for _name in [*list_architectures(), *list_classifiers()]:
    globals()[_name] = _architecture_entrypoint(_name)
