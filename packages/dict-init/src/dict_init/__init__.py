"""dict-init: build Retriever-Dictionary atoms (YOLO-RD, section 3.2) with k-means."""

from __future__ import annotations

__version__ = "0.1.0"

from .build import build_dictionary
from .card import HUB_METADATA
from .dictionary import Dictionary
from .encoders import (
    CLIPImageEncoder,
    GPTTextEncoder,
    OpenCLIPImageEncoder,
    SentenceEncoder,
    VisionEncoder,
    coco_class_names,
    create_encoder,
)
from .extract import extract_features
from .kmeans import KMeansResult, assign, inertia, kmeans, kmeans_plusplus
from .shards import FeatureShards, ShardWriter
from .sources import TensorSource, TransformedSource, VectorSource, as_source

__all__ = [
    "HUB_METADATA",
    "CLIPImageEncoder",
    "Dictionary",
    "FeatureShards",
    "GPTTextEncoder",
    "KMeansResult",
    "OpenCLIPImageEncoder",
    "SentenceEncoder",
    "ShardWriter",
    "TensorSource",
    "TransformedSource",
    "VectorSource",
    "VisionEncoder",
    "__version__",
    "as_source",
    "assign",
    "build_dictionary",
    "coco_class_names",
    "create_encoder",
    "extract_features",
    "inertia",
    "kmeans",
    "kmeans_plusplus",
]
