"""LabelMe JSON labels: one file per image, polygons and rectangles (and circles).

Layout: ``ROOT/{train,val}/*.json`` with the images in the same folder (or
where each file's ``imagePath`` points, inside that folder). An image without
a JSON file is an image without objects, as in the other formats. The file's
``imageWidth``/``imageHeight`` must be the image's (the image's header is
read); ``imageData`` (an embedded copy of the image) is not used.

Shapes (``shape_type``):

- ``polygon`` (also a missing type, as old LabelMe versions wrote): the mask,
  and its extent the box; fewer than 3 points is an error.
- ``rectangle``: two opposite corners: the box, and the same rectangle as a
  4-point polygon mask.
- ``circle``: centre and a point on the rim, as a 36-point polygon clipped to
  the image (labelme's own labelme2coco also turns circles into polygons).
- ``line``, ``linestrip``, ``point`` and ``points`` have no area and are no
  instance: they are left out and counted in the split's ``skipped`` (such
  shapes are often helper marks kept in the same files, and refusing them would
  make those files unusable).
- ``mask`` (a bitmap, LabelMe 5.3+) and unknown types are errors naming the
  file and shape.

Shapes with the same label and the same (non-null) ``group_id`` are one object
of several parts, as in labelme2coco. Classes are the sorted labels found in
the train split; a val shape of another class is an error naming its file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable

from ...errors import DatasetError
from .common import (
    SPLITS,
    DetectionSplit,
    DetectionSplits,
    LabeledImage,
    Shape,
    add_label_file,
    category_ids,
    check_declared_size,
    image_size,
    is_number,
    list_images,
    to_coco,
    unknown_class,
)

__all__ = ["REGION_TYPES", "SKIPPED_TYPES", "matches", "read_labelme"]

REGION_TYPES = ("polygon", "rectangle", "circle")
SKIPPED_TYPES = ("line", "linestrip", "point", "points")
CIRCLE_POINTS = 36
MAX_JSON_BYTES = 512 << 20  # LabelMe files may embed their image


def _json_files(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(".json") and not n.startswith("."))


def matches(root: str) -> bool:
    """Whether ``root`` looks like a LabelMe folder: JSON files (not a COCO annotations.json) in ROOT/train/."""
    train = os.path.join(root, "train")
    return os.path.isdir(train) and any(n != "annotations.json" for n in _json_files(train))


class _LabelMeFile:
    """One parsed file: its image (relative to the split folder), the size it states, its region shapes as
    (label, group key, polygon, where), and how many shapes of each skipped type it had."""

    def __init__(self, path: str, split_dir: str) -> None:
        self.path = path
        try:
            if os.path.getsize(path) > MAX_JSON_BYTES:
                raise DatasetError(f"{path} is over {MAX_JSON_BYTES >> 20} MiB: not a LabelMe file")
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise DatasetError(f"{path} is not a JSON file ({str(error)[:200] or type(error).__name__}): fix or "
                               f"re-save it in LabelMe") from error
        except OSError as error:
            raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise DatasetError(f'{path} is not a LabelMe file: it needs a JSON object with a "shapes" list')
        self.file_name = self._image(data.get("imagePath"), split_dir)
        self.size = self._size(data)
        self.regions: list[tuple[str, Hashable, list[float], str, bool]] = []
        self.skipped: dict[str, int] = {}
        for index, shape in enumerate(data["shapes"], start=1):
            self._add(shape, f"{path}, shape {index}")

    def _image(self, image_path: object, split_dir: str) -> str:
        if not isinstance(image_path, str) or not image_path.strip():
            raise DatasetError(f'{self.path} has no "imagePath": name the image file it labels')
        name = image_path.replace("\\", "/")  # LabelMe on Windows writes backslashes
        here = os.path.dirname(self.path)
        candidates = [os.path.join(here, name), os.path.join(here, os.path.basename(name))]
        for candidate in candidates:
            relative = os.path.relpath(os.path.normpath(candidate), split_dir).replace(os.sep, "/")
            if not relative.startswith("../") and relative != ".." and os.path.isfile(candidate):
                return relative
        raise DatasetError(
            f"{self.path} labels {image_path!r}, which is not in {split_dir}: put the image there (the embedded "
            f"imageData is not read), or remove the label file"
        )

    def _size(self, data: dict) -> tuple[int, int] | None:
        width, height = data.get("imageWidth"), data.get("imageHeight")
        if width is None and height is None:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
            raise DatasetError(f"{self.path}: imageWidth x imageHeight is {width!r} x {height!r}: they must be "
                               f"positive whole numbers, or be left out")
        return width, height  # type: ignore[return-value]

    def _add(self, shape: object, where: str) -> None:
        if not isinstance(shape, dict):
            raise DatasetError(f"{where} is not a JSON object with label, points and shape_type")
        label, kind = shape.get("label"), shape.get("shape_type") or "polygon"
        if not isinstance(label, str) or not label.strip():
            raise DatasetError(f"{where} has no label: give every shape its class name")
        where = f"{where} ({label!r})"
        if not isinstance(kind, str):
            raise DatasetError(f"{where}: shape_type {kind!r} is not a text")
        if kind in SKIPPED_TYPES:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        if kind not in REGION_TYPES:
            hint = ": draw the object as a polygon in LabelMe" if kind == "mask" else ""
            raise DatasetError(f"{where}: shape_type {kind[:40]!r} is not read (polygon, rectangle and circle are; "
                               f"{', '.join(SKIPPED_TYPES)} are left out){hint}")
        points = shape.get("points")
        if not (isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p)
                                                 for p in points)):
            raise DatasetError(f"{where}: points must be a list of [x, y] pairs of finite numbers")
        group = shape.get("group_id")
        key: Hashable = (label, group) if isinstance(group, (int, str)) and not isinstance(group, bool) else object()
        if kind == "polygon":
            polygon = [float(v) for point in points for v in point]
        elif kind == "rectangle":
            if len(points) < 2:
                raise DatasetError(f"{where}: a rectangle needs 2 corner points, got {len(points)}")
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            x1, y1, x2, y2 = float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))
            polygon = [x1, y1, x2, y1, x2, y2, x1, y2]
        else:
            if len(points) != 2:
                raise DatasetError(f"{where}: a circle needs 2 points (centre, rim), got {len(points)}")
            (cx, cy), (rx, ry) = points
            radius = math.hypot(rx - cx, ry - cy)
            polygon = []
            for k in range(CIRCLE_POINTS):
                angle = 2 * math.pi * k / CIRCLE_POINTS
                polygon += [cx + radius * math.cos(angle), cy + radius * math.sin(angle)]
        self.regions.append((label, key, polygon, where, kind == "circle"))


def _clip(polygon: list[float], width: int, height: int) -> list[float]:
    """A circle's polygon clipped to the image (a circle near the border reaches past it by design)."""
    return [min(max(v, 0.0), width if k % 2 == 0 else height) for k, v in enumerate(polygon)]


def read_labelme(root: str) -> DetectionSplits:
    """The train and val splits of a LabelMe folder, converted to COCO dicts (masks and boxes)."""
    parsed, image_dirs = {}, {}
    for split in SPLITS:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise DatasetError(f"{root} has no {split}/ folder: LabelMe files need ROOT/train/ and ROOT/val/")
        image_dirs[split] = folder
        parsed[split] = [_LabelMeFile(os.path.join(folder, n), folder) for n in _json_files(folder)
                         if n != "annotations.json"]
    names = sorted({label for file in parsed["train"] for label, *_ in file.regions})
    if not names:
        raise DatasetError(f"the LabelMe train split of {root} has no polygons, rectangles or circles: label some")
    categories = category_ids(names)
    id_of = {name: category_id for category_id, name in categories}
    splits = {}
    for split in SPLITS:
        folder = image_dirs[split]
        images, label_files, skipped = [], {}, {}
        for file in parsed[split]:
            add_label_file(label_files, file.file_name, file.path)
            for kind, count in file.skipped.items():
                skipped[kind] = skipped.get(kind, 0) + count
            image_path = os.path.join(folder, file.file_name)
            size = check_declared_size(file.path, file.size, image_size(image_path), image_path)
            image = LabeledImage(file.file_name, *(size or (None, None)))
            objects: dict[Hashable, Shape] = {}
            for label, key, polygon, where, circle in file.regions:
                if label not in id_of:
                    raise unknown_class(where, label, categories)
                if circle and size:
                    polygon = _clip(polygon, *size)
                if key in objects:
                    objects[key].polygons.append(polygon)  # type: ignore[union-attr]
                else:
                    objects[key] = Shape(id_of[label], where, polygons=[polygon])
            image.shapes = list(objects.values())
            images.append(image)
        images += [LabeledImage(n, *(image_size(os.path.join(folder, n)) or (None, None)))
                   for n in list_images(folder) if n not in label_files]
        images.sort(key=lambda image: image.file_name)
        source = f"LabelMe {split} split in {folder}"
        if not images:
            raise DatasetError(f"{source}: no images or LabelMe files found")
        splits[split] = DetectionSplit(split, folder, source, annotations=to_coco(images, categories, label_files),
                                       skipped=skipped)
    return DetectionSplits("labelme", root, splits["train"], splits["val"])
