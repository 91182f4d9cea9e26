"""Converters from the authors' released checkpoints to this project's format.

* :func:`convert_kernelwarehouse`: the KernelWarehouse authors' models (OSVAI/KernelWarehouse),
  through ``kernelwarehouse.official.load``, rebuilt as a named timm model and checked output
  for output.
* :func:`convert_yolo_rd`: the YOLO-RD authors' Retriever-Dictionary module weights into
  ``rd_core.RetrieverDictionary(variant="authors")``, matched by structure.
"""

from .kernelwarehouse import ConversionReport, convert_kernelwarehouse
from .yolo_rd import RD_ROLES, convert_yolo_rd, find_rd_modules

__all__ = [
    "RD_ROLES",
    "ConversionReport",
    "convert_kernelwarehouse",
    "convert_yolo_rd",
    "find_rd_modules",
]
