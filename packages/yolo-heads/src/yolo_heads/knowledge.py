"""Optional knowledge modules from sibling packages: YOLOR implicit knowledge and YOLO-RD.

Imports are lazy so that the plain detector needs neither package installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def _import(module: str, dist: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(
            f"this option needs the {dist!r} package (import {module}); install it with "
            f"`pip install {dist}` (a dependency of yolo-heads)"
        ) from err


def implicit_prediction_refinement(conv: nn.Conv2d, prior: str = "vector") -> nn.Module:
    """YOLOR iPR: ImplicitAdd before and ImplicitMul after an output convolution."""
    ik = _import("implicit_knowledge", "implicit-knowledge")
    return ik.ImplicitPredictionRefinement(conv, prior=prior)


def implicit_feature_alignment(channels: Sequence[int], prior: str = "vector") -> nn.Module:
    """YOLOR iFA: one ImplicitAdd on every pyramid level."""
    ik = _import("implicit_knowledge", "implicit-knowledge")
    return ik.ImplicitFeatureAlignment(list(channels), prior=prior)


def fuse_implicit(model: nn.Module) -> nn.Module:
    """Fold every implicit module into the neighbouring convolution (YOLOR eq. 9-10)."""
    ik = _import("implicit_knowledge", "implicit-knowledge")
    return ik.fuse(model)


def attach_retriever_dictionary(body: nn.Module, at: str, **rd_kwargs: Any) -> nn.Module:
    """Insert a Retriever-Dictionary after the module ``at`` of a timm model (YOLO-RD), in
    place; returns the RD module."""
    rd_core = _import("rd_core", "rd-core")
    return rd_core.attach(body, at=at, **rd_kwargs)
