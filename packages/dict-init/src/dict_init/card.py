"""What a dictionary's card says about the method its atoms are for (read by hub-knowledge).

Example:
    >>> import dict_init
    >>> dict_init.HUB_METADATA["tag"], dict_init.HUB_METADATA["tags"]
    ('yolo-rd', ['retriever-dictionary'])
"""

from __future__ import annotations

__all__ = ["HUB_METADATA"]

HUB_METADATA = {
    "tag": "yolo-rd",
    "tags": ["retriever-dictionary"],
    "package": "dict-init",
    "paper": "YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO by "
    "Retriever-Dictionary (Tsui, Wang, Liao; ICLR 2025), section 3.2",
    "paper_url": "https://arxiv.org/abs/2410.15346",
    "citation": """@inproceedings{tsui2025yolord,
  title={YOLO-RD: Introducing Relevant and Compact Explicit Knowledge to YOLO
         by Retriever-Dictionary},
  author={Tsui, Hao-Tang and Wang, Chien-Yao and Liao, Hong-Yuan Mark},
  booktitle={International Conference on Learning Representations},
  year={2025}
}""",
    "license": "apache-2.0",
}
