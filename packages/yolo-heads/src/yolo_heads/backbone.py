"""Three-level feature extractors (strides 8, 16, 32) from timm models or user modules."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from ._checks import check_bool, check_int, check_int_list, check_list, check_module

STRIDES = (8, 16, 32)


class PyramidBackbone(nn.Module):
    """Wraps a multi-level feature extractor and returns its stride 8, 16 and 32 maps.

    ``body`` is a timm ``features_only`` model (or any module whose forward returns a list of
    maps); ``indices`` picks the three levels. ``channels`` and ``strides`` describe them.
    ``module_names`` are the body's module names that produce each picked level (used to place a
    Retriever-Dictionary), or ``None`` where unknown.

    >>> bb = create_backbone("resnet18")
    >>> [f.shape[1] for f in bb(torch.zeros(1, 3, 64, 64))], bb.channels
    ([128, 256, 512], [128, 256, 512])
    """

    def __init__(
        self,
        body: nn.Module,
        indices: list[int],
        channels: list[int],
        module_names: list[str | None],
        in_chans: int,
    ) -> None:
        super().__init__()
        fn, levels = "PyramidBackbone", len(STRIDES)
        self.body = check_module("body", body, fn=fn)
        self.indices = check_int_list("indices", indices, low=0, length=levels, fn=fn)
        self.channels = check_int_list("channels", channels, length=levels, fn=fn)
        self.strides = list(STRIDES)
        self.module_names = check_list(
            "module_names",
            module_names,
            item=_check_module_name,
            expected="a list of module names (str, or None where unknown)",
            length=levels,
            fn=fn,
        )
        self.in_chans = check_int("in_chans", in_chans, fn=fn)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        return [feats[i] for i in self.indices]


def _check_module_name(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"PyramidBackbone: {name}={value!r} is not valid; expected a module name or None"
        )
    return value


def _pick_levels(reductions: list[int], what: str) -> list[int]:
    indices = []
    for stride in STRIDES:
        found = [i for i, r in enumerate(reductions) if r == stride]
        if not found:
            raise ValueError(
                f"backbone={what} gives feature levels with strides {reductions}; a detector needs "
                f"three levels with strides {list(STRIDES)} (use a timm model that supports "
                "features_only=True with at least five stages, e.g. 'resnet18')"
            )
        indices.append(found[-1])  # deepest map at that stride: most processed
    return indices


def _probe(module: nn.Module, in_chans: int, size: int = 128) -> tuple[list[int], list[int]]:
    """Run one small image to learn the strides and channels of a module without feature_info."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            param = next(module.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            feats = module(torch.zeros(1, in_chans, size, size, device=device))
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        raise ValueError(
            f"backbone={type(module).__name__} fails on an image [1, {in_chans}, {size}, {size}] "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); a backbone "
            "module must take images [B, C, H, W] and return a list of feature maps [B, C, H, W] "
            "(e.g. a timm model built with features_only=True)"
        ) from err
    finally:
        module.train(was_training)
    if isinstance(feats, dict):
        feats = list(feats.values())
    if not isinstance(feats, (list, tuple)) or not all(
        isinstance(f, torch.Tensor) and f.ndim == 4 for f in feats
    ):
        raise ValueError(
            f"backbone={type(module).__name__} returned {type(feats).__name__}; a backbone module "
            "must return a list of feature maps [B, C, H, W] (e.g. a timm model built with "
            "features_only=True)"
        )
    return [size // f.shape[-1] for f in feats], [f.shape[1] for f in feats]


#: Installed packages that add names to timm's factory when imported (KernelWarehouse's
#: ``kw_*``, the paper configurations of timm-knowledge), by name prefix; "" for any name.
METHOD_PACKAGES = {"kw_": "kernelwarehouse", "": "timm_knowledge"}


def _register_method_models(name: str) -> None:
    """Import the installed method packages whose names timm does not know yet, so that a
    config (``model.backbone=kw_resnet18``) works without the caller importing them first."""
    import importlib
    import importlib.util

    base = name.split(".")[0]
    for prefix, package in METHOD_PACKAGES.items():
        if timm.is_model(base):
            return
        if base.startswith(prefix) and importlib.util.find_spec(package) is not None:
            importlib.import_module(package)
    if not timm.is_model(base) and base.startswith("kw_"):
        raise ValueError(
            f"backbone={name!r} is a KernelWarehouse model; install the kernelwarehouse package "
            "(pip install kernelwarehouse) to build it"
        )


def create_backbone(
    backbone: str | nn.Module, in_chans: int = 3, pretrained: bool = False, **kwargs: Any
) -> PyramidBackbone:
    """Build the three-level backbone from a timm name or wrap a module.

    Args:
        backbone: a timm model name (built with ``features_only=True``; KernelWarehouse names
            such as ``"kw_resnet18"`` work once ``kernelwarehouse`` is imported) or a module
            returning a list of feature maps.
        in_chans: input channels.
        pretrained: load timm's pretrained weights (needs network access; off by default).
        **kwargs: passed to ``timm.create_model`` (e.g. ``budget=0.5`` for KW models).

    >>> create_backbone("resnet18").strides
    [8, 16, 32]
    """
    in_chans = check_int("in_chans", in_chans, fn="create_backbone")
    # Checked before timm sees it: timm reads any true value as "download", so pretrained=-1
    # would reach for the Hub and fail there with an error that names no argument.
    check_bool("pretrained", pretrained, fn="create_backbone")
    if isinstance(backbone, str):
        _register_method_models(backbone)
        try:
            body = timm.create_model(
                backbone, features_only=True, pretrained=pretrained, in_chans=in_chans, **kwargs
            )
        except RuntimeError as err:
            if "Unknown model" in str(err) or "features_only" in str(err):
                raise ValueError(
                    f"backbone={backbone!r} cannot be built by timm with features_only=True "
                    f"({err}); pick a name from timm.list_models() that supports feature extraction"
                ) from err
            raise
        info = body.feature_info
        indices = _pick_levels(list(info.reduction()), repr(backbone))
        channels = [info.channels()[i] for i in indices]
        names = [info.module_name()[i] for i in indices]
        return PyramidBackbone(body, indices, channels, names, in_chans)
    if not isinstance(backbone, nn.Module):
        raise TypeError(
            f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}"
        )
    info = getattr(backbone, "feature_info", None)
    if info is not None and hasattr(info, "reduction"):
        reductions, channels_all = list(info.reduction()), list(info.channels())
        names_all: list[str | None] = list(info.module_name())
    else:
        reductions, channels_all = _probe(backbone, in_chans)
        names_all = [None] * len(reductions)
    indices = _pick_levels(reductions, type(backbone).__name__)
    return PyramidBackbone(
        backbone,
        indices,
        [channels_all[i] for i in indices],
        [names_all[i] for i in indices],
        in_chans,
    )
