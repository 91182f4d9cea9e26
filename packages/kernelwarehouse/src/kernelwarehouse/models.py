"""The paper's architectures in timm's factory, built from timm's own models.

``timm.create_model("kw_resnet18", budget=0.5, num_classes=10)`` builds timm's ``resnet18`` with
the usual timm keyword arguments, then converts it with the paper's warehouse grouping
(Appendix A.3). ``features_only=True`` wraps the converted model in timm's feature extractor, so
the warehouses (and a checkpoint of the classifier) stay the same.

Grouping rules (registered in :data:`kernelwarehouse.GROUPING_RULES`):

* ``resnet``: one warehouse per stage, the first convolution of a stage (and its down-sampling
  shortcut) moved to the previous stage (Table 15); the stem stays static, and in bottleneck
  ResNets so do the first block's 1x1 convolution and stride-1 shortcut (authors' code).
* ``mobilenetv2``: all convolutions; per stage of the authors' code, depth-wise and point-wise
  layers apart; for ``b > 1`` expansion and projection point-wise layers apart as well.
* ``convnext``: all convolutions and the blocks' point-wise (linear) layers; separate warehouses
  for the stem, each down-sampling layer, and per stage the depth-wise and the point-wise layers,
  stage 3's nine blocks split into three stages of three. With the attention reduction 1/32 of
  ``kw_convnext_tiny`` this gives the paper's 32.99M (1x) and 24.53M (3/4x) exactly.
  ``convnext_authors`` keeps stage 3 whole, as the authors' released config (39.37M at 1x with
  their reduction 1/16 and LayerNorm attention).
* ``deit``: the blocks split into two stages of equal depth; per stage one warehouse for the
  multi-head self-attention layers (value projection and attention output projection) and one
  for the MLP layers (fc1, fc2); query and key stay static (the fused qkv projection is split).
  The paper gives no DeiT configuration; this one lands within 1.3% of its four counts.
* ``mobilenetv2_half``: the authors' 1/2x MobileNetV2 (all depth-wise layers, the point-wise
  layers of the last stage, the head and the classifier; attention reduction 1/32).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import timm
import torch
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)
from torch import nn

from .convert import ConversionPlan, GroupingRule, convert, register_grouping
from .partition import check_budget

__all__ = ["FEATURE_CFGS", "KW_ARCHITECTURES", "QKVWithKWValue", "create_kw_model"]

# ---------------------------------------------------------------------------- grouping rules
_RESNET = re.compile(r"^layer(\d)\.(\d+)\.(conv1|conv2|conv3|downsample\.0)$")


@register_grouping("resnet")
def resnet_groups(model: nn.Module, name: str, module: nn.Module) -> str | None:
    match = _RESNET.match(name)
    if match is None:
        return None  # stem convolution and classifier stay static
    stage, block, part = int(match[1]) - 1, int(match[2]), match[3]
    if part == "downsample.0":
        if tuple(module.stride) == (1, 1):
            return None  # authors: only strided shortcuts are KW layers
        return f"stage{stage - 1}"
    if part == "conv1" and block == 0:
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        if hasattr(parent, "conv3") and stage == 0:
            return None  # bottleneck: no previous stage to hand over to
        return f"stage{max(stage - 1, 0)}"
    return f"stage{stage}"


# authors' MobileNetV2 stages per timm block index (their kw_stage_setting)
_MBV2_STAGE = (1, 2, 3, 4, 5, 6, 6)
_MBV2 = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_pw|conv_dw|conv_pwl)$")


def _mobilenetv2_groups(split_pointwise: bool) -> GroupingRule:
    def rule(model: nn.Module, name: str, module: nn.Module) -> str | None:
        if name == "conv_stem":
            return "stem"
        if name == "conv_head":
            return f"stage{_MBV2_STAGE[-1]}:" + ("pw_project" if split_pointwise else "pw")
        match = _MBV2.match(name)
        if match is None:
            return None
        idx, i, part = int(match[1]), int(match[2]), match[3]
        handover = i == 0 and idx > 0 and _MBV2_STAGE[idx] != _MBV2_STAGE[idx - 1]
        stage = _MBV2_STAGE[idx] - 1 if handover else _MBV2_STAGE[idx]
        if part == "conv_dw":
            return f"stage{stage}:dw"
        if not split_pointwise:
            return f"stage{stage}:pw"
        # the first block has no expansion: its conv_pw is the projection
        expand = part == "conv_pw" and idx > 0
        return f"stage{stage}:" + ("pw_expand" if expand else "pw_project")

    return rule


register_grouping("mobilenetv2")(_mobilenetv2_groups(split_pointwise=False))


@register_grouping("mobilenetv2_half")
def mobilenetv2_half_groups(model: nn.Module, name: str, module: nn.Module) -> str | None:
    if name == "classifier":
        return "classifier"
    group = _mobilenetv2_groups(split_pointwise=True)(model, name, module)
    if group is None or group == "stem" or group.endswith(":dw"):
        return group
    return group if group.startswith(f"stage{_MBV2_STAGE[-1]}:") else None


register_grouping("mobilenetv2_split")(_mobilenetv2_groups(split_pointwise=True))

_CONVNEXT = re.compile(
    r"^stages\.(\d+)\.(?:blocks\.(\d+)\.(conv_dw|mlp\.fc1|mlp\.fc2)|downsample\.1)$"
)


def _convnext_groups(split_stage3: bool) -> GroupingRule:
    def rule(model: nn.Module, name: str, module: nn.Module) -> str | None:
        if name == "stem.0":
            return "stem"
        match = _CONVNEXT.match(name)
        if match is None:
            return None
        stage = int(match[1])
        if match[3] is None:
            return f"downsample{stage}"
        block, part = int(match[2]), match[3]
        label = str(stage)
        if split_stage3 and stage == 2:
            label += "abc"[min(block // 3, 2)]
        return f"stage{label}:" + ("dw" if part == "conv_dw" else "pw")

    return rule


register_grouping("convnext")(_convnext_groups(split_stage3=True))
register_grouping("convnext_authors")(_convnext_groups(split_stage3=False))

_DEIT = re.compile(r"^blocks\.(\d+)\.(attn\.qkv\.v|attn\.proj|mlp\.fc1|mlp\.fc2)$")
_DEIT_STAGES = 2  # warehouses are shared across depth / 2 consecutive blocks


@register_grouping("deit")
def deit_groups(model: nn.Module, name: str, module: nn.Module) -> str | None:
    match = _DEIT.match(name)
    if match is None:
        return None
    depth = len(model.blocks)
    stage = min(int(match[1]) * _DEIT_STAGES // depth, _DEIT_STAGES - 1)
    return f"stage{stage}:" + ("mlp" if match[2].startswith("mlp") else "attn")


class QKVWithKWValue(nn.Module):
    """A fused ``qkv`` projection split so that only the value part becomes a KW layer.

    ``qk`` stays a static ``nn.Linear`` (dim -> 2 dim); ``v`` (dim -> dim) is converted. The
    output is ``cat([q, k, v], -1)``, so timm's attention uses it unchanged.

    Example:
        >>> qkv = nn.Linear(8, 24)
        >>> split = QKVWithKWValue.from_linear(qkv)
        >>> x = torch.randn(2, 3, 8)
        >>> torch.allclose(split(x), qkv(x))
        True
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.qk = nn.Linear(dim, 2 * dim, bias=bias)
        self.v = nn.Linear(dim, dim, bias=bias)

    @classmethod
    def from_linear(cls, qkv: nn.Linear) -> QKVWithKWValue:
        dim = qkv.in_features
        if qkv.out_features != 3 * dim:
            raise ValueError(
                f"qkv has out_features={qkv.out_features}; expected 3 x in_features = {3 * dim}"
            )
        split = cls(dim, qkv.bias is not None).to(qkv.weight.device, qkv.weight.dtype)
        with torch.no_grad():
            split.qk.weight.copy_(qkv.weight[: 2 * dim])
            split.v.weight.copy_(qkv.weight[2 * dim :])
            if qkv.bias is not None:
                split.qk.bias.copy_(qkv.bias[: 2 * dim])
                split.v.bias.copy_(qkv.bias[2 * dim :])
        return split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.qk(x), self.v(x)], dim=-1)


def _split_qkv(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if name.endswith("attn.qkv") and type(module) is nn.Linear:
            model.set_submodule(name, QKVWithKWValue.from_linear(module))


# ---------------------------------------------------------------------------- factory
Recipe = Callable[[float], tuple[str, dict[str, Any]]]


def _resnet_recipe(budget: float) -> tuple[str, dict[str, Any]]:
    return "resnet", {}


def _resnet50_recipe(budget: float) -> tuple[str, dict[str, Any]]:
    # authors' 1/2x ResNet50: other layers' cells reach the attention through a small basis
    return "resnet", ({"nonlocal_basis_ratio": 0.0625} if budget < 1 else {})


def _mobilenetv2_recipe(budget: float) -> tuple[str, dict[str, Any]]:
    if budget == 0.5:
        last = f"stage{_MBV2_STAGE[-1]}:pw*"
        return "mobilenetv2_half", {
            "budget": {last: 0.5, "classifier": 0.5, "*": 1.0},
            "cell_in_ratio": {last: 0.5, "classifier": 0.025, "*": 1.0},
            "cell_out_ratio": {last: 0.5, "*": 1.0},
            "reduction": 1 / 32,
            "exclude": [],
        }
    return ("mobilenetv2_split" if budget > 1 else "mobilenetv2"), {}


# attention reduction 1/32 (hidden width max(c / 32, 16)): the paper's 32.99M (1x) and 24.53M
# (3/4x) exactly; the authors' released 1x config uses 1/16 (39.37M with their grouping)
_CONVNEXT_REDUCTION = 1 / 32


def _convnext_recipe(budget: float) -> tuple[str, dict[str, Any]]:
    if budget == 0.75:
        # paper: 1/2x (half cells) for the point-wise layers of the last two stages, 1x elsewhere
        half = {"stage2c:pw": 0.5, "stage3:pw": 0.5}
        return "convnext", {
            "budget": {**half, "*": 1.0},
            "cell_in_ratio": {**half, "*": 1.0},
            "cell_out_ratio": {**half, "*": 1.0},
            "reduction": _CONVNEXT_REDUCTION,
        }
    return "convnext", {"reduction": _CONVNEXT_REDUCTION}


def _deit_recipe(budget: float) -> tuple[str, dict[str, Any]]:
    if budget == 0.75:
        # as the paper's ConvNeXt 3/4x: 1/2x with half cells for the MLP (point-wise) warehouses,
        # 1x elsewhere
        half = {"*:mlp": 0.5}
        return "deit", {
            "budget": {**half, "*": 1.0},
            "cell_in_ratio": {**half, "*": 1.0},
            "cell_out_ratio": {**half, "*": 1.0},
        }
    # other budgets: whole-gcd cells (halving them multiplies the attention outputs by four)
    return "deit", {"cell_in_ratio": 1.0, "cell_out_ratio": 1.0}


# name -> (timm base model, recipe(budget) -> (grouping rule, convert options), preparation,
# timm feature wrapper kind)
_Arch = tuple[str, Recipe, Callable[[nn.Module], None] | None, str]

KW_ARCHITECTURES: dict[str, _Arch] = {
    "kw_resnet18": ("resnet18", _resnet_recipe, None, "list"),
    "kw_resnet50": ("resnet50", _resnet50_recipe, None, "list"),
    "kw_mobilenetv2_100": ("mobilenetv2_100", _mobilenetv2_recipe, None, "flat"),
    "kw_mobilenetv2_050": ("mobilenetv2_050", _mobilenetv2_recipe, None, "flat"),
    "kw_convnext_tiny": ("convnext_tiny", _convnext_recipe, None, "flat"),
    "kw_deit_tiny_patch16_224": ("deit_tiny_patch16_224", _deit_recipe, _split_qkv, "getter"),
    "kw_deit_small_patch16_224": ("deit_small_patch16_224", _deit_recipe, _split_qkv, "getter"),
}

# pretrained_cfg keys that point at weights (timm's _resolve_pretrained_source)
_WEIGHT_SOURCES = ("hf_hub_id", "url", "file", "state_dict", "hf_hub_filename")
# timm's features_only wrappers per architecture kind (build_model_with_cfg's feature_cfg, as
# timm's own resnet / efficientnet / convnext / vision_transformer builders pass them)
FEATURE_CFGS: dict[str, dict[str, Any]] = {
    "list": {},
    "flat": {"flatten_sequential": True},
    "getter": {"feature_cls": "getter", "out_indices": 3},
}


def _base_cfg(name: str) -> dict[str, Any]:
    # the base model's cfg describes the input and the head; its weights are not this model's
    base = timm.models.get_pretrained_cfg(KW_ARCHITECTURES[name][0]).to_dict()
    return {k: v for k, v in base.items() if k not in (*_WEIGHT_SOURCES, "tag", "architecture")}


default_cfgs = generate_default_cfgs({name: _base_cfg(name) for name in KW_ARCHITECTURES})


def _converted(
    name: str, budget: float, grouping: str | None, kw_kwargs: dict[str, Any] | None, **kwargs
) -> nn.Module:
    """timm's base model, converted with the paper's grouping (``build_model_with_cfg``'s
    model class: it gets timm's keyword arguments without the ``features_only`` ones)."""
    base, recipe, prepare, _ = KW_ARCHITECTURES[name]
    model = timm.create_model(base, pretrained=False, **kwargs)
    if prepare is not None:
        prepare(model)
    rule, options = recipe(float(budget))
    options = {"budget": budget, **options, **(kw_kwargs or {})}
    model.kw_plan = convert(model, groups=grouping or rule, **options)
    return model


def _drop_mismatched_head(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Drop classifier tensors whose shape differs from ``model``'s (another ``num_classes``).

    timm removes ``<classifier>.weight`` / ``.bias`` itself; a KW classifier (MobileNetV2 1/2x)
    holds its kernel as warehouse cells and an attention whose size follows the class count.
    """
    head = model.pretrained_cfg.get("classifier") or ""
    own = model.state_dict()
    return {
        k: v
        for k, v in state_dict.items()
        if not (head and k.startswith(head + ".") and k in own and own[k].shape != v.shape)
    }


def create_kw_model(
    name: str,
    budget: float = 1.0,
    pretrained: bool = False,
    grouping: str | None = None,
    kw_kwargs: dict[str, Any] | None = None,
    variant: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name`` (a key of :data:`KW_ARCHITECTURES`) at ``budget``, through timm's
    ``build_model_with_cfg`` (every KW model is built here, the paper-budget names of
    timm-knowledge included).

    Args:
        budget: parameter budget b (> 0).
        pretrained: load weights named by the pretrained cfg (``variant``'s, or one timm passes
            for ``"hf-hub:<repo>"`` / ``"local-dir:<path>"`` models saved with
            ``timm.models.save_for_hf``). Without such a source it is an error; the authors'
            checkpoints come in through :func:`kernelwarehouse.official.load`.
        grouping: override the paper's grouping rule (a registered rule name).
        kw_kwargs: :func:`kernelwarehouse.convert` options (cell ratios, reduction, ...).
        variant: the registered name whose pretrained cfg the model gets (default ``name``;
            timm-knowledge's ``kw_resnet18_1x`` passes its own).
        **kwargs: timm's keyword arguments (num_classes, in_chans, drop_rate, drop_path_rate,
            features_only, out_indices, pretrained_cfg, ...).

    The conversion plan is kept as ``model.kw_plan``. ``model.pretrained_cfg["architecture"]`` is
    the variant and timm records ``budget`` among the build arguments, so a saved model is
    rebuilt by ``timm.create_model("hf-hub:..." / "local-dir:...", pretrained=True)``.
    """
    if name not in KW_ARCHITECTURES:
        raise ValueError(f"name={name!r} is not a KW architecture; valid: {list(KW_ARCHITECTURES)}")
    budget = check_budget(budget)
    variant = variant or name
    if pretrained:
        # the cfg build_model_with_cfg will load from (a tag, a dict, or the variant's default)
        cfg = resolve_pretrained_cfg(
            variant, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")
        ).to_dict()
        if not any(cfg.get(key) for key in _WEIGHT_SOURCES):
            raise ValueError(
                f"pretrained=True: no pretrained weights ship for {variant!r}; build it with "
                "pretrained=False and load the authors' checkpoint with "
                "kernelwarehouse.official.load, or create it from a saved copy "
                "('hf-hub:<repo>' or 'local-dir:<path>')"
            )
    plans: list[ConversionPlan] = []

    def build(**timm_kwargs: Any) -> nn.Module:
        model = _converted(name, budget, grouping, kw_kwargs, **timm_kwargs)
        plans.append(model.kw_plan)
        return model

    model = build_model_with_cfg(
        build,
        variant,
        pretrained,
        feature_cfg=dict(FEATURE_CFGS[KW_ARCHITECTURES[name][3]]),
        pretrained_filter_fn=_drop_mismatched_head,
        **kwargs,
    )
    model.kw_plan = plans[0]  # also on timm's features_only wrapper
    return model


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, budget: float = 1.0, **kwargs: Any) -> nn.Module:
        return create_kw_model(name, budget=budget, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (
        f"KernelWarehouse {KW_ARCHITECTURES[name][0]} (timm), paper grouping; "
        "``budget`` = b. See :func:`create_kw_model`."
    )
    globals()[name] = entrypoint
    register_model(entrypoint)


for _name in KW_ARCHITECTURES:
    _register(_name)


def plan_of(model: nn.Module) -> ConversionPlan:
    """The conversion plan a KW architecture was built with."""
    plan = getattr(model, "kw_plan", None)
    if plan is None:
        raise ValueError("model has no kw_plan: it was not built by kernelwarehouse")
    return plan
