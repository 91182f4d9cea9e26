"""Which knowledge-injection methods a model carries, told from the modules it contains.

Each method package describes itself: its top-level package holds a ``HUB_METADATA`` mapping
(``tag``, ``package``, ``paper``, ``paper_url``, ``citation``; optionally ``tags``, ``license``
and ``export_config``, a callable ``(model, config) -> config`` that rewrites ``config.json`` so
that timm's factory rebuilds what the package added to the model). hub-knowledge reads it for
every top-level package whose classes occur in the model, without importing anything new.

:data:`FALLBACK` describes packages that do not declare their metadata yet (kernelwarehouse,
implicit-knowledge); a package's own ``HUB_METADATA`` always wins over it.

Example:
    >>> import timm
    >>> detect_methods(timm.create_model("resnet10t"))
    []
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["FALLBACK", "Method", "detect_methods", "method_for", "register_method"]


@dataclass(frozen=True)
class Method:
    """A published method: its card tag, the package that implements it and its citation."""

    tag: str
    package: str  # distribution name, to tell users what to install
    import_name: str  # top-level module whose classes mark the method
    paper: str
    citation: str
    paper_url: str = ""
    tags: tuple[str, ...] = ()
    license: str = ""
    export_config: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = field(
        default=None, compare=False
    )


FALLBACK: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Describe a package that has no ``HUB_METADATA`` of its own (a fallback)."""
    FALLBACK[method.import_name] = method
    return method


register_method(
    Method(
        tag="kernelwarehouse",
        package="kernelwarehouse",
        import_name="kernelwarehouse",
        paper="KernelWarehouse: Rethinking the Design of Dynamic Convolution (Li, Yao; ICML 2024)",
        paper_url="https://arxiv.org/abs/2406.07879",
        citation="""@inproceedings{li2024kernelwarehouse,
  title={KernelWarehouse: Rethinking the Design of Dynamic Convolution},
  author={Li, Chao and Yao, Anbang},
  booktitle={International Conference on Machine Learning},
  year={2024}
}""",
    )
)
register_method(
    Method(
        tag="yolor",
        package="implicit-knowledge",
        import_name="implicit_knowledge",
        paper="You Only Learn One Representation: Unified Network for Multiple Tasks "
        "(Wang, Yeh, Liao; 2021)",
        paper_url="https://arxiv.org/abs/2105.04206",
        citation="""@article{wang2021yolor,
  title={You Only Learn One Representation: Unified Network for Multiple Tasks},
  author={Wang, Chien-Yao and Yeh, I-Hau and Liao, Hong-Yuan Mark},
  journal={arXiv preprint arXiv:2105.04206},
  year={2021}
}""",
    )
)


def method_for(import_name: str) -> Method | None:
    """The method the already imported top-level package ``import_name`` declares, if any."""
    declared = getattr(sys.modules.get(import_name), "HUB_METADATA", None)
    if isinstance(declared, Mapping):
        fields = dict(declared)
        fields["tags"] = tuple(fields.get("tags", ()))
        try:
            return Method(import_name=import_name, **fields)
        except TypeError as e:
            raise ValueError(f"{import_name}.HUB_METADATA is malformed ({e})") from None
    return FALLBACK.get(import_name)


def detect_methods(model: nn.Module) -> list[Method]:
    """The methods whose module classes occur in ``model``, in the order they first occur."""
    roots = dict.fromkeys(type(m).__module__.split(".", 1)[0] for m in model.modules())
    return [method for root in roots if (method := method_for(root)) is not None]
