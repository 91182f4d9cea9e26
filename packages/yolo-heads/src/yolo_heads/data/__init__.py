"""Detection data: one dataset interface (COCO JSON or YOLO txt layout), letterbox, digits set."""

from .base import BadImageError, DetectionDataset, ImageRecord, collate
from .coco import CocoDetection
from .convert import write_yolo_txt
from .crops import make_digits_classification, write_box_crops
from .digits import SIZE_SPREAD, make_digits_detection
from .factory import DATASET_FORMATS, create_dataset
from .letterbox import LetterboxMeta, boxes_to_canvas, boxes_to_original, letterbox
from .yolo import YoloTxtDetection

__all__ = [
    "DATASET_FORMATS",
    "SIZE_SPREAD",
    "BadImageError",
    "CocoDetection",
    "DetectionDataset",
    "ImageRecord",
    "LetterboxMeta",
    "YoloTxtDetection",
    "boxes_to_canvas",
    "boxes_to_original",
    "collate",
    "create_dataset",
    "letterbox",
    "make_digits_classification",
    "make_digits_detection",
    "write_box_crops",
    "write_yolo_txt",
]
