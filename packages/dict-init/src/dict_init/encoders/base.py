"""What every encoder provides, and the registry the command line builds encoders from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from .._validation import bad_value


@runtime_checkable
class ImageEncoder(Protocol):
    """Maps images to vectors at every position.

    ``encode`` takes ``[B, 3, H, W]`` float images in ``[0, 1]`` at ``image_size`` and returns
    ``[B, P, D]``: P positions (pixels of a feature map, or tokens) of dimension D per image.
    """

    kind: str  # "image"
    image_size: tuple[int, int]
    default_normalization: str

    @property
    def dim(self) -> int: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts (class names, captions) to one vector each: ``[len(texts), D]``."""

    kind: str  # "text"
    default_normalization: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


ENCODERS: dict[str, Callable[..., Any]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a factory ``factory(spec: str, **options)`` under ``name`` for the CLI."""

    def add(factory: Callable[..., Any]) -> Callable[..., Any]:
        ENCODERS[name] = factory
        return factory

    return add


def create_encoder(spec: str, **options: Any) -> Any:
    """Build an encoder from ``"<kind>:<model>"``, e.g. ``"timm:resnet18"``.

    Kinds: ``timm`` (needs ``layer=``), ``clip`` (a transformers CLIP name or folder),
    ``sentence`` (default: the bundled all-MiniLM-L6-v2), ``gpt`` (a transformers causal LM).

    Example:
        >>> enc = create_encoder("timm:resnet18", layer="layer2", image_size=32)
        >>> enc.dim
        128
    """
    kind, _, model = spec.partition(":")
    if kind not in ENCODERS:
        raise bad_value("encoder", spec, f"'<kind>:<model>' with kind in {sorted(ENCODERS)}")
    return ENCODERS[kind](model or None, **options)


def to_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise bad_value("image_size", image_size, "a positive int or (height, width)")
    return size  # type: ignore[return-value]
