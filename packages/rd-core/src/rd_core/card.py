"""What a model card says about a model carrying a Retriever-Dictionary.

Publishing tools (hub-knowledge) read :data:`HUB_METADATA` from the top-level ``rd_core``
package for every model whose modules come from it, so the method is described here, by the
package that implements it.

Example:
    >>> import rd_core
    >>> rd_core.HUB_METADATA["tag"], rd_core.HUB_METADATA["paper_url"]
    ('yolo-rd', 'https://arxiv.org/abs/2410.15346')
"""

from __future__ import annotations

from .factory import export_config

__all__ = ["CITATION", "HUB_METADATA"]

CITATION = """@inproceedings{tsui2025yolord,
  title={YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO
         by Retriever-Dictionary},
  author={Tsui, Hao-Tang and Wang, Chien-Yao and Liao, Hong-Yuan Mark},
  booktitle={International Conference on Learning Representations},
  year={2025}
}"""

HUB_METADATA = {
    "tag": "yolo-rd",
    "package": "rd-core",
    "paper": "YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO by "
    "Retriever-Dictionary (Tsui, Wang, Liao; ICLR 2025)",
    "paper_url": "https://arxiv.org/abs/2410.15346",
    "citation": CITATION,
    "license": "apache-2.0",
    # config.json of a model that got RDs after timm.create_model: rebuild them (with_rd)
    "export_config": export_config,
}
