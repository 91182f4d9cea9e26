"""The paper configurations of the knowledge-vision packages, in timm's model factory.

Importing this package registers them: KernelWarehouse networks per budget
(``kw_resnet18_1x``, ``kw_mobilenetv2_050_4x``, ...) and classifiers with a Retriever-Dictionary
(``rd_resnet50``, ...), and with ``yolo-heads`` installed YOLO detectors (``yolo_rd_resnet50``,
``yolor_resnet50``). Each has a ``pretrained_cfg`` whose ``hf_hub_id`` names the repository
``knowledge-vision/<name>.<tag>`` on the Hugging Face Hub.

Example:
    >>> import timm, timm_knowledge
    >>> "kw_resnet50_4x" in timm.list_models("kw_*") and "rd_resnet50" in timm.list_models("rd_*")
    True
    >>> timm_knowledge.PAPER_MODELS["kw_resnet18_025x"].paper_params_m
    4.08
"""

import importlib.util

from . import _registry, kw_paper, rd_paper
from ._registry import HUB_ORG, PAPER_MODELS, PaperModel, hub_id
from .kw_paper import KW_PAPER_BUDGETS, budget_suffix
from .rd_paper import RD_ARCHITECTURES

# detectors need yolo-heads (the "detection" extra); without it they are simply not registered
if importlib.util.find_spec("yolo_heads") is not None:
    from . import det_paper  # noqa: F401

# timm lists every tag with a Hub id as pretrained: only the uploaded ones are
_registry.unlist_unpublished(list(PAPER_MODELS))

__version__ = "0.1.0"


def list_paper_models(method: str | None = None) -> list[str]:
    """Names registered by this package, optionally of one method (``"kernelwarehouse"``,
    ``"yolo-rd"``, ``"yolor"``).

    Example:
        >>> list_paper_models("yolo-rd")[:3]
        ['rd_resnet18', 'rd_resnet50', 'rd_convnext_tiny']
    """
    methods = {m.method for m in PAPER_MODELS.values()}
    if method is not None and method not in methods:
        raise ValueError(f"method={method!r} is invalid; valid: {sorted(methods)}")
    return [n for n, m in PAPER_MODELS.items() if method is None or m.method == method]


__all__ = [
    "HUB_ORG",
    "KW_PAPER_BUDGETS",
    "PAPER_MODELS",
    "RD_ARCHITECTURES",
    "PaperModel",
    "__version__",
    "budget_suffix",
    "hub_id",
    "kw_paper",
    "list_paper_models",
    "rd_paper",
]
