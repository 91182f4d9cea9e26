"""What every encoder provides, and the registry the command line builds encoders from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any, Protocol, runtime_checkable

import torch

from .._validation import bad_value, deprecated_alias


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
    """Register a factory ``factory(spec: str, **options)`` under ``name`` for the CLI.

    A name is registered once: registering it again raises ``ValueError`` (no silent
    overwrite of a built-in or another package's encoder).

    Example:
        >>> @register_encoder("timm")  # doctest: +ELLIPSIS
        ... def mine(model, **options): ...
        Traceback (most recent call last):
        ...
        ValueError: register_encoder: 'timm' is already in the encoder registry (held by ...
    """

    def add(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in ENCODERS:
            held = ENCODERS[name]
            holder = f"{held.__module__}.{getattr(held, '__qualname__', repr(held))}"
            raise ValueError(
                f"register_encoder: {name!r} is already in the encoder registry (held by "
                f"{holder}); pick another name"
            )
        ENCODERS[name] = factory
        return factory

    return add


def create_encoder(spec: str, **options: Any) -> Any:
    """Build an encoder from ``"<kind>:<model>"``, e.g. ``"timm:resnet18"``.

    Kinds: ``timm`` (``at=``: a module name, default the middle feature stage), ``clip`` (a
    transformers CLIP name or folder), ``open_clip``, ``sentence`` (default: the bundled
    all-MiniLM-L6-v2), ``gpt`` (a transformers causal LM). ``layer=`` is the deprecated name of
    ``at=``.

    Example:
        >>> enc = create_encoder("timm:resnet18", at="layer2", image_size=32)
        >>> enc.dim
        128
    """
    if not isinstance(spec, str):
        raise bad_value("spec", spec, f"'<kind>:<model>' with kind in {sorted(ENCODERS)}")
    kind, _, model = spec.partition(":")
    if kind not in ENCODERS:
        raise bad_value("spec", spec, f"'<kind>:<model>' with kind in {sorted(ENCODERS)}")
    if "layer" in options:
        at = deprecated_alias(
            "create_encoder", "layer", "at", options.pop("layer"), options.get("at")
        )
        options["at"] = at
    return ENCODERS[kind](model or None, **options)


def to_size(image_size: Any) -> tuple[int, int]:
    """``image_size`` (an int or ``(height, width)``) as a pair of positive ints, or raise."""
    valid = "a positive int or (height, width) of positive ints"
    pair = (image_size, image_size) if not isinstance(image_size, (tuple, list)) else image_size
    if len(pair) != 2 or not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in pair
    ):
        raise bad_value("image_size", image_size, valid)
    return int(pair[0]), int(pair[1])
