"""Detection labels in the formats labelling tools export, read as the COCO data botnet trains on.

:func:`find_layout` finds a dataset by what its files are (COCO, Pascal VOC
XML, YOLO txt, LabelMe JSON; see :mod:`botnet.data.formats.discover`) and
returns its train, val and test splits; the non-COCO ones are converted in
memory to the same COCO dict :class:`~botnet.data.coco.CocoDetection` reads
from a file, so every check of ``coco.py`` (and its one-line errors) holds
for every format. ``split.dataset(...)`` builds the checked dataset. The
readers' own checks name the label file (and line or object) that is wrong.
:func:`write_coco` writes any of them as a COCO folder.

Box-only formats (Pascal VOC, YOLO boxes) give annotations without
"segmentation": :meth:`DetectionSplits.has_masks` says whether Mask R-CNN can
be trained on a dataset, and CocoDetection with masks names an object
without one.
"""

from __future__ import annotations

from .common import DetectionSplit, DetectionSplits
from .discover import FORMAT_NAMES, FORMATS, find_layout, layout_of
from .voc import parse_xml
from .writer import write_coco

__all__ = ["FORMATS", "FORMAT_NAMES", "DetectionSplit", "DetectionSplits", "find_layout", "layout_of", "parse_xml",
           "write_coco"]


def read_voc(root: str, *, difficult: str = "train") -> DetectionSplits:
    """The Pascal VOC data in ``root`` (:func:`find_layout` with the format chosen)."""
    return find_layout(root, data_format="voc", difficult=difficult)


def read_yolo(root: str) -> DetectionSplits:
    """The YOLO data in ``root`` (:func:`find_layout` with the format chosen)."""
    return find_layout(root, data_format="yolo")


def read_labelme(root: str) -> DetectionSplits:
    """The LabelMe data in ``root`` (:func:`find_layout` with the format chosen)."""
    return find_layout(root, data_format="labelme")
