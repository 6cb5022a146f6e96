"""Detection labels in the formats labelling tools export, read as the COCO data botnet trains on.

:func:`find_layout` recognises a dataset folder by its layout (COCO, Pascal
VOC XML, YOLO txt, LabelMe JSON: see :data:`LAYOUTS`) and returns its train
and val splits; the non-COCO ones are converted in memory to the same COCO
dict :class:`~botnet.data.coco.CocoDetection` reads from a file, so every
check of ``coco.py`` (and its one-line errors) holds for every format.
``split.dataset(...)`` builds the checked dataset. The readers' own checks
name the label file (and line or object) that is wrong. :func:`write_coco`
writes any of them as a COCO folder.

Box-only formats (Pascal VOC, YOLO boxes) give annotations without
"segmentation": :meth:`DetectionSplits.has_masks` says whether Mask R-CNN can
be trained on a dataset, and CocoDetection with masks names an object
without one.
"""

from __future__ import annotations

from .common import DetectionSplit, DetectionSplits
from .labelme import read_labelme
from .layout import FORMATS, LAYOUTS, find_layout, layout_of, read_coco_layout
from .voc import parse_xml, read_voc
from .writer import write_coco
from .yolo import read_class_names, read_yolo

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "DetectionSplit",
    "DetectionSplits",
    "find_layout",
    "layout_of",
    "parse_xml",
    "read_class_names",
    "read_coco_layout",
    "read_labelme",
    "read_voc",
    "read_yolo",
    "write_coco",
]
