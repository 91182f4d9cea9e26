"""Detection data: COCO-format dataset, letterbox, and the handwritten-digits set."""

from .coco import CocoDetection, collate
from .digits import make_digits_detection
from .letterbox import LetterboxMeta, boxes_to_canvas, boxes_to_original, letterbox

__all__ = [
    "CocoDetection",
    "LetterboxMeta",
    "boxes_to_canvas",
    "boxes_to_original",
    "collate",
    "letterbox",
    "make_digits_detection",
]
