"""Vision-language encoder: every output token of a CLIP image encoder (transformers).

Accepts ``CLIPVisionModelWithProjection``, ``CLIPModel`` and the plain ``CLIPVisionModel``
(no projection: tokens keep the hidden width). For open_clip models see
:mod:`dict_init.encoders.openclip`.

YOLO-RD (section 3.2, after DenseCLIP) uses all output patches of CLIP's image encoder, not only
the class token, so each image gives ``1 + (H/p)(W/p)`` vectors. Tokens pass through the
encoder's final layer norm and, by default, the visual projection into CLIP's joint
image-text space (512-d for ViT-B/32, the dimension in the paper's Table 5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import bad_value, check_choice
from .base import register_encoder, to_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENS = ("all", "patches", "class")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "the CLIP encoder needs transformers: pip install 'dict-init[clip]'"
        ) from error
    return transformers


def select_tokens(tokens: torch.Tensor, which: str) -> torch.Tensor:
    """``[B, 1 + P, D]`` tokens (class first): ``"all"``, ``"patches"`` or ``"class"``."""
    if which == "patches":
        return tokens[:, 1:]
    if which == "class":
        return tokens[:, :1]
    return tokens


class CLIPImageEncoder:
    """All tokens of a CLIP image encoder from transformers.

    Args:
        model: a ``CLIPVisionModelWithProjection``, ``CLIPModel`` or ``CLIPVisionModel``, or
            a name / folder for ``CLIPVisionModelWithProjection.from_pretrained`` (e.g.
            ``"openai/clip-vit-base-patch32"``; downloads unless cached).
        tokens: ``"all"`` (class + patch tokens, the default), ``"patches"`` or ``"class"``
            (the global embedding only: the paper's Table 5 ablation).
        project: apply the visual projection (joint space); ``False`` keeps the hidden width;
            ``None`` (default) projects when the model has a projection.
        image_size: default from the model's config.
        device: where the model runs.

    Example:
        >>> import torch
        >>> from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        >>> cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=32, patch_size=8,
        ...                        projection_dim=16)
        >>> enc = CLIPImageEncoder(CLIPVisionModelWithProjection(cfg))
        >>> enc.encode(torch.rand(2, 3, 32, 32)).shape  # 1 class + 16 patch tokens
        torch.Size([2, 17, 16])
    """

    kind = "image"
    default_normalization = "none"

    def __init__(
        self,
        model: str | nn.Module,
        *,
        tokens: str = "all",
        project: bool | None = None,
        image_size: int | tuple[int, int] | None = None,
        mean: tuple[float, ...] = CLIP_MEAN,
        std: tuple[float, ...] = CLIP_STD,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(model, str):
            self.model_name = model
            model = _transformers().CLIPVisionModelWithProjection.from_pretrained(model)
        elif isinstance(model, nn.Module):
            config = getattr(model, "config", None)
            self.model_name = getattr(config, "_name_or_path", "") or type(model).__name__
        else:
            raise bad_value("model", type(model).__name__, "a CLIP model or a model name")
        # CLIPModel / WithProjection hold the tower as .vision_model; transformers 5's plain
        # CLIPVisionModel is the tower itself
        vision = getattr(model, "vision_model", model)
        if not hasattr(vision, "post_layernorm") or not hasattr(vision, "embeddings"):
            raise bad_value(
                "model",
                type(model).__name__,
                "a transformers CLIPVisionModelWithProjection, CLIPModel or CLIPVisionModel "
                "(open_clip models: dict_init.encoders.OpenCLIPImageEncoder)",
            )
        has_projection = hasattr(model, "visual_projection")
        if project is None:
            project = has_projection
        elif project and not has_projection:
            raise bad_value(
                "project", project, f"False (a {type(model).__name__} has no visual projection)"
            )
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.tokens = check_choice("tokens", tokens, TOKENS)
        self.project = project
        config = getattr(model.config, "vision_config", model.config)
        self.image_size = to_size(config.image_size if image_size is None else image_size)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self._dim = model.visual_projection.out_features if project else config.hidden_size

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[0, 1]`` -> ``[B, tokens, dim]``."""
        if images.ndim != 4:
            raise bad_value("images.shape", tuple(images.shape), "[B, 3, H, W]")
        x = (images.to(self.device, torch.float32) - self.mean.to(self.device)) / self.std.to(
            self.device
        )
        vision = getattr(self.model, "vision_model", self.model)
        hidden = vision(pixel_values=x).last_hidden_state
        # The class token gets post_layernorm + projection in CLIP; give every token the same.
        tokens = vision.post_layernorm(hidden)
        if self.project:
            tokens = self.model.visual_projection(tokens)
        return select_tokens(tokens, self.tokens).float()

    @property
    def dim(self) -> int:
        return int(self._dim)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vision-language",
            "model": self.model_name,
            "layer": f"tokens={self.tokens}, projected={self.project}",
            "image_size": list(self.image_size),
        }


@register_encoder("clip")
def _clip_encoder(model: str | None, **options: Any) -> CLIPImageEncoder:
    options.pop("at", None)  # tokens, not a module, are what CLIP gives
    return CLIPImageEncoder(model or "openai/clip-vit-base-patch32", **options)
