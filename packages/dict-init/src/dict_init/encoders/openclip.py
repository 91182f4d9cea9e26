"""Vision-language encoder: every output token of an open_clip image tower (open-clip-torch).

The same tokens as :class:`~dict_init.encoders.CLIPImageEncoder` takes from transformers: the
class token and all patch tokens of the last block, each through the tower's final layer norm
(``ln_post``) and, by default, its projection ``proj`` into the joint image-text space. For
the class token that is exactly ``model.encode_image`` (open_clip's ``"tok"`` pooling).
Needs ``pip install 'dict-init[open-clip]'``; ``open_clip.create_model(name)`` builds a model
from its configuration without downloading weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import bad_value, check_choice
from .base import register_encoder, to_size
from .clip import CLIP_MEAN, CLIP_STD, TOKENS, select_tokens


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            "the open_clip encoder needs open-clip-torch: pip install 'dict-init[open-clip]'"
        ) from error
    return open_clip


class OpenCLIPImageEncoder:
    """All tokens of an open_clip ViT image tower.

    Args:
        model: an ``open_clip`` CLIP model (its ``.visual`` is used), its ViT image tower
            itself, or a model name for ``open_clip.create_model`` (random weights unless
            ``pretrained=`` names cached ones).
        tokens: ``"all"`` (class + patch tokens, the default), ``"patches"`` or ``"class"``.
        project: apply ``proj`` (joint space); ``False`` keeps the tower's width.
        image_size: default from the tower.
        pretrained: for a model name: open_clip's pretrained tag (downloads unless cached).
        device: where the model runs.

    Example:
        >>> import open_clip
        >>> model = open_clip.CLIP(
        ...     embed_dim=16,
        ...     vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
        ...                 "head_width": 16},
        ...     text_cfg={"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
        ...               "layers": 1})
        >>> OpenCLIPImageEncoder(model).encode(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 17, 16])
    """

    kind = "image"
    default_normalization = "none"

    def __init__(
        self,
        model: str | nn.Module,
        *,
        tokens: str = "all",
        project: bool = True,
        image_size: int | tuple[int, int] | None = None,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(model, str):
            self.model_name = model if pretrained is None else f"{model}:{pretrained}"
            model = _open_clip().create_model(model, pretrained=pretrained)
        elif isinstance(model, nn.Module):
            self.model_name = type(model).__name__
        else:
            raise bad_value("model", type(model).__name__, "an open_clip model or a model name")
        visual = getattr(model, "visual", model)
        needed = ("forward_intermediates", "ln_post", "proj", "patch_size")
        if not all(hasattr(visual, name) for name in needed):
            raise bad_value(
                "model",
                type(model).__name__,
                "an open_clip CLIP model with a ViT image tower (open_clip.transformer."
                "VisionTransformer); transformers models: dict_init.encoders.CLIPImageEncoder",
            )
        if project and visual.proj is None:
            raise bad_value("project", project, "False (this tower has no projection)")
        self.visual = visual.eval().to(device)
        self.device = torch.device(device)
        self.tokens = check_choice("tokens", tokens, TOKENS)
        self.project = project
        self.image_size = to_size(tuple(visual.image_size) if image_size is None else image_size)
        mean = getattr(visual, "image_mean", None) or CLIP_MEAN
        std = getattr(visual, "image_std", None) or CLIP_STD
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self._dim = visual.proj.shape[1] if project else visual.ln_post.normalized_shape[0]

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[0, 1]`` -> ``[B, tokens, dim]``."""
        if images.ndim != 4:
            raise bad_value("images.shape", tuple(images.shape), "[B, 3, H, W]")
        x = (images.to(self.device, torch.float32) - self.mean.to(self.device)) / self.std.to(
            self.device
        )
        out = self.visual.forward_intermediates(
            x, indices=1, output_fmt="NLC", output_extra_tokens=True, intermediates_only=True
        )  # the last block's tokens, class token apart
        tokens = torch.cat(
            [out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1
        )
        tokens = self.visual.ln_post(tokens)
        if self.project:
            tokens = tokens @ self.visual.proj
        return select_tokens(tokens, self.tokens).float()

    @property
    def dim(self) -> int:
        return int(self._dim)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vision-language",
            "library": "open_clip",
            "model": self.model_name,
            "layer": f"tokens={self.tokens}, projected={self.project}",
            "image_size": list(self.image_size),
        }


@register_encoder("open_clip")
def _open_clip_encoder(model: str | None, **options: Any) -> OpenCLIPImageEncoder:
    options.pop("at", None)  # tokens, not a module, are what CLIP gives
    return OpenCLIPImageEncoder(model or "ViT-B-32", **options)
