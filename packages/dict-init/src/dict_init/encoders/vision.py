"""Vision encoder: any timm model, any named layer; every spatial position is one vector.

YOLO-RD (section 3.2) encodes the dataset with the detector backbone's middle layer. The layer's
output is captured with a forward hook and the forward pass stops right after it, so deep
layers after the chosen one cost nothing.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from .._validation import bad_value, check_choice, deprecated_alias
from .base import register_encoder, to_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("auto", "nchw", "nhwc", "nlc")


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the layer has run."""


def middle_layer(model: nn.Module) -> str:
    """The module name of the middle feature stage of a timm model (from ``feature_info``).

    Example:
        >>> import timm
        >>> middle_layer(timm.create_model("resnet18"))
        'layer2'
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise bad_value("at", None, "a module name: this model has no feature_info")
    entries = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    return entries[(len(entries) - 1) // 2]["module"]


class VisionEncoder:
    """Features of one named layer of a timm model, one vector per spatial position.

    Args:
        model: a timm model name (created with ``pretrained``) or an ``nn.Module``.
        at: a name from ``model.named_modules()``; ``None`` picks the middle feature stage.
        layer: deprecated name of ``at`` (``FutureWarning``; passing both is a ``TypeError``).
        pretrained: load timm's pretrained weights when ``model`` is a name.
        image_size: input size, an int or ``(height, width)`` of positive ints; default from
            the model's ``pretrained_cfg``.
        mean, std: input normalisation; default from the model's ``pretrained_cfg``.
        layout: how to read the layer output: ``"nchw"`` (``[B, C, H, W]``), ``"nhwc"``,
            ``"nlc"`` (tokens ``[B, L, C]``) or ``"auto"`` (4-D is NCHW, 3-D is NLC).
        device: where the model runs (default: where its parameters are). A module passed in
            is used in eval mode during :meth:`encode` and put back in its previous mode after,
            so a backbone being trained can be encoded with in between.

    Example:
        >>> import torch
        >>> enc = VisionEncoder("resnet18", at="layer2", image_size=64)
        >>> enc.encode(torch.rand(2, 3, 64, 64)).shape  # 8 x 8 positions of 128 channels
        torch.Size([2, 64, 128])
    """

    kind = "image"
    default_normalization = "none"

    def __init__(
        self,
        model: str | nn.Module,
        at: str | None = None,
        *,
        layer: str | None = None,
        pretrained: bool = False,
        image_size: int | tuple[int, int] | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        layout: str = "auto",
        device: str | torch.device | None = None,
        **create_kwargs: Any,
    ) -> None:
        at = deprecated_alias("VisionEncoder", "layer", "at", layer, at)
        if isinstance(model, str):
            import timm  # imported here: importing timm (and torchvision) costs seconds

            self.model_name = model
            try:
                model = timm.create_model(model, pretrained=pretrained, **create_kwargs)
            except RuntimeError as error:
                if not str(error).startswith("Unknown model"):
                    raise
                valid = "a timm model name (see timm.list_models()) or an nn.Module"
                raise bad_value("model", model, valid) from error
        elif isinstance(model, nn.Module):
            self.model_name = (
                getattr(model, "default_cfg", {}).get("architecture") or type(model).__name__
            )
        else:
            raise bad_value("model", type(model).__name__, "a timm model name or an nn.Module")
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.model = model.to(device)
        self.device = torch.device(device)
        self.at = middle_layer(model) if at is None else at
        modules = dict(model.named_modules())
        if not isinstance(self.at, str) or self.at not in modules or self.at == "":
            close = difflib.get_close_matches(str(self.at), list(modules), n=5, cutoff=0.5)
            examples = close or [n for n in modules if n and "." not in n][:8]
            raise bad_value("at", self.at, f"a module name of {self.model_name}, e.g. {examples}")
        self.module = modules[self.at]
        self.layout = check_choice("layout", layout, LAYOUTS)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        default_size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        self.image_size = to_size(default_size if image_size is None else image_size)
        self.mean = torch.tensor(mean or cfg.get("mean", IMAGENET_MEAN)).view(1, -1, 1, 1)
        self.std = torch.tensor(std or cfg.get("std", IMAGENET_STD)).view(1, -1, 1, 1)
        self._dim: int | None = None

    def _vectors(self, out: Any) -> torch.Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            kind = type(out).__name__
            raise TypeError(f"at={self.at!r}: the module returned {kind}, not a tensor")
        layout = self.layout
        if layout == "auto":
            layout = {4: "nchw", 3: "nlc", 2: "nlc"}.get(out.ndim)
            if layout is None:
                shape = tuple(out.shape)
                raise ValueError(f"at={self.at!r}: the module's output has shape {shape}")
        if out.ndim == 2:
            return out.unsqueeze(1)
        if layout == "nchw":
            return out.flatten(2).transpose(1, 2)
        if layout == "nhwc":
            return out.flatten(1, 2)
        return out

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[0, 1]`` -> ``[B, positions, channels]`` features."""
        if images.ndim != 4:
            raise bad_value("images.shape", tuple(images.shape), "[B, 3, H, W]")
        x = (images.to(self.device, torch.float32) - self.mean.to(self.device)) / self.std.to(
            self.device
        )
        captured: list[Any] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured.append(output)
            raise _Captured

        handle = self.module.register_forward_hook(hook)
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
            self.model.train(was_training)
        if not captured:
            raise RuntimeError(
                f"at={self.at!r}: the module did not run in {self.model_name}'s forward"
            )
        vectors = self._vectors(captured[0]).float()
        self._dim = vectors.shape[-1]
        return vectors

    @property
    def dim(self) -> int:
        """Feature dimension (probed with one blank image the first time)."""
        if self._dim is None:
            self.encode(torch.zeros(1, 3, *self.image_size))
        return int(self._dim)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vision",
            "model": self.model_name,
            "layer": self.at,  # the artifact's metadata field (hub cards read it)
            "image_size": list(self.image_size),
        }


@register_encoder("timm")
def _timm_encoder(model: str | None, **options: Any) -> VisionEncoder:
    if not model:
        raise bad_value("encoder", "timm:", "'timm:<model name>', e.g. 'timm:resnet18'")
    return VisionEncoder(model, options.pop("at", None), **options)
