"""Export a detector for deployment: ONNX with decoding and NMS inside, and ``torch.export``.

:func:`export_onnx` writes a graph that takes images ``[B, 3, H, W]`` in [0, 1] (any batch size)
and returns one tensor ``detections [K, 7]``: rows ``(batch_index, x1, y1, x2, y2, score,
label)`` in pixels of the input, grouped by image (ascending ``batch_index``) and by descending
score inside an image, the same boxes as ``model.predict(images, conf, iou, max_det,
multi_label=True)``: every (box, class) pair scoring above ``conf``, boxes clipped to the image,
greedy NMS per class and per image at ``iou``, the ``max_det`` best of each image.

NMS is ONNX's ``NonMaxSuppression`` operator, which handles the batch and the classes itself.
In PyTorch it is the custom operator ``yolo_heads::multiclass_nms`` (an eager implementation on
``torchvision.ops.batched_nms``), which the dynamo exporter translates to that ONNX operator.
Where ONNX Runtime and torchvision can disagree:

- ties: boxes with equal scores are visited in index order by ONNX Runtime and in an
  unspecified order by torchvision, so which of two tied overlapping boxes survives can differ;
- an IoU within float rounding of ``iou`` can fall on either side (both drop IoU > ``iou``);
- boxes of zero area never suppress anything in ONNX Runtime (in torchvision their IoU is NaN,
  which suppresses nothing either);
- ``max_det``: ONNX's ``max_output_boxes_per_class`` is per class and image, ``predict``'s is
  per image. The graph asks NMS for ``max_det`` boxes per class (exact: greedy NMS keeps its
  boxes in score order, so an image's ``max_det`` best are among its classes' ``max_det`` best)
  and then keeps each image's ``max_det`` best, so the result is the same as ``predict``'s;
- ``predict`` keeps at most 30000 candidates per image before NMS, the graph keeps all, which
  only matters for huge inputs with a very low ``conf``.

A segmenter (:class:`~yolo_heads.heads.SegmentHead`) gets a second output ``masks`` ``[K, H, W]``
(uint8, 1 inside the object), row for row with ``detections``: the detection's coefficients
times its image's prototypes, up-sampled bilinearly to the input, ``sigmoid > 0.5``, cropped to
the box, as ``predict``'s ``masks``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from ._checks import check_fraction, check_positive
from ._files import write_atomic
from .fuse import fuse_for_inference

__all__ = ["DetectionGraph", "export_onnx", "export_program", "multiclass_nms"]

DEFAULT_OPSET = 18


@torch.library.custom_op("yolo_heads::multiclass_nms", mutates_args=())
def multiclass_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_per_class: int,
    iou: float,
    conf: float,
) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` semantics on torchvision: ``[K, 3]`` rows (image, class, box).

    ``boxes`` are ``[B, A, 4]`` xyxy, ``scores`` ``[B, C, A]``. Per image and class: boxes
    scoring above ``conf``, greedy NMS dropping IoU > ``iou``, at most ``max_per_class`` kept.

    >>> boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]])
    >>> scores = torch.tensor([[[0.9, 0.8, 0.7], [0.1, 0.6, 0.0]]])
    >>> multiclass_nms(boxes, scores, 10, 0.5, 0.3).tolist()
    [[0, 0, 0], [0, 0, 2], [0, 1, 1]]
    """
    rows = []
    for b in range(boxes.shape[0]):
        cls, box = (scores[b] > conf).nonzero(as_tuple=True)
        score = scores[b, cls, box]
        keep = torchvision.ops.batched_nms(boxes[b, box].float(), score.float(), cls, iou)
        cls, box = cls[keep], box[keep]
        # Rank of each kept box inside its class (keep is in descending score order).
        same = cls[:, None] == torch.arange(scores.shape[1], device=cls.device)[None, :]
        rank = same.long().cumsum(0).gather(1, cls[:, None]).squeeze(1) - 1
        first = rank < max_per_class
        cls, box = cls[first], box[first]
        order = cls.argsort(stable=True)  # class-major, as ONNX Runtime returns them
        cls, box = cls[order], box[order]
        rows.append(torch.stack((torch.full_like(cls, b), cls, box), dim=1))
    if not rows:
        return torch.zeros(0, 3, dtype=torch.long, device=boxes.device)
    return torch.cat(rows)


@multiclass_nms.register_fake
def _(boxes, scores, max_per_class, iou, conf):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.long)


def _onnx_multiclass_nms(boxes, scores, max_per_class: int, iou: float, conf: float):
    from onnxscript import opset18 as op

    return op.NonMaxSuppression(
        boxes,
        scores,
        op.Constant(value_ints=[max_per_class]),
        op.Constant(value_floats=[iou]),
        op.Constant(value_floats=[conf]),
    )


class DetectionGraph(nn.Module):
    """A detector with decoding, clipping and NMS in its forward: images -> ``[K, 7]`` rows.

    The module :func:`export_onnx` exports; runnable in PyTorch too (the same rows as
    ``predict``, see the module docstring).
    """

    def __init__(
        self, model: nn.Module, conf: float = 0.25, iou: float = 0.65, max_det: int = 300
    ) -> None:
        super().__init__()
        check_fraction("conf", conf)
        check_fraction("iou", iou)
        check_positive("max_det", max_det, integer=True)
        if not hasattr(getattr(model, "head", None), "decode"):
            raise ValueError(
                f"model={type(model).__name__} has no detection head with decode(); export_onnx "
                "needs a YOLODetector with head='anchor_free' or 'anchor_based'"
            )
        self.model, self.conf, self.iou, self.max_det = model, float(conf), float(iou), max_det
        #: a segmenter: a second output, the detections' masks
        self.segments = hasattr(model.head, "coefficients")

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(images)
        boxes, scores = self.model.head.decode(outputs)
        h, w = images.shape[-2:]
        x1, y1, x2, y2 = boxes.unbind(-1)
        boxes = torch.stack(
            (x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)), dim=-1
        )
        scores = scores.transpose(1, 2).contiguous()  # [B, C, A] for ONNX NMS
        selected = multiclass_nms(boxes, scores, self.max_det, self.iou, self.conf)
        image, label, anchor = selected.unbind(1)
        score = scores[image, label, anchor]
        # Keep each image's max_det best: rank inside the image in descending score order.
        order = score.argsort(descending=True)
        image, label, score, anchor = image[order], label[order], score[order], anchor[order]
        same = image[:, None] == torch.arange(images.shape[0], device=image.device)[None, :]
        rank = same.long().cumsum(0).gather(1, image[:, None]).squeeze(1) - 1
        # Image-major, best first: the key is unique, so the sort needs no stability.
        key = torch.where(rank < self.max_det, image * self.max_det + rank, -1)
        order = key.argsort()
        order = order[key[order] >= 0]
        image, label, score, anchor = image[order], label[order], score[order], anchor[order]
        box = boxes[image, anchor]
        rows = torch.cat((image[:, None].to(box), box, score[:, None], label[:, None].to(box)), 1)
        if not self.segments:
            return rows
        coefficients = self.model.head.coefficients(outputs)[image, anchor]
        return rows, _masks(coefficients, outputs[-1], image, box, (h, w))


def _masks(
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Masks [K, H, W] (uint8) of detections: as :func:`yolo_heads.masks.masks_for_boxes`,
    with each detection's prototypes picked by its image index (no per-row loop)."""
    b, m, ph, pw = prototypes.shape
    # [K, B, ph * pw] then the row's own image: K x B products are small next to a gather of
    # K copies of the prototypes
    every = torch.einsum("km,bmn->kbn", coefficients, prototypes.reshape(b, m, ph * pw))
    index = image.view(-1, 1, 1).expand(-1, 1, ph * pw)
    logits = every.gather(1, index).reshape(-1, 1, ph, pw)
    logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    h, w = size
    cols = torch.arange(w, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1) + 0.5
    rows = torch.arange(h, device=boxes.device, dtype=boxes.dtype).view(1, -1, 1) + 0.5
    x1, y1, x2, y2 = (v.view(-1, 1, 1) for v in boxes.unbind(1))
    inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    return ((logits[:, 0].sigmoid() > 0.5) & inside).to(torch.uint8)


def _example(model: nn.Module, image_size: int | tuple[int, int], batch: int) -> torch.Tensor:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    stride = max(getattr(getattr(model, "backbone", None), "strides", [32]))
    if len(size) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s <= 0 or s % stride for s in size
    ):
        raise ValueError(
            f"image_size={image_size!r} is not valid; expected an int or (height, width) of "
            f"positive multiples of {stride}"
        )
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, getattr(model, "in_chans", 3), *size, generator=generator)
    return images.to(param.device)


def _batch_dim() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch", min=1, max=4096)}


def export_program(
    model: nn.Module, image_size: int | tuple[int, int] = 640
) -> torch.export.ExportedProgram:
    """``torch.export`` of the fused detector's raw head outputs (no decoding, no NMS).

    The program takes images ``[B, C, H, W]`` in [0, 1] with a dynamic batch ``B`` and the given
    ``image_size``; ``program.module()(images)`` equals ``fuse_for_inference(model)(images)``.

    >>> import yolo_heads
    >>> det = yolo_heads.YOLODetector("resnet18", num_classes=2, neck_channels=16,
    ...                               channels=(8, 16, 32, 64), stem_width=8)
    >>> program = export_program(det, image_size=64)
    >>> [o.shape[0] for o in program.module()(torch.rand(3, 3, 64, 64))]
    [3, 3, 3]
    """
    # Batch 2 as the example: torch.export specialises sizes 0 and 1.
    example = _example(model, image_size, batch=2)
    fused = fuse_for_inference(model, example)
    return torch.export.export(fused, (example,), dynamic_shapes=(_batch_dim(),))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int | tuple[int, int] = 640,
    conf: float = 0.25,
    iou: float = 0.65,
    max_det: int = 300,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the fused detector with decoding and NMS as an ONNX model; returns the path.

    Input ``images`` ``[B, 3, H, W]`` (float32 in [0, 1], dynamic ``B``, ``(H, W) =
    image_size``), output ``detections`` ``[K, 7]`` = ``(batch_index, x1, y1, x2, y2, score,
    label)``, the rows of ``model.predict(images, conf, iou, max_det)`` (see the module
    docstring for where ONNX Runtime's NMS can differ); a segmenter's second output is
    ``masks`` ``[K, H, W]``. Implicit knowledge and BatchNorm are
    folded first (:func:`yolo_heads.fuse_for_inference`). The file is written under a temporary
    name and renamed, so a failed export leaves nothing at ``path``. Needs ``onnx`` and
    ``onnxscript``.

    >>> import tempfile, yolo_heads
    >>> det = yolo_heads.YOLODetector("resnet18", num_classes=2, neck_channels=16,
    ...                               channels=(8, 16, 32, 64), stem_width=8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     export_onnx(det, f"{tmp}/det.onnx", image_size=64).name
    'det.onnx'
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(
            f"opset={opset!r} is not valid; expected an integer >= {DEFAULT_OPSET} (the dynamo "
            "exporter's minimum)"
        )
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path={str(path)!r} is not valid; expected a file name ending in .onnx")
    example = _example(model, image_size, batch=2)
    graph = DetectionGraph(fuse_for_inference(model, example), conf, iou, max_det).eval()
    program = torch.onnx.export(
        graph,
        (example,),
        input_names=["images"],
        output_names=["detections", "masks"] if graph.segments else ["detections"],
        dynamic_shapes=(_batch_dim(),),
        custom_translation_table={
            torch.ops.yolo_heads.multiclass_nms.default: _onnx_multiclass_nms
        },
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    # the model proto is saved whole (no external data: detectors here are far below 2 GB)
    return write_atomic(path, lambda tmp: program.save(str(tmp)))
