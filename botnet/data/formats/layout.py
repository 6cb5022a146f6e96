"""Recognising a detection dataset folder by its layout, and reading it in whichever format it is."""

from __future__ import annotations

import os

from ...errors import DatasetError, MissingFileError
from . import labelme, voc, yolo
from .common import SPLITS, DetectionSplit, DetectionSplits

__all__ = ["FORMATS", "LAYOUTS", "find_layout", "layout_of", "read_coco_layout"]

FORMATS = ("coco", "voc", "yolo", "labelme")
LAYOUTS = (
    "COCO: ROOT/{train,val}/images/ + ROOT/{train,val}/annotations.json",
    "Pascal VOC: ROOT/Annotations/*.xml + ROOT/JPEGImages/ + ROOT/ImageSets/Main/{train,val}.txt, "
    "or ROOT/{train,val}/ with Annotations/ + JPEGImages/ (or the .xml files next to the images)",
    "YOLO: ROOT/images/{train,val}/ + ROOT/labels/{train,val}/ (or ROOT/{train,valid}/{images,labels}/) "
    "+ ROOT/data.yaml or ROOT/classes.txt",
    "LabelMe: ROOT/{train,val}/*.json next to the images",
)


def _is_coco(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "train", "annotations.json"))


def layout_of(root: str) -> str:
    """The format of the folder ``root`` ("coco", "voc", "yolo" or "labelme"), from its layout alone (nothing is
    read); DatasetError listing the expected layouts when it is none of them."""
    if not os.path.isdir(root):
        raise MissingFileError(f"dataset folder {root} does not exist")
    for name, matches in (("coco", _is_coco), ("yolo", yolo.matches), ("voc", voc.matches),
                          ("labelme", labelme.matches)):
        if matches(root):
            return name
    what = "is empty" if not os.listdir(root) else "is in no layout botnet reads"
    raise DatasetError(f"{root} {what}; expected one of: " + "; ".join(LAYOUTS))


def read_coco_layout(root: str) -> DetectionSplits:
    """Today's COCO layout: the annotation files are named, not read (CocoDetection reads and checks them)."""
    splits = {}
    for split in SPLITS:
        ann_file = os.path.join(root, split, "annotations.json")
        image_dir = os.path.join(root, split, "images")
        if not os.path.isfile(ann_file):
            raise DatasetError(f"{root} has train/annotations.json but no {split}/annotations.json: add the "
                               f"{split} split (COCO layout: ROOT/{{train,val}}/images/ + annotations.json)")
        splits[split] = DetectionSplit(split, image_dir, ann_file, ann_file=ann_file)
    return DetectionSplits("coco", root, splits["train"], splits["val"])


def find_layout(root: str, *, difficult: str = "train") -> DetectionSplits:
    """The train and val splits of the dataset folder ``root``, recognised by layout (see :data:`LAYOUTS`):
    COCO files by path, Pascal VOC, YOLO and LabelMe labels converted in memory to COCO dicts. ``difficult``:
    what Pascal VOC's difficult objects become (see :mod:`botnet.data.formats.voc`)."""
    found = layout_of(root)
    if found == "coco":
        return read_coco_layout(root)
    if found == "voc":
        return voc.read_voc(root, difficult=difficult)
    if found == "yolo":
        return yolo.read_yolo(root)
    return labelme.read_labelme(root)
