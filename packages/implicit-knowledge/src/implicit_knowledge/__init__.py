"""YOLOR's implicit knowledge for PyTorch models.

>>> import torch
>>> from torch import nn
>>> from implicit_knowledge import ImplicitAdd, ImplicitMul, fuse
>>> model = nn.Sequential(ImplicitAdd(16, prior="factorized"), nn.Conv2d(16, 8, 1), ImplicitMul(8))
>>> fused = fuse(model.eval())
>>> x = torch.randn(1, 16, 4, 4)
>>> bool((model(x) - fused(x)).abs().max() < 1e-5)
True
"""

from .blocks import ImplicitFeatureAlignment, ImplicitPredictionRefinement
from .fusion import fuse, implicit_layers
from .layers import ImplicitAdd, ImplicitConcat, ImplicitLayer, ImplicitMul
from .priors import create_prior, list_priors, register_prior

__version__ = "0.1.0"

__all__ = [
    "ImplicitAdd",
    "ImplicitConcat",
    "ImplicitFeatureAlignment",
    "ImplicitLayer",
    "ImplicitMul",
    "ImplicitPredictionRefinement",
    "__version__",
    "create_prior",
    "fuse",
    "implicit_layers",
    "list_priors",
    "register_prior",
]
