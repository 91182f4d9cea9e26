"""Converters from the authors' released checkpoints to this project's format.

* :func:`convert_kernelwarehouse`: the KernelWarehouse authors' models (OSVAI/KernelWarehouse),
  through ``kernelwarehouse.official.load``, rebuilt as a named timm model and checked output
  for output.

The YOLO-RD authors' RD module is read by ``rd_core.official.load`` (the ``convert-yolo-rd``
command calls it).
"""

from .kernelwarehouse import ConversionReport, convert_kernelwarehouse

__all__ = [
    "ConversionReport",
    "convert_kernelwarehouse",
]
