"""Which knowledge-injection methods a model carries, told from the modules it contains.

A registry maps the top-level Python package of a module class to the method it implements,
so a model is described (card tags, citations, the packages needed to rebuild it) without
importing any sibling package.

Example:
    >>> import timm
    >>> detect_methods(timm.create_model("resnet10t"))
    []
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["METHODS", "Method", "detect_methods", "register_method"]


@dataclass(frozen=True)
class Method:
    """A published method: its card tag, the package that implements it and its citation."""

    tag: str
    package: str  # distribution name, to tell users what to install
    import_name: str  # top-level module whose classes mark the method
    paper: str
    citation: str


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.import_name] = method
    return method


register_method(
    Method(
        tag="kernelwarehouse",
        package="kernelwarehouse",
        import_name="kernelwarehouse",
        paper="KernelWarehouse: Rethinking the Design of Dynamic Convolution (Li, Yao; ICML 2024)",
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
        tag="yolo-rd",
        package="rd-core",
        import_name="rd_core",
        paper="YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO by "
        "Retriever-Dictionary (Tsui, Wang, Liao; ICLR 2025)",
        citation="""@inproceedings{tsui2025yolord,
  title={YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO
         by Retriever-Dictionary},
  author={Tsui, Hao-Tang and Wang, Chien-Yao and Liao, Hong-Yuan Mark},
  booktitle={International Conference on Learning Representations},
  year={2025}
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
        citation="""@article{wang2021yolor,
  title={You Only Learn One Representation: Unified Network for Multiple Tasks},
  author={Wang, Chien-Yao and Yeh, I-Hau and Liao, Hong-Yuan Mark},
  journal={arXiv preprint arXiv:2105.04206},
  year={2021}
}""",
    )
)


def detect_methods(model: nn.Module) -> list[Method]:
    """The registered methods whose module classes occur in ``model``, in registry order."""
    roots = {type(m).__module__.split(".", 1)[0] for m in model.modules()}
    return [method for name, method in METHODS.items() if name in roots]
