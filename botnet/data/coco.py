"""COCO-format instance data (boxes, and masks) for torchvision's Faster / Mask R-CNN, checked before training.

The annotation file is read once and every image and annotation is checked up
front: image files must exist, be readable and have the size the file claims;
annotations must point at a known image and category and have a usable box
(and a mask, when masks are trained). Problems that only concern one entry (a
missing or unreadable image, a degenerate box, an unknown category) stop the
run with their names, or with ``skip_bad=True`` are left out and counted in
:class:`SkippedAnnotations`. Problems that mean the file itself is wrong
(duplicate ids, annotations for images the file does not list, sizes that do
not match the images) always stop the run.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import DatasetError, MissingFileError
from .box_masks import BoxMasks, crop_mask
from .images import check_images, read_image

__all__ = ["CocoDetection", "SkippedAnnotations"]

MISSING_IMAGE, CORRUPT_IMAGE, DEGENERATE_BOX, UNKNOWN_CATEGORY = (
    "missing_image", "corrupt_image", "degenerate_box", "unknown_category",
)  # fmt: skip
REASONS = (MISSING_IMAGE, CORRUPT_IMAGE, DEGENERATE_BOX, UNKNOWN_CATEGORY)
_WORDS = {  # reason -> (singular, plural) for summaries
    MISSING_IMAGE: ("missing image", "missing images"),
    CORRUPT_IMAGE: ("unreadable image", "unreadable images"),
    DEGENERATE_BOX: ("degenerate box", "degenerate boxes"),
    UNKNOWN_CATEGORY: ("annotation with an unknown category", "annotations with an unknown category"),
}
_EXAMPLES = 5
_SKIP_HINT = "Fix the annotations or image files, or pass --skip-bad to leave such entries out (they are counted)"


@dataclass
class SkippedAnnotations:
    """What was left out with skip_bad=True, counted per reason, with a few examples each.

    Reasons are "missing_image", "corrupt_image" (a dropped image's annotations
    are not counted again), "degenerate_box" and "unknown_category"; only the
    reasons that occurred appear.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        """Count one left-out entry; ``example`` describes it (file name / annotation id)."""
        if reason not in _WORDS:
            raise ValueError(f"unknown reason {reason!r}: expected one of {', '.join(REASONS)}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < _EXAMPLES:
            shown.append(example)

    def total(self) -> int:
        """How many entries were left out, all reasons together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line, e.g. "3 degenerate boxes (annotation 17 in img_003.png: w=0 h=4, ...)"; "" when nothing."""
        parts = []
        for reason in sorted(self.counts, key=lambda r: REASONS.index(r) if r in REASONS else len(REASONS)):
            count = self.counts[reason]
            shown = self.examples.get(reason, [])
            more = ", ..." if count > len(shown) else ""
            singular, plural = _WORDS.get(reason, (reason, reason))
            parts.append(f"{count} {singular if count == 1 else plural} ({', '.join(shown)}{more})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, int]:
        """Counts per reason, for logs and run summaries."""
        return dict(self.counts)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _probe_images(paths: list[str], folder: str) -> list[tuple[str | None, str, tuple[int, int] | None]]:
    """(reason or None, detail, (width, height)) per image file; every file is decoded once (cached)."""
    present = [p for p in paths if os.path.isfile(p)]
    reasons = check_images(present, folder=folder)
    probes = []
    for path in paths:
        if path not in reasons:
            probes.append((MISSING_IMAGE, "no such file", None))
        elif reasons[path] is not None:
            probes.append((CORRUPT_IMAGE, reasons[path], None))
        else:
            try:
                with Image.open(path) as image:
                    probes.append((None, "", image.size))
            except Exception as error:  # noqa: BLE001 - changed since it was checked
                probes.append((CORRUPT_IMAGE, f"{type(error).__name__}: {error}", None))
    return probes


def _check_segmentation_shape(segmentation: Any) -> str | None:
    """None if ``segmentation`` is a polygon list or an RLE dict in COCO's layout, else what is wrong."""
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_is_number(v) and math.isfinite(v) for v in polygon):
                return "a polygon segmentation must be a list of lists of finite numbers [x1, y1, x2, y2, ...]"
            # pycocotools reads a 4-number polygon as a box, so 3 points are the least
            if len(polygon) < 6 or len(polygon) % 2:
                return f"a polygon needs an even number of at least 6 coordinates, got {len(polygon)}"
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
            return f'an RLE segmentation needs "size": [height, width], got {size!r}'
        if isinstance(counts, str):
            return None
        if isinstance(counts, list) and all(_is_int(v) and v >= 0 for v in counts):
            return None
        return 'an RLE segmentation needs "counts" as a list of run lengths or a compressed string'
    return f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"


def _compressed_rle_runs(counts: str) -> list[int] | None:
    """The run lengths in COCO's compressed RLE string (what pycocotools' rleFrString reads), or None when the
    string is malformed. pycocotools does not check: a bad string makes it read or write out of bounds."""
    runs: list[int] = []
    value, shift, more = 0, 0, False
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64 or shift > 30:  # six bits per character; a 32-bit run needs at most 7 characters
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        more = bool(code & 0x20)
        if more:
            continue
        if code & 0x10:
            value -= 1 << shift  # the last character's 0x10 bit is the sign
        if len(runs) > 2:
            value += runs[-2]  # runs after the second are stored as differences
        if not 0 <= value < 2**32:
            return None
        runs.append(value)
        value, shift = 0, 0
    return None if more else runs


def _to_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """Compressed RLE of a checked polygon list or RLE dict (parts of a polygon list are merged)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"]}


def _mask_crop(segmentation: list | dict, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """One object's mask as a crop and its (x, y) origin (see BoxMasks). A polygon is rasterised in its own
    region only, moved by whole pixels (pycocotools' 1/5-pixel rounding of the moved coordinates can flip a
    few pixels on its outline); an RLE is decoded whole, then cut."""
    if not isinstance(segmentation, list):
        return crop_mask(torch.from_numpy(mask_utils.decode(_to_rle(segmentation, height, width))))
    xs = [x for polygon in segmentation for x in polygon[0::2]]
    ys = [y for polygon in segmentation for y in polygon[1::2]]
    left, top = max(math.floor(min(xs)) - 2, 0), max(math.floor(min(ys)) - 2, 0)
    right, bottom = min(math.ceil(max(xs)) + 3, width), min(math.ceil(max(ys)) + 3, height)
    if right <= left or bottom <= top:
        return torch.zeros((0, 0), dtype=torch.uint8), (0, 0)
    moved = [[v - (left if k % 2 == 0 else top) for k, v in enumerate(polygon)] for polygon in segmentation]
    crop = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(moved, bottom - top, right - left)))
    return torch.from_numpy(np.ascontiguousarray(crop)), (left, top)


@dataclass
class _ImageRecord:
    """One kept image and its training annotations (crowd ones left out), ready for __getitem__."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)  # XYXY, clipped to the image
    labels: list[int] = field(default_factory=list)
    areas: list[float] = field(default_factory=list)
    segmentations: list[list | dict | None] = field(default_factory=list)


class CocoDetection(Dataset):
    """Images and instance targets from a COCO annotation file, in the form torchvision's detectors take.

    The annotations are read from ``ann_file``, or given as a dict in COCO's
    layout with ``annotations=`` (what :mod:`botnet.data.formats` converts
    Pascal VOC, YOLO and LabelMe labels to); ``source`` then names them in
    messages and becomes :attr:`ann_file`. Both are checked the same way.

    Each item is ``(image, target)``: the image as a float32 ``tv_tensors.Image``
    in [0, 1] of shape (3, H, W), and a target with "boxes" (XYXY
    ``tv_tensors.BoundingBoxes``), "labels" (1..K, 0 is background), "masks"
    (``tv_tensors.Mask`` (N, H, W) uint8, only with ``with_masks``; with ``mask_crops`` too, the same masks
    as :class:`~botnet.data.box_masks.BoxMasks` crops, which botnet's detectors train on at a cost that
    does not grow with objects x pixels), "image_id",
    "area" and "iscrowd". Crowd annotations are not training targets; they
    stay in :attr:`coco_gt`, the ground truth for pycocotools' evaluation.

    ``transforms``, when given, is called as ``transforms(image, target)`` (the
    torchvision.transforms.v2 convention) and its result returned.
    """

    def __init__(
        self,
        image_dir: str,
        ann_file: str | None = None,
        *,
        annotations: dict | None = None,
        source: str | None = None,
        transforms: Callable | None = None,
        skip_bad: bool = False,
        with_masks: bool = True,
        mask_crops: bool = False,
    ) -> None:
        if (ann_file is None) == (annotations is None):
            raise TypeError("CocoDetection needs either ann_file (a COCO JSON file) or annotations (a COCO dict)")
        # ann_file names the annotations in every message: the file, or ``source`` for a dict built in memory
        self.image_dir = image_dir
        self.ann_file = ann_file if ann_file is not None else (source or "the annotations given")
        self.transforms, self.with_masks, self.mask_crops = transforms, with_masks, mask_crops
        data = self._read_ann_file() if annotations is None else self._check_layout(copy.deepcopy(annotations))
        if not os.path.isdir(image_dir):
            raise MissingFileError(
                f"image folder {image_dir} does not exist (images of {self.ann_file} are read from it)"
            )

        raw_categories = self._check_categories(data["categories"])
        self.categories = [{"id": c["id"], "name": c["name"]} for c in raw_categories]
        self.category_ids = [c["id"] for c in self.categories]
        self.classes = [c["name"] for c in self.categories]
        label_of = {category_id: k + 1 for k, category_id in enumerate(self.category_ids)}

        images = self._check_images(data["images"])
        annotations = self._check_annotations(data["annotations"], images)

        paths = [os.path.join(image_dir, entry["file_name"]) for entry in images.values()]
        probes = dict(zip(images, _probe_images(paths, image_dir)))
        self._check_sizes(images, probes)

        skipped = SkippedAnnotations()
        for image_id, (reason, detail, _) in probes.items():
            if reason is not None:
                skipped.add(reason, f"{images[image_id]['file_name']} ({detail})")
        records: dict[int, _ImageRecord] = {
            image_id: _ImageRecord(image_id, images[image_id]["file_name"], *size)
            for image_id, (reason, _, size) in probes.items()
            if reason is None
        }
        kept_annotations = []
        for ann in annotations:
            record = records.get(ann["image_id"])
            if record is None:  # its image is missing or unreadable: counted once, as that image
                continue
            kept = self._check_annotation(ann, record, label_of, skipped)
            if kept is not None:
                kept_annotations.append(kept)

        if skipped.total() and not skip_bad:
            raise DatasetError(
                f"{self.ann_file}: {skipped.total()} entries cannot be used: {skipped.summary()}. {_SKIP_HINT}"
            )
        if not records:
            raise DatasetError(f"{self.ann_file}: no usable images are left ({skipped.summary()})")
        self.skipped = skipped
        self._records = list(records.values())
        self.image_ids = [record.image_id for record in self._records]
        self.coco_gt = {
            "images": [{**images[r.image_id], "width": r.width, "height": r.height} for r in self._records],
            "annotations": kept_annotations,
            "categories": copy.deepcopy(raw_categories),
        }
        for key in ("info", "licenses"):
            if key in data:
                self.coco_gt[key] = data[key]

    # -- checks of the annotation file, in the order they run --------------------------------------------------------

    def _read_ann_file(self) -> dict:
        if not os.path.isfile(self.ann_file):
            raise MissingFileError(f"annotation file {self.ann_file} does not exist")
        try:
            with open(self.ann_file, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{self.ann_file} is not a JSON file: {error}") from error
        return self._check_layout(data)

    def _check_layout(self, data: Any) -> dict:
        """``data`` (read from the file, or given) must be a dict with "images", "annotations" and "categories"
        lists."""
        if not isinstance(data, dict):
            raise DatasetError(
                f'{self.ann_file} must hold a JSON object with "images", "annotations" and "categories" '
                f"(COCO format), got a {type(data).__name__}"
            )
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DatasetError(
                    f'{self.ann_file} has no "{key}" key: a COCO instances file needs "images", '
                    f'"annotations" and "categories" lists'
                )
            if not isinstance(data[key], list):
                raise DatasetError(f'"{key}" in {self.ann_file} must be a list, got a {type(data[key]).__name__}')
        return data

    def _check_categories(self, categories: list) -> list[dict]:
        """The category entries sorted by id; ids must be unique integers and names strings."""
        if not categories:
            raise DatasetError(f'{self.ann_file} has no categories: "categories" must list the classes to detect')
        seen: dict[int, dict] = {}
        for position, category in enumerate(categories):
            if not isinstance(category, dict) or not _is_int(category.get("id")):
                raise DatasetError(f'category #{position} in {self.ann_file} needs an integer "id": {category!r}')
            if not isinstance(category.get("name"), str):
                raise DatasetError(f'category {category["id"]} in {self.ann_file} needs a "name" string')
            if category["id"] in seen:
                raise DatasetError(
                    f"{self.ann_file} has two categories with id {category['id']} "
                    f"({seen[category['id']]['name']!r} and {category['name']!r}): category ids must be unique"
                )
            seen[category["id"]] = category
        return [seen[category_id] for category_id in sorted(seen)]

    def _check_images(self, entries: list) -> dict[int, dict]:
        """Image entries by id; ids must be unique integers, file names strings, width/height integers if given."""
        images: dict[int, dict] = {}
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or not _is_int(entry.get("id")):
                raise DatasetError(f'image entry #{position} in {self.ann_file} needs an integer "id": {entry!r}')
            if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
                raise DatasetError(f'image {entry["id"]} in {self.ann_file} needs a "file_name" string')
            for key in ("width", "height"):
                if key in entry and not (_is_int(entry[key]) and entry[key] > 0):
                    raise DatasetError(
                        f"image {entry['id']} ({entry['file_name']}) in {self.ann_file} has {key} {entry[key]!r}: "
                        f"it must be a positive integer, or be left out"
                    )
            if entry["id"] in images:
                raise DatasetError(
                    f"{self.ann_file} has two images with id {entry['id']} ({images[entry['id']]['file_name']} and "
                    f"{entry['file_name']}): image ids must be unique"
                )
            images[entry["id"]] = entry
        return images

    def _check_annotations(self, entries: list, images: dict[int, dict]) -> list[dict]:
        """Checks that need no image file: unique ids, known images, flags and segmentations in COCO's layout."""
        seen: set[int] = set()
        for position, ann in enumerate(entries):
            if not isinstance(ann, dict) or not _is_int(ann.get("id")):
                raise DatasetError(f'annotation #{position} in {self.ann_file} needs an integer "id": {ann!r}')
            where = f"annotation {ann['id']} in {self.ann_file}"
            if ann["id"] in seen:
                raise DatasetError(f"{self.ann_file} has two annotations with id {ann['id']}: ids must be unique")
            seen.add(ann["id"])
            if not _is_int(ann.get("image_id")) or ann["image_id"] not in images:
                raise DatasetError(
                    f'{where} is for image_id {ann.get("image_id")!r}, which is not in "images": '
                    f"the annotations do not belong to this image list"
                )
            where = f"annotation {ann['id']} (image {images[ann['image_id']]['file_name']}) in {self.ann_file}"
            if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
                raise DatasetError(f"{where} has iscrowd {ann['iscrowd']!r}: it must be 0 or 1")
            if "area" in ann and not (_is_number(ann["area"]) and math.isfinite(ann["area"]) and ann["area"] >= 0):
                raise DatasetError(f"{where} has area {ann['area']!r}: it must be a number >= 0, or be left out")
            segmentation = ann.get("segmentation")
            if segmentation in (None, []):
                if self.with_masks and not ann.get("iscrowd", 0):
                    raise DatasetError(
                        f"{where} has no segmentation: mask training needs a polygon or RLE mask for every "
                        f"non-crowd annotation; add one, or train on boxes only (with_masks=False)"
                    )
                continue
            problem = _check_segmentation_shape(segmentation)
            if problem is not None:
                raise DatasetError(f"{where}: {problem}")
        return entries

    def _check_sizes(self, images: dict[int, dict], probes: dict) -> None:
        """Width/height in the file must be those of the image files, else the annotations are for other images."""
        wrong = []
        for image_id, (_, _, size) in probes.items():
            entry = images[image_id]
            if size is None:
                continue
            claimed = (entry.get("width", size[0]), entry.get("height", size[1]))
            if claimed != size:
                wrong.append(f"{entry['file_name']} is {size[0]}x{size[1]} but listed as {claimed[0]}x{claimed[1]}")
        if wrong:
            shown = "; ".join(wrong[:_EXAMPLES]) + ("; ..." if len(wrong) > _EXAMPLES else "")
            raise DatasetError(
                f"{len(wrong)} image(s) in {self.image_dir} do not have the width x height {self.ann_file} gives them "
                f"({shown}): the annotations belong to other images (or resized ones); use the images they were "
                f"made for, or annotations made for these images"
            )

    def _check_annotation(
        self, ann: dict, record: _ImageRecord, label_of: dict[int, int], skipped: SkippedAnnotations
    ) -> dict | None:
        """The annotation for coco_gt (box clipped, area and iscrowd filled), or None when it is left out.

        A kept non-crowd annotation is also added to ``record``'s training targets.
        """
        where = f"annotation {ann['id']} in {record.file_name}"
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in label_of:
            skipped.add(UNKNOWN_CATEGORY, f"{where}: category_id {ann.get('category_id')!r}")
            return None
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) and math.isfinite(v) for v in bbox)):
            skipped.add(DEGENERATE_BOX, f"{where}: bbox {bbox!r} is not 4 finite numbers [x, y, w, h]")
            return None
        x, y, w, h = (float(v) for v in bbox)
        x1, y1 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
        x2, y2 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
            after = f" after clipping to the {record.width}x{record.height} image" if clipped else ""
            skipped.add(DEGENERATE_BOX, f"{where}: w={x2 - x1:g} h={y2 - y1:g}{after}")
            return None

        segmentation = ann.get("segmentation")
        has_mask = segmentation not in (None, [])
        if isinstance(segmentation, dict) and list(segmentation["size"]) != [record.height, record.width]:
            raise DatasetError(
                f"annotation {ann['id']} in {self.ann_file}: its RLE mask is {segmentation['size']} (height, width) "
                f"but {record.file_name} is [{record.height}, {record.width}]; the mask belongs to another image size"
            )
        runs = segmentation["counts"] if isinstance(segmentation, dict) else None
        if isinstance(runs, str):
            runs = _compressed_rle_runs(runs)
            if runs is None:
                raise DatasetError(
                    f"annotation {ann['id']} in {self.ann_file}: its compressed RLE \"counts\" string is malformed "
                    f"(not what pycocotools' mask.encode writes)"
                )
        if isinstance(runs, list) and sum(runs) != record.height * record.width:
            raise DatasetError(
                f"annotation {ann['id']} in {self.ann_file}: its RLE run lengths add up to {sum(runs)} pixels, "
                f"but {record.file_name} has {record.height}x{record.width} = {record.height * record.width}"
            )

        if isinstance(segmentation, list):
            self._check_polygon_extent(ann["id"], segmentation, record)

        kept = dict(ann, bbox=[x1, y1, x2 - x1, y2 - y1], iscrowd=int(ann.get("iscrowd", 0)))
        if "area" not in ann:
            if has_mask:
                kept["area"] = float(mask_utils.area(_to_rle(segmentation, record.height, record.width)))
            else:
                kept["area"] = (x2 - x1) * (y2 - y1)
        if kept["iscrowd"] and not has_mask and self.with_masks:
            # pycocotools' mask evaluation needs a region for every crowd annotation: the box is that region
            kept["segmentation"] = [[x1, y1, x2, y1, x2, y2, x1, y2]]
        if not kept["iscrowd"]:
            record.boxes.append([x1, y1, x2, y2])
            record.labels.append(label_of[ann["category_id"]])
            record.areas.append(float(kept["area"]))
            record.segmentations.append(segmentation if has_mask else None)
        return kept

    def _check_polygon_extent(self, ann_id: int, polygons: list, record: _ImageRecord) -> None:
        """Polygon points may stray outside the image a little, not arbitrarily far: pycocotools rasterises every
        edge at 5x resolution, so a point at 1e12 would take all memory."""
        for polygon in polygons:
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -record.width or max(xs) > 2 * record.width or min(ys) < -record.height or max(ys) > 2 * record.height:
                raise DatasetError(
                    f"annotation {ann_id} in {self.ann_file}: a polygon reaches ({min(xs):g}..{max(xs):g}, "
                    f"{min(ys):g}..{max(ys):g}), far outside the {record.width}x{record.height} image "
                    f"{record.file_name}; the polygon belongs to another image or uses another unit"
                )

    # -- the dataset -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def image_boxes(self) -> list[tuple[int, int, list[list[float]]]]:
        """Each item's width, height and XYXY boxes, read from the checked annotations (no image opened)."""
        return [(record.width, record.height, record.boxes) for record in self._records]

    def image_path(self, index: int) -> str:
        """The file of item ``index``."""
        return os.path.join(self.image_dir, self._records[index].file_name)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        record = self._records[index]
        path = self.image_path(index)
        pil_image = read_image(path, "RGB")
        if pil_image.size != (record.width, record.height):
            raise DatasetError(
                f"{path} is now {pil_image.size[0]}x{pil_image.size[1]}, but was {record.width}x{record.height} when "
                f"the dataset was checked: the file changed during the run"
            )
        pixels = torch.from_numpy(np.asarray(pil_image, dtype=np.uint8).copy()).permute(2, 0, 1)
        image = tv_tensors.Image(pixels.to(torch.float32).div_(255))
        canvas = (record.height, record.width)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=canvas
            ),
            "labels": torch.tensor(record.labels, dtype=torch.int64),
        }
        if self.with_masks and self.mask_crops:
            target["masks"] = BoxMasks.from_crops([_mask_crop(s, *canvas) for s in record.segmentations], canvas)
        elif self.with_masks:
            if record.segmentations:
                rles = [_to_rle(s, *canvas) for s in record.segmentations]
                masks = np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))
                target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
            else:
                target["masks"] = tv_tensors.Mask(torch.zeros((0, *canvas), dtype=torch.uint8))
        target["image_id"] = record.image_id
        target["area"] = torch.tensor(record.areas, dtype=torch.float32)
        target["iscrowd"] = torch.zeros(len(record.labels), dtype=torch.int64)
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target
