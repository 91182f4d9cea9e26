"""KernelWarehouse paper configurations as named timm models, one name per (network, budget).

``kw_resnet18_1x`` is ``kernelwarehouse``'s ``kw_resnet18`` at budget b = 1 with the paper's
warehouse grouping. A name per budget (rather than a ``budget=`` argument) gives each
configuration its own ``pretrained_cfg`` and Hub repository, as timm does for model sizes.
Budgets are written as in the paper's tables: ``025x`` = 1/4x, ``050x`` = 1/2x, ``075x`` = 3/4x.

Example:
    >>> import timm, timm_knowledge
    >>> timm.list_models("kw_resnet18_*")
    ['kw_resnet18_1x', 'kw_resnet18_2x', 'kw_resnet18_4x', 'kw_resnet18_025x', 'kw_resnet18_050x']
    >>> timm.models.get_pretrained_cfg("kw_resnet18_1x").hf_hub_id
    'knowledge-vision/kw_resnet18_1x.in1k'
"""

from __future__ import annotations

import math
from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import nn

from kernelwarehouse.models import KW_ARCHITECTURES, create_kw_model

from ._registry import PAPER_MODELS, PaperModel, _hub_id, base_cfg, weights_hint

__all__ = ["KW_PAPER_BUDGETS", "budget_suffix"]

# (KW architecture, budget) -> parameters reported by the paper, in millions
# (Tables 1-4 and 11 of the KernelWarehouse paper).
KW_PAPER_BUDGETS: dict[tuple[str, float], float] = {
    ("kw_resnet18", 0.25): 4.08,
    ("kw_resnet18", 0.5): 7.43,
    ("kw_resnet18", 1.0): 11.93,
    ("kw_resnet18", 2.0): 23.24,
    ("kw_resnet18", 4.0): 45.86,
    ("kw_resnet50", 0.5): 17.64,
    ("kw_resnet50", 1.0): 28.05,
    ("kw_resnet50", 4.0): 102.02,
    ("kw_mobilenetv2_100", 0.5): 2.65,
    ("kw_mobilenetv2_100", 1.0): 5.17,
    ("kw_mobilenetv2_100", 4.0): 11.38,
    ("kw_mobilenetv2_050", 0.5): 1.47,
    ("kw_mobilenetv2_050", 1.0): 2.85,
    ("kw_mobilenetv2_050", 4.0): 4.65,
    ("kw_convnext_tiny", 1.0): 32.99,
    ("kw_deit_tiny_patch16_224", 1.0): 6.39,
    ("kw_deit_tiny_patch16_224", 4.0): 20.44,
    ("kw_deit_small_patch16_224", 0.75): 19.23,
    ("kw_deit_small_patch16_224", 1.0): 24.36,
}

# Preprocessing of the authors' training recipes: torchvision-style bilinear resize to 256 and
# centre crop 224 for ResNet / MobileNetV2; ConvNeXt and DeiT codebases use bicubic.
_RECIPE = {
    "resnet": dict(interpolation="bilinear", crop_pct=0.875),
    "mobilenetv2": dict(interpolation="bilinear", crop_pct=0.875),
    "convnext": dict(interpolation="bicubic", crop_pct=0.875),
    "deit": dict(interpolation="bicubic", crop_pct=0.875),
}


def budget_suffix(budget: float) -> str:
    """``1x``, ``4x``, ``050x`` (1/2x), ``025x`` (1/4x), ``075x`` (3/4x).

    Example:
        >>> [budget_suffix(b) for b in (0.25, 0.5, 1, 4)]
        ['025x', '050x', '1x', '4x']
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget={budget!r} is invalid: expected a finite number > 0")
    if not math.isfinite(budget):
        raise ValueError(f"budget={budget!r} is invalid: expected a finite number > 0")
    if budget >= 1 and float(budget).is_integer():
        return f"{int(budget)}x"
    return f"{round(budget * 100):03d}x"


def _family(kw_name: str) -> str:
    return next(f for f in _RECIPE if kw_name.removeprefix("kw_").startswith(f))


def _entrypoint(name: str, kw_name: str, budget: float):
    # a thin alias: kernelwarehouse builds every KW model (through timm's build_model_with_cfg);
    # only the budget and the pretrained cfg (this name's, pointing at its Hub repository) differ
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if "budget" in kwargs:
            raise ValueError(
                f"budget={kwargs['budget']!r}: {name!r} is the paper's b = {budget} "
                f"configuration; for another budget use {kw_name!r} (budget=...) or another name"
            )
        return create_kw_model(kw_name, budget, pretrained, variant=name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (
        f"KernelWarehouse {KW_ARCHITECTURES[kw_name][0]} at budget b = {budget} "
        f"(paper: {KW_PAPER_BUDGETS[(kw_name, budget)]}M parameters)."
    )
    return entrypoint


default_cfgs = generate_default_cfgs(
    {
        f"{kw}_{budget_suffix(b)}.in1k": {
            **base_cfg(KW_ARCHITECTURES[kw][0], **_RECIPE[_family(kw)]),
            "hf_hub_id": _hub_id(f"{kw}_{budget_suffix(b)}", "in1k"),
            "paper_ids": "arXiv:2308.08361",
            "notes": (f"KernelWarehouse b={b}; paper reports {params}M parameters",),
        }
        for (kw, b), params in KW_PAPER_BUDGETS.items()
    }
)

for (_kw, _b), _params in KW_PAPER_BUDGETS.items():
    _name = f"{_kw}_{budget_suffix(_b)}"
    globals()[_name] = register_model(weights_hint(_entrypoint(_name, _kw, _b)))
    PAPER_MODELS[_name] = PaperModel(
        name=_name,
        base=KW_ARCHITECTURES[_kw][0],
        method="kernelwarehouse",
        build_args={"budget": _b},
        paper_params_m=_params,
        source="KernelWarehouse (ICML 2024), Tables 1-4 and 11",
    )
