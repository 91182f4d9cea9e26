"""Encoders that turn a dataset into vectors: vision (timm), vision-language (CLIP), language."""

from .base import ENCODERS, ImageEncoder, TextEncoder, create_encoder, register_encoder
from .clip import CLIPImageEncoder
from .openclip import OpenCLIPImageEncoder
from .text import GPTTextEncoder, SentenceEncoder, byte_tokenizer, coco_captions, coco_class_names
from .vision import VisionEncoder, middle_layer

__all__ = [
    "ENCODERS",
    "CLIPImageEncoder",
    "GPTTextEncoder",
    "ImageEncoder",
    "OpenCLIPImageEncoder",
    "SentenceEncoder",
    "TextEncoder",
    "VisionEncoder",
    "byte_tokenizer",
    "coco_captions",
    "coco_class_names",
    "create_encoder",
    "middle_layer",
    "register_encoder",
]
