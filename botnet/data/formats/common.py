"""What every format reader shares: the splits it returns, the shapes it reads, and their conversion to COCO.

A reader parses its label files into :class:`LabeledImage` entries (pixel
coordinates, one :class:`Shape` per object, the category already resolved)
and :func:`to_coco` checks them and builds the COCO dict that
:class:`~botnet.data.coco.CocoDetection` takes, so that every check of
``coco.py`` holds for every format. The checks here are those that need
the original label file to be named: a box or polygon outside the image, a
box without area, a polygon of fewer than 3 points.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pycocotools import mask as mask_utils

from ...errors import DatasetError

__all__ = ["DetectionSplit", "DetectionSplits", "IMAGE_EXTENSIONS", "LabeledImage", "Shape", "to_coco"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# how far (pixels) a box or polygon may reach past the image border and still be taken (clipped to it):
# labelling tools round, and a 0-based box in a 1-based VOC file starts at -1
TOLERANCE = 1.0
# a box narrower than this (pixels) has no area: float32 targets would round it to nothing
MIN_SIDE = 1e-3
ORIENTATION_TAG = 0x0112
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# what the readers fix and count (the keys of a fixes Counter), as the report says them
SIZE_FIXED = "image size taken from the image file (the label file gave 0 or another size)"
ROTATED_LABELS = "label file sized for the EXIF-rotated view (its objects may be rotated)"
CLIPPED = "object overshooting the image edge by under a pixel, clipped to it"


@dataclass
class DetectionSplit:
    """One split as :class:`~botnet.data.coco.CocoDetection` takes it: a COCO file (``ann_file``) or a COCO dict
    converted in memory (``annotations``), the folder its ``file_name``\\ s are relative to, and a ``source`` that
    names it in messages."""

    name: str
    image_dir: str
    source: str
    annotations: dict | None = None
    ann_file: str | None = None

    def dataset(self, **kwargs: Any):
        """The checked :class:`~botnet.data.coco.CocoDetection` of this split (``kwargs``: transforms, skip_bad,
        with_masks, mask_crops)."""
        from ..coco import CocoDetection

        if self.annotations is None:
            return CocoDetection(self.image_dir, self.ann_file, **kwargs)
        return CocoDetection(self.image_dir, annotations=self.annotations, source=self.source, **kwargs)

    def coco(self) -> dict:
        """The COCO dict: the converted one, or the file's content (unchecked; ``dataset`` checks it)."""
        if self.annotations is not None:
            return self.annotations
        try:
            with open(self.ann_file, encoding="utf-8") as file:  # type: ignore[arg-type]
                return json.load(file)
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot read {self.ann_file} as a COCO JSON file: {error}") from error


@dataclass
class DetectionSplits:
    """A dataset recognised by :func:`~botnet.data.formats.find_layout`: its ``format`` ("coco", "voc", "yolo"
    or "labelme"), its train and val splits, and its test split when the export has one. ``heldout`` names
    the images botnet held out for val (relative to ``root``) when the export had no val split, else None;
    ``report`` is what was found, fixed and left out, as log lines."""

    format: str
    root: str
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit | None = None
    heldout: set[str] | None = None
    report: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter((self.train, self.val) + ((self.test,) if self.test is not None else ()))

    def split(self, name: str) -> DetectionSplit:
        """The split called ``name`` ("train", "val" or "test"); DatasetError when the data has no test split."""
        found = {split.name: split for split in self}
        if name not in found:
            raise DatasetError(f"{self.root} has no {name} split (it has {', '.join(found)}): choose one of those")
        return found[name]

    @property
    def classes(self) -> list[str]:
        """The training split's category names, in category id order."""
        categories = self.train.coco().get("categories", [])
        return [c.get("name") for c in sorted(categories, key=lambda c: c.get("id", 0))]

    def has_masks(self) -> bool:
        """True when every object of every split has a polygon or RLE mask (Mask R-CNN can be trained); box-only
        formats (Pascal VOC, YOLO boxes) give False: train Faster R-CNN on them."""
        found = False
        for split in self:
            for ann in split.coco().get("annotations", []):
                if isinstance(ann, dict) and not ann.get("iscrowd"):
                    if ann.get("segmentation") in (None, []):
                        return False
                    found = True
        return found


@dataclass
class Shape:
    """One object in pixel coordinates: a box (x1, y1, x2, y2) or polygons (flat [x1, y1, x2, y2, ...] lists,
    whose extent is the box); ``where`` names it in messages ("labels/train/a.txt line 3")."""

    category_id: int
    where: str
    box: tuple[float, float, float, float] | None = None
    polygons: list[list[float]] | None = None
    iscrowd: int = 0


@dataclass
class LabeledImage:
    """An image (``file_name``: its path) and its objects; ``width``/``height`` None when the file cannot be read
    (CocoDetection then names it as unreadable, or skips it); ``orientation`` its EXIF orientation tag, if any."""

    file_name: str
    width: int | None
    height: int | None
    shapes: list[Shape] = field(default_factory=list)
    orientation: int | None = None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def image_header(path: str) -> tuple[tuple[int, int] | None, int | None]:
    """((width, height), EXIF orientation tag or None) from the file's header (nothing is decoded); (None, None)
    when PIL cannot open it. The file's content decides its format, not its name (a PNG named .jpg is a PNG)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # very large images are still images
            with Image.open(path) as image:
                orientation = image.getexif().get(ORIENTATION_TAG) if image.format in ("JPEG", "TIFF", "WEBP") else None
                return image.size, orientation if orientation in range(2, 9) else None  # 1 is upright, 0 invalid
    except Exception:  # noqa: BLE001 - PIL raises many types for bad files; CocoDetection names the problem
        return None, None


def labeled_image(path: str, declared: tuple[int, int] | None = None, fixes: Counter | None = None) -> LabeledImage:
    """The image at ``path``, its size from the file; a label file's ``declared`` size that is missing, 0 or
    another one is replaced by it and counted in ``fixes`` (the objects must then lie inside the file's
    size, or their check names them)."""
    size, orientation = image_header(path)
    if size is not None and declared is not None and declared != size and fixes is not None:
        fixes[SIZE_FIXED] += 1
        if declared == size[::-1] and orientation in ROTATED:
            fixes[ROTATED_LABELS] += 1
    size = size or declared
    return LabeledImage(path, *(size or (None, None)), orientation=orientation)


def list_images(folder: str, *, recursive: bool = False) -> list[str]:
    """Image files in ``folder`` (paths relative to it, "/"-separated), sorted."""
    found = []
    for current, folders, files in os.walk(folder):
        folders.sort()
        if not recursive:
            folders.clear()
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(current, name), folder).replace(os.sep, "/"))
    return sorted(found)


def _outside(xs: list[float], ys: list[float], width: int, height: int) -> bool:
    return min(xs) < -TOLERANCE or min(ys) < -TOLERANCE or max(xs) > width + TOLERANCE or max(ys) > height + TOLERANCE


def _check_polygon(shape: Shape, polygon: list[float], width: int, height: int, image: str) -> None:
    if len(polygon) % 2 or not all(is_number(v) for v in polygon):
        raise DatasetError(f"{shape.where}: a polygon needs finite x y pairs; fix or remove it")
    if len(polygon) < 6:
        raise DatasetError(
            f"{shape.where}: a polygon has {len(polygon) // 2} point(s); an object's outline needs at least 3: "
            f"fix or remove it"
        )
    xs, ys = polygon[0::2], polygon[1::2]
    if _outside(xs, ys, width, height):
        raise DatasetError(
            f"{shape.where}: the polygon reaches ({min(xs):g}..{max(xs):g}, {min(ys):g}..{max(ys):g}), outside the "
            f"{width}x{height} image {image}; fix it (the labels may belong to another image)"
        )


def _annotation(shape: Shape, width: int, height: int, image: str, fixes: Counter) -> dict:
    """The COCO annotation fields of a checked shape (bbox clipped to the image, area, segmentation)."""
    if shape.polygons is not None:
        if not shape.polygons:
            raise DatasetError(f"{shape.where}: the object has no points; fix or remove it")
        for polygon in shape.polygons:
            _check_polygon(shape, polygon, width, height, image)
        xs = [v for polygon in shape.polygons for v in polygon[0::2]]
        ys = [v for polygon in shape.polygons for v in polygon[1::2]]
        box = (min(xs), min(ys), max(xs), max(ys))
    else:
        box = shape.box  # type: ignore[assignment]
        if box is None or len(box) != 4 or not all(is_number(v) for v in box):
            raise DatasetError(f"{shape.where}: the box needs 4 finite numbers; fix or remove it")
        if _outside([box[0], box[2]], [box[1], box[3]], width, height):
            raise DatasetError(
                f"{shape.where}: the box ({box[0]:g}, {box[1]:g})-({box[2]:g}, {box[3]:g}) reaches outside the "
                f"{width}x{height} image {image}; fix it (the labels may belong to another image)"
            )
    if min(box[0], box[1]) < 0 or box[2] > width or box[3] > height:
        fixes[CLIPPED] += 1
    x1, y1 = min(max(box[0], 0.0), width), min(max(box[1], 0.0), height)
    x2, y2 = min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)
    if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
        raise DatasetError(
            f"{shape.where}: the box ({box[0]:g}, {box[1]:g})-({box[2]:g}, {box[3]:g}) has no area "
            f"(w={x2 - x1:g} h={y2 - y1:g} in the {width}x{height} image {image}); fix or remove it"
        )
    ann: dict[str, Any] = {"bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": shape.iscrowd}
    if shape.polygons is not None:
        polygons = [[float(v) for v in polygon] for polygon in shape.polygons]
        ann["segmentation"] = polygons
        # what pycocotools and CocoDetection count for a polygon: the rasterised mask's pixels
        ann["area"] = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))
    else:
        ann["area"] = (x2 - x1) * (y2 - y1)
    return ann


def to_coco(images: list[LabeledImage], categories: list[tuple[int, str]], fixes: Counter) -> dict:
    """The COCO dict of checked ``images`` (one per path, ids 1..N in order, annotation ids 1..M; file_name the
    image's path); objects clipped to their image are counted in ``fixes``."""
    coco: dict[str, list] = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": category_id, "name": name} for category_id, name in categories]
    for image_id, image in enumerate(images, start=1):
        entry: dict[str, Any] = {"id": image_id, "file_name": image.file_name}
        if image.width is not None and image.height is not None:
            entry.update(width=image.width, height=image.height)
        if image.orientation is not None:
            entry["exif_orientation"] = image.orientation
        coco["images"].append(entry)
        if image.width is None or image.height is None:
            continue  # unreadable: CocoDetection reports (or skips) the image, and so its objects
        for shape in image.shapes:
            ann = _annotation(shape, image.width, image.height, image.file_name, fixes)
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": shape.category_id, **ann}
            )
    return coco
