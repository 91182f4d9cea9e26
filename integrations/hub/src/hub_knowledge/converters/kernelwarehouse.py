"""The KernelWarehouse authors' checkpoints as timm models that ``hf-hub:`` names rebuild.

``kernelwarehouse.official.load(arch, state_dict, config)`` builds the model the authors'
configuration describes and renames their weights onto it. That model is then rebuilt from a
name timm's factory knows, preferably the paper configuration registered by ``timm-knowledge``
(``kw_resnet18_1x``), else ``kernelwarehouse``'s ``kw_resnet18`` with ``budget=``, its weights are
copied over after a key-and-shape check, and both are run on the same input: the conversion
succeeds only if the outputs agree. The result can be published with
:func:`hub_knowledge.save_for_hub` and loaded back by name.

The attention temperature tau is set to ``temperature`` (default 0: the value at the end of the
authors' schedule, which trained models are evaluated at); it is a buffer, so it is saved.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError, check_state_dict, read_state_dict

__all__ = ["ConversionReport", "convert_kernelwarehouse"]


@dataclass
class ConversionReport:
    """What a conversion produced and how it was checked."""

    architecture: str  # the timm name the model is rebuilt from
    model_args: dict[str, Any]
    max_abs_diff: float  # between the authors'-layout model and the rebuilt one
    num_params: int
    source: str
    notes: list[str] = field(default_factory=list)


def _kernelwarehouse():
    try:
        return importlib.import_module("kernelwarehouse"), importlib.import_module(
            "kernelwarehouse.official"
        )
    except ImportError:
        raise ImportError(
            "converting KernelWarehouse checkpoints needs the kernelwarehouse package: "
            "the hub-knowledge[kernelwarehouse] extra (from a checkout: "
            "pip install ./packages/kernelwarehouse)"
        ) from None


def _strip(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if not prefix:
        return dict(state_dict)
    picked = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not picked:
        raise CheckpointError(f"prefix={prefix!r}: no key of the checkpoint starts with it")
    return picked


def _target(arch: str, budget: float) -> tuple[str, dict[str, Any]]:
    with contextlib.suppress(ImportError):  # paper names, when timm-knowledge is installed
        paper = importlib.import_module("timm_knowledge")
        name = f"{arch}_{paper.budget_suffix(budget)}"
        if timm.is_model(name):
            return name, {}
    return arch, {"budget": budget}


def convert_kernelwarehouse(
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    arch: str,
    config: Mapping[str, Any],
    *,
    prefix: str = "",
    temperature: float = 0.0,
    check_input_size: int = 64,
    atol: float = 1e-5,
    progress: bool = True,
) -> tuple[nn.Module, ConversionReport]:
    """Convert an authors' KernelWarehouse checkpoint; return ``(model, report)``.

    Args:
        checkpoint: a ``.pth`` / ``.safetensors`` path (read weights-only) or a state dict.
        arch: ``kw_resnet18``, ``kw_resnet50``, ``kw_mobilenetv2_100``, ``kw_mobilenetv2_050``
            or ``kw_convnext_tiny`` (``kernelwarehouse.official.OFFICIAL_ARCHITECTURES``).
        config: the authors' settings (``cell_num_ratio``, ``reduction``, ``sharing_range``...).
        prefix: keep only keys starting with it, removed (e.g. ``"model."``).
        temperature: tau to set in every KW attention.
        check_input_size: side of the random input both models are compared on.
        atol: largest output difference accepted.

    Raises:
        CheckpointError: unreadable file, a checkpoint that does not fit ``arch`` / ``config``,
            or a configuration the factory cannot rebuild.
    """
    kw, official = _kernelwarehouse()
    if arch not in official.OFFICIAL_ARCHITECTURES:
        valid = list(official.OFFICIAL_ARCHITECTURES)
        raise ValueError(f"arch={arch!r} is invalid; valid: {valid}")
    if not 0.0 <= temperature <= 1.0:
        raise ValueError(f"temperature={temperature!r} is invalid: tau lies in [0, 1]")
    steps = tqdm(total=4, desc=f"convert {arch}", disable=not progress)
    if isinstance(checkpoint, Mapping):
        state_dict, source = dict(checkpoint), "state_dict"
    else:
        state_dict, _ = read_state_dict(checkpoint)
        source = os.fspath(checkpoint)
    state_dict = _strip(state_dict, prefix)
    steps.update()
    try:
        reference = official.load(arch, state_dict, config).eval()
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint={source!r} cannot be read as {arch!r}: {e}") from None
    kw.set_temperature(reference, temperature)
    steps.update()

    budget = config.get("cell_num_ratio", 1)
    if not isinstance(budget, int | float):
        raise CheckpointError(
            f"config['cell_num_ratio']={budget!r}: per-warehouse budgets have no named "
            "configuration in timm's factory; only a single number can be rebuilt by name"
        )
    name, model_args = _target(arch, float(budget))
    num_classes = reference.get_classifier().out_features
    rebuilt = timm.create_model(name, num_classes=num_classes, **model_args).eval()
    if rebuilt.pretrained_cfg.get("architecture") != name:
        # kernelwarehouse's kw_* entrypoints keep the base network's pretrained_cfg, whose
        # architecture ("resnet18") would not rebuild the KW model from config.json
        rebuilt.pretrained_cfg = {**rebuilt.pretrained_cfg, "architecture": name}
    try:
        check_state_dict(rebuilt, reference.state_dict(), architecture=name, source=source)
    except CheckpointError as e:
        raise CheckpointError(
            f"the authors' configuration {dict(config)} builds a model that {name!r} does not "
            f"reproduce (another grouping or cell setting): {e}"
        ) from None
    rebuilt.load_state_dict(reference.state_dict())
    steps.update()

    seeded = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, check_input_size, check_input_size, generator=seeded)
    with torch.no_grad():
        diff = float((rebuilt(x) - reference(x)).abs().max())
    steps.update()
    steps.close()
    if not diff <= atol:
        raise CheckpointError(
            f"{name!r} rebuilt from {source!r} differs from the authors' layout by {diff:.3g} "
            f"(> atol={atol})"
        )
    report = ConversionReport(
        architecture=name,
        model_args={"num_classes": num_classes, **model_args},
        max_abs_diff=diff,
        num_params=sum(p.numel() for p in rebuilt.parameters()),
        source=source,
        notes=[f"temperature tau={temperature}"],
    )
    return rebuilt, report
