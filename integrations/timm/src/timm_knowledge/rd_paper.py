"""Classification models with a Retriever-Dictionary (YOLO-RD) after a backbone stage.

The paper inserts the RD in the middle of the backbone (YOLO, its classification models on
CIFAR-100) and at the backbone-neck boundary of two-stage and DETR-like detectors; for timm's
classifiers this package places it after the third stage, where a ResNet-50 backbone hands
features to Faster R-CNN's FPN. N = 512 atoms, paper variant, unless told otherwise.

Build arguments (all recorded in ``config.json`` when published): ``num_atoms``, ``variant``
(``"paper"`` or ``"authors"``), ``at`` (another module name; ``rd_at`` is its deprecated
name), ``kernel_size``, ``residual``,
``trainable_dictionary``, ``fused_retriever``; ``dictionary`` takes initial atoms
(a tensor ``[N, C]`` or a dict-init artifact), whose values end up in the weights.

Example:
    >>> import timm, torch, timm_knowledge
    >>> model = timm.create_model("rd_resnet18", num_classes=10, num_atoms=32)
    >>> model(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

import inspect
import warnings
from functools import partial
from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from rd_core import attach

from ._registry import PAPER_MODELS, PaperModel, _hub_id, base_cfg, weights_hint

__all__ = ["RD_ARCHITECTURES"]

# name -> (timm base, module the RD follows)
RD_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "rd_resnet18": ("resnet18", "layer3"),
    "rd_resnet50": ("resnet50", "layer3"),
    "rd_convnext_tiny": ("convnext_tiny", "stages.2"),
}
# the probe forward that finds the channel count; channels do not depend on resolution
_PROBE_SIZE = 64


def _probe_size(in_chans: int) -> dict[str, Any]:
    # rd-core's vocabulary is image_size= / in_chans= (input_size=(C, H, W) is its deprecated
    # alias); an rd-core that predates them only takes input_size
    if "image_size" in inspect.signature(attach).parameters:
        return {"image_size": _PROBE_SIZE, "in_chans": in_chans}
    return {"input_size": (in_chans, _PROBE_SIZE, _PROBE_SIZE)}


def _build(
    base: str,
    default_at: str,
    *,
    num_atoms: int = 512,
    variant: str = "paper",
    at: str | None = None,
    dictionary: Any = None,
    kernel_size: int = 5,
    residual: float = 0.8,
    trainable_dictionary: bool = True,
    fused_retriever: bool = False,
    **kwargs: Any,
) -> nn.Module:
    model = timm.create_model(base, pretrained=False, **kwargs)
    attach(
        model,
        at=at or default_at,
        **_probe_size(kwargs.get("in_chans", 3)),
        num_atoms=num_atoms,
        variant=variant,
        dictionary=dictionary,  # atoms [N, C] or anything with .atoms (dict-init)
        kernel_size=kernel_size,
        residual=residual,
        trainable_dictionary=trainable_dictionary,
        fused_retriever=fused_retriever,
    )
    return model


def _deprecated_rd_at(name: str, kwargs: dict[str, Any]) -> None:
    """``rd_at=`` is the old name of ``at=`` (one release; FutureWarning)."""
    if "rd_at" not in kwargs:
        return
    if "at" in kwargs:
        raise TypeError(f"{name}: pass at= only ('rd_at' is its deprecated name)")
    warnings.warn(f"{name}: 'rd_at' is deprecated, use 'at'", FutureWarning, stacklevel=4)
    kwargs["at"] = kwargs.pop("rd_at")


def _entrypoint(name: str, base: str, at: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        # "variant" is also build_model_with_cfg's name for the architecture: bind it here
        rd_variant = kwargs.pop("variant", "paper")
        _deprecated_rd_at(name, kwargs)
        return build_model_with_cfg(
            partial(_build, base, at, variant=rd_variant),
            name,
            pretrained,
            # as timm builds the base: ResNet's stages are not flattened, ConvNeXt's are
            feature_cfg=dict(flatten_sequential=not base.startswith("resnet")),
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"timm {base} with a Retriever-Dictionary after {at!r} (YOLO-RD)."
    return entrypoint


default_cfgs = generate_default_cfgs(
    {
        f"{name}.in1k": {
            **base_cfg(base, interpolation="bicubic", crop_pct=0.875),
            "hf_hub_id": _hub_id(name, "in1k"),
            "paper_ids": "arXiv:2410.15346",
        }
        for name, (base, _) in RD_ARCHITECTURES.items()
    }
)

for _name, (_base, _at) in RD_ARCHITECTURES.items():
    globals()[_name] = register_model(weights_hint(_entrypoint(_name, _base, _at)))
    PAPER_MODELS[_name] = PaperModel(
        name=_name,
        base=_base,
        method="yolo-rd",
        build_args={"at": _at, "num_atoms": 512, "variant": "paper"},
        source="YOLO-RD (ICLR 2025), section 3; placement after the backbone's third stage",
    )
