"""A COCO annotation file found in an export, read as its tools read it.

Where the images are: each ``file_name`` is taken relative to the JSON's own
folder (Roboflow's ``test/_annotations.coco.json`` beside its images), an
``images/`` folder beside it (botnet's own layout), the folder above
(``annotations/instances_train.json`` with the images in the dataset
folder) or, for COCO's own download, the split's folder beside or above
(``annotations/instances_val2017.json`` and ``val2017/``), whichever holds
the most of them. Windows separators are read as "/", and an absolute path
from the labelling machine by its base name.

What is fixed and counted, as COCO tools do: a width or height that is
missing, 0, or not the image file's is taken from the file; a box past the
image edge by under a pixel is clipped (further out is an error). Categories,
kept as given (id 0 is a class like any other) except for two rules:

- a category that no annotation uses and that other categories name as their
  ``supercategory`` is the dataset's own name (Roboflow writes one as id 0):
  it is dropped, as it is no class to detect;
- two categories with the same name: an unused one is dropped; when both are
  used they stay apart, renamed "NAME (id N)" so that each class has its own
  name in reports.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

from ...errors import DatasetError
from .common import CLIPPED, SIZE_FIXED, TOLERANCE, image_header, is_number

__all__ = ["read_coco_file"]


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise DatasetError(f"{path} is not a JSON file ({str(error)[:200]}): fix or re-export it") from error
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f'{path} is not a COCO file: it needs "images", "annotations" and "categories" lists')
    return data


def _check_ids(path: str, data: dict) -> None:
    """Image ids unique, annotations on listed images, categories named: what merging splits relies on."""
    ids = set()
    for entry in data["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not isinstance(entry.get("file_name"), str):
            raise DatasetError(f'{path}: image entry {str(entry)[:80]} needs an integer "id" and a "file_name" string')
        if entry["id"] in ids:
            raise DatasetError(f"{path} has two images with id {entry['id']}: image ids must be unique")
        ids.add(entry["id"])
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in ids:
            raise DatasetError(f"{path}: annotation {str(ann)[:80]} names no image of the file: fix its image_id")
    for category in data["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            raise DatasetError(f'{path}: category {str(category)[:80]} needs an integer "id" and a "name" string')


def _split_folder(path: str) -> str | None:
    """COCO's own image folder name for an annotation file: train2017 for instances_train2017.json."""
    match = re.search(r"(train|val|test)\d*$", os.path.splitext(os.path.basename(path))[0])
    return match.group(0) if match else None


def _relative(file_name: str) -> str:
    """A file_name as a path below the image folder: Windows separators made "/", and a path from the labelling
    machine (absolute, or leading outside) cut to its base name, as the other readers do."""
    name = os.path.normpath(file_name.replace("\\", "/"))
    return os.path.basename(name) if os.path.isabs(name) or name.startswith("..") or re.match(r"^[A-Za-z]:", name) else name


def _image_root(path: str, names: list[str]) -> str:
    here = os.path.dirname(os.path.abspath(path))
    up = os.path.dirname(here)
    candidates = [here, os.path.join(here, "images"), up, os.path.join(up, "images")]
    if _split_folder(path):  # COCO's download: annotations/instances_train2017.json beside train2017/
        candidates += [os.path.join(here, _split_folder(path)), os.path.join(up, _split_folder(path))]
    found = [sum(os.path.isfile(os.path.join(c, n)) for n in names) for c in candidates]
    best = max(range(len(candidates)), key=lambda k: (found[k], -k))
    if names and not found[best]:
        raise DatasetError(f"none of the images {path} lists (e.g. {names[0]}) is in {here}, its images/ folder or the "
                           f"folder above: put the images beside the file")
    return candidates[best]


def _categories(path: str, data: dict, notes: list[str]) -> list:
    """The categories, less the dataset-name one and unused duplicates (see the module docstring)."""
    categories = data["categories"]
    used = Counter(a.get("category_id") for a in data["annotations"])
    parents = {c.get("supercategory") for c in categories if c.get("supercategory") != c.get("name")}
    kept = []
    for category in categories:
        if not used[category.get("id")] and category.get("name") in parents:
            notes.append(f"{path}: category {category.get('id')} {category.get('name')!r} is no annotation's and the "
                         f"supercategory of the others (the dataset's name): left out")
            continue
        kept.append(category)
    by_name: dict = {}
    for category in kept:
        by_name.setdefault(category.get("name"), []).append(category)
    result = []
    for category in kept:
        twins = by_name[category.get("name")]
        used_twins = [twin for twin in twins if used[twin.get("id")]]
        if len(twins) == 1:
            result.append(category)
        elif used[category.get("id")]:
            if len(used_twins) > 1:
                category = {**category, "name": f"{category['name']} (id {category.get('id')})"}
            result.append(category)
        elif used_twins or category is not twins[0]:
            notes.append(f"{path}: category {category.get('id')} {category.get('name')!r} has the name of another and "
                         f"no annotation: left out")
        else:
            result.append(category)
    return result


def read_coco_file(path: str, fixes: Counter, notes: list[str], data: dict | None = None) -> dict:
    """The COCO dict of ``path`` (``data``: its content, when already read) with each file_name the image's path
    and sizes taken from the image files (counted in ``fixes``); the rest is checked by CocoDetection."""
    data = _load(path) if data is None else data
    _check_ids(path, data)
    names = [_relative(e["file_name"]) for e in data["images"]]
    root = _image_root(path, names)
    images = []
    for entry, name in zip(data["images"], names):
        entry = {**entry, "file_name": os.path.normpath(os.path.join(root, name))}
        size, orientation = image_header(entry["file_name"])
        if size is not None and (entry.get("width"), entry.get("height")) != size:
            fixes[SIZE_FIXED] += 1
            entry["width"], entry["height"] = size
        if orientation is not None:
            entry["exif_orientation"] = orientation
        images.append(entry)
    _check_boxes(path, images, data["annotations"], fixes)
    return {**data, "images": images, "categories": _categories(path, data, notes)}


def _check_boxes(path: str, images: list, annotations: list, fixes: Counter) -> None:
    """Boxes past the image edge by under TOLERANCE pixels are counted (CocoDetection clips them); further out is
    an error naming the annotation, as in every other format."""
    sizes = {e["id"]: (e.get("width"), e.get("height"), e["file_name"]) for e in images
             if isinstance(e.get("width"), int) and isinstance(e.get("height"), int)}
    for ann in annotations:
        box = ann.get("bbox")
        if ann["image_id"] not in sizes or not (isinstance(box, list) and len(box) == 4 and all(map(is_number, box))):
            continue  # CocoDetection names what is malformed
        width, height, image = sizes[ann["image_id"]]
        x1, y1, x2, y2 = box[0], box[1], box[0] + box[2], box[1] + box[3]
        if min(x1, y1) < -TOLERANCE or x2 > width + TOLERANCE or y2 > height + TOLERANCE:
            raise DatasetError(f"annotation {ann.get('id')} in {path}: the box ({x1:g}, {y1:g})-({x2:g}, {y2:g}) reaches "
                               f"outside the {width}x{height} image {image}; fix it (the labels may belong to another "
                               f"image)")
        if min(x1, y1) < 0 or x2 > width or y2 > height:
            fixes[CLIPPED] += 1
