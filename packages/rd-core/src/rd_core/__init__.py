"""rd-core: the YOLO-RD Retriever-Dictionary module for any timm model.

Example:
    >>> import torch
    >>> from rd_core import RetrieverDictionary
    >>> RetrieverDictionary(64, num_atoms=128)(torch.randn(1, 64, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
"""

from .attach import LAYOUTS, RDInsertion, attach, attached, detach, register_layout
from .dictionary import ConvBNDictionary, NormalizedDictionary, as_atoms
from .module import RetrieverDictionary
from .pono import PositionalNorm, positional_norm
from .retriever import ConvNormAct, FusedRetriever, SplitRetriever, fuse_retriever
from .variants import VariantSpec, get_variant, list_variants, register_variant

__version__ = "0.1.0"

__all__ = [
    "LAYOUTS",
    "ConvBNDictionary",
    "ConvNormAct",
    "FusedRetriever",
    "NormalizedDictionary",
    "PositionalNorm",
    "RDInsertion",
    "RetrieverDictionary",
    "SplitRetriever",
    "VariantSpec",
    "__version__",
    "as_atoms",
    "attach",
    "attached",
    "detach",
    "fuse_retriever",
    "get_variant",
    "list_variants",
    "positional_norm",
    "register_layout",
    "register_variant",
]
