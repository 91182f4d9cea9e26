"""rd-core: the YOLO-RD Retriever-Dictionary module for any timm model.

Example:
    >>> import torch
    >>> from rd_core import RetrieverDictionary
    >>> RetrieverDictionary(64, num_atoms=128)(torch.randn(1, 64, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
"""

from . import factory, official
from .attach import (
    LAYOUTS,
    RDInsertion,
    attach,
    attached,
    attachments,
    detach,
    reattach,
    register_layout,
)
from .capture import batch_images, iter_rd_inputs, rd_inputs
from .card import HUB_METADATA
from .compression import CompressionReport, compress, distillation_loss, student_from_teacher
from .dictionary import ConvBNDictionary, NormalizedDictionary, as_atoms
from .inspection import (
    USAGE_SCORES,
    AtomUsage,
    CoefficientMaps,
    atom_usage,
    coefficient_maps,
    plot_coefficients,
)
from .module import RetrieverDictionary
from .pono import PositionalNorm, positional_norm
from .retriever import ConvNormAct, FusedRetriever, SplitRetriever, fuse_retriever
from .variants import VariantSpec, get_variant, list_variants, register_variant

__version__ = "0.1.0"

__all__ = [
    "HUB_METADATA",
    "LAYOUTS",
    "USAGE_SCORES",
    "AtomUsage",
    "CoefficientMaps",
    "CompressionReport",
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
    "atom_usage",
    "attach",
    "attached",
    "attachments",
    "batch_images",
    "coefficient_maps",
    "compress",
    "detach",
    "distillation_loss",
    "factory",
    "fuse_retriever",
    "get_variant",
    "iter_rd_inputs",
    "list_variants",
    "official",
    "plot_coefficients",
    "positional_norm",
    "rd_inputs",
    "reattach",
    "register_layout",
    "register_variant",
    "student_from_teacher",
]
