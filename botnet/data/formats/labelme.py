"""LabelMe JSON labels: one file per image, polygons and rectangles (and circles).

Each JSON file's image is where its ``imagePath`` points (relative to the
file), or the file of that name beside it, as LabelMe opens it. An image
beside labelled ones without a JSON file is an image without objects, as in
the other formats. Sizes are the image file's: an ``imageWidth`` x
``imageHeight`` that disagrees is replaced and counted; ``imageData`` (an
embedded copy of the image, sometimes of another size) is not used.

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
all the files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable

from ...errors import DatasetError
from .common import LabeledImage, Shape, is_number, labeled_image

__all__ = ["REGION_TYPES", "SKIPPED_TYPES", "LabelMeFile", "class_names", "labelme_image"]

REGION_TYPES = ("polygon", "rectangle", "circle")
SKIPPED_TYPES = ("line", "linestrip", "point", "points")
CIRCLE_POINTS = 36
MAX_JSON_BYTES = 512 << 20  # LabelMe files may embed their image


class LabelMeFile:
    """One parsed file: its image (relative to the split folder), the size it states, its region shapes as
    (label, group key, polygon, where), and how many shapes of each skipped type it had."""

    def __init__(self, path: str) -> None:
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
        self.image = self._image(data.get("imagePath"))
        self.size = self._size(data)
        self.regions: list[tuple[str, Hashable, list[float], str, bool]] = []
        self.skipped: dict[str, int] = {}
        for index, shape in enumerate(data["shapes"], start=1):
            self._add(shape, f"{path}, shape {index}")

    def _image(self, image_path: object) -> str:
        """The image file: ``imagePath`` relative to this file, or its name beside this file (as LabelMe opens it)."""
        if not isinstance(image_path, str) or not image_path.strip():
            raise DatasetError(f'{self.path} has no "imagePath": name the image file it labels')
        name = image_path.replace("\\", "/")  # LabelMe on Windows writes backslashes
        here = os.path.dirname(self.path)
        for candidate in (os.path.join(here, name), os.path.join(here, os.path.basename(name))):
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
        raise DatasetError(
            f"{self.path} labels {image_path!r}, which is not beside it: put the image there (the embedded "
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


def class_names(files: list[LabelMeFile]) -> list[str]:
    """The sorted labels of the files' region shapes."""
    return sorted({label for file in files for label, *_ in file.regions})


def labelme_image(file: LabelMeFile, id_of: dict[str, int], fixes) -> LabeledImage:
    """The image a parsed file labels, with its objects (parts with one group_id merged into one object)."""
    image = labeled_image(file.image, file.size, fixes)
    size = (image.width, image.height) if image.width is not None else None
    objects: dict[Hashable, Shape] = {}
    for label, key, polygon, where, circle in file.regions:
        if circle and size:
            polygon = _clip(polygon, *size)
        if key in objects:
            objects[key].polygons.append(polygon)  # type: ignore[union-attr]
        else:
            objects[key] = Shape(id_of[label], where, polygons=[polygon])
    image.shapes = list(objects.values())
    return image
