"""YOLO detectors from ``yolo-heads`` as named models in timm's factory.

Registered only when ``yolo-heads`` is installed (the ``detection`` extra).
The detectors take images in [0, 1] and normalise them inside with their backbone's statistics,
so their ``pretrained_cfg`` says mean 0 / std 1: timm's data pipeline must not normalise twice.
``features_only`` does not apply (a detector's outputs are per-level predictions).

* ``yolo_rd_resnet50``: ResNet-50 backbone, PAN neck, anchor-free head (YOLOv9 style), a
  Retriever-Dictionary on the stride-8 stage, the backbone middle layer where YOLO-RD puts it.
* ``yolor_resnet50``: ResNet-50 backbone, PAN neck, anchor-based head with YOLOR implicit
  knowledge (feature alignment on the neck outputs, prediction refinement on the head).

Example:
    >>> import timm, torch, timm_knowledge
    >>> model = timm.create_model("yolo_rd_resnet50", num_classes=3, rd={"num_atoms": 32}).eval()
    >>> len(model.predict(torch.zeros(1, 3, 64, 64)))
    1
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from yolo_heads import YOLODetector
from yolo_heads.registry import PRETRAINED_CFG

from ._registry import PAPER_MODELS, PaperModel, _hub_id, weights_hint

__all__ = ["DETECTORS"]

# name -> (YOLODetector arguments, method, source)
DETECTORS: dict[str, tuple[dict[str, Any], str, str]] = {
    "yolo_rd_resnet50": (
        {"backbone": "resnet50", "head": "anchor_free", "rd": True},
        "yolo-rd",
        "YOLO-RD (ICLR 2025): RD in the backbone middle layer of a YOLO detector",
    ),
    "yolor_resnet50": (
        {"backbone": "resnet50", "head": "anchor_based", "implicit": True},
        "yolor",
        "YOLOR (2021), sections 4.3-4.4: implicit feature alignment and prediction refinement",
    ),
}


def _drop_mismatched_head(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Another ``num_classes``: drop the head tensors whose shape changed (class outputs)."""
    own = model.state_dict()
    return {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith("head.") and k in own and own[k].shape != v.shape)
    }


def _build(defaults: dict[str, Any], **kwargs: Any) -> nn.Module:
    return YOLODetector(**{**defaults, **kwargs})


def _entrypoint(name: str, defaults: dict[str, Any]):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if kwargs.get("features_only"):
            raise ValueError(f"features_only=True: {name!r} is a detector; use its backbone")
        return build_model_with_cfg(
            partial(_build, defaults),
            name,
            pretrained,
            pretrained_filter_fn=_drop_mismatched_head,
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"YOLO detector {defaults} (yolo-heads)."
    return entrypoint


default_cfgs = generate_default_cfgs(
    {
        # yolo-heads' own detector config (inputs in [0, 1], normalised inside, head as the
        # classifier), plus the paper model's Hub repository and its ResNet stem
        f"{name}.coco": {
            **PRETRAINED_CFG,
            "hf_hub_id": _hub_id(name, "coco"),
            "first_conv": "backbone.body.conv1",
        }
        for name in DETECTORS
    }
)

for _name, (_defaults, _method, _source) in DETECTORS.items():
    globals()[_name] = register_model(weights_hint(_entrypoint(_name, _defaults)))
    PAPER_MODELS[_name] = PaperModel(
        name=_name,
        base=_defaults["backbone"],
        method=_method,
        build_args=dict(_defaults),
        source=_source,
    )
