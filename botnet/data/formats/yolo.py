"""YOLO txt labels (Ultralytics, Roboflow, CVAT): boxes, or polygons for segmentation.

Layouts: ``ROOT/images/{train,val}/`` + ``ROOT/labels/{train,val}/``
(Ultralytics'), or ``ROOT/{train,valid}/images/`` + ``.../labels/``
(Roboflow's); "val" and "valid" both name the held-out split. Images may sit
in subfolders; each has its labels in the same place under labels/, with the
extension ``.txt``. Class names come from ``ROOT/data.yaml`` (``names:`` as a
list, or as a {index: name} mapping) or ``ROOT/classes.txt`` (one per line);
class index k becomes COCO category id k + 1.

Each line of a label file is one object, in fractions (0..1) of the image's
width and height: ``class cx cy w h`` (a box), or ``class x1 y1 ... xn yn``
with n >= 3 (a polygon: the mask, and its extent the box). Image sizes are
read from the image headers. As in Ultralytics, an image without a label
file is an image without objects; a label file without its image is an
error, and so is any line that is neither form (its line number is named).
"""

from __future__ import annotations

import math
import os

import yaml

from ...errors import DatasetError
from .common import (
    SPLITS,
    DetectionSplit,
    DetectionSplits,
    LabeledImage,
    Shape,
    image_size,
    list_images,
    to_coco,
)

__all__ = ["matches", "read_class_names", "read_yolo"]

VAL_NAMES = ("val", "valid")
MAX_NAMES_BYTES = 1 << 20
_LINE_FORMS = (
    "a box is 'class cx cy w h' (5 values), a polygon 'class x1 y1 x2 y2 x3 y3 ...' (an odd number, 7 or more)"
)


def _split_folders(root: str) -> dict[str, tuple[str, str]]:
    """Per split: (image folder, label folder)."""
    folders = {}
    for split in SPLITS:
        names = VAL_NAMES if split == "val" else (split,)
        candidates = [(os.path.join(root, "images", n), os.path.join(root, "labels", n)) for n in names]
        candidates += [(os.path.join(root, n, "images"), os.path.join(root, n, "labels")) for n in names]
        found = next(((i, lbl) for i, lbl in candidates if os.path.isdir(i) and os.path.isdir(lbl)), None)
        if found is None:
            wanted = " or ".join(f"images/{n}/ + labels/{n}/" for n in names)
            raise DatasetError(f"{root} looks like YOLO labels but has no {wanted} (nor {names[0]}/images/ + "
                               f"{names[0]}/labels/): add the {split} split")
        folders[split] = found
    return folders


def matches(root: str) -> bool:
    """Whether ``root`` looks like a YOLO folder (either layout)."""
    if os.path.isdir(os.path.join(root, "images")) and os.path.isdir(os.path.join(root, "labels")):
        return True
    return os.path.isdir(os.path.join(root, "train", "labels"))


def _name(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_class_names(root: str) -> tuple[dict[int, str], str]:
    """({class index: name}, the file they came from): ``ROOT/data.yaml`` (or data.yml), else ``ROOT/classes.txt``."""
    for name in ("data.yaml", "data.yml"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return _names_from_yaml(path), path
    path = os.path.join(root, "classes.txt")
    if os.path.isfile(path):
        return _names_from_txt(path), path
    raise DatasetError(f"{root} has YOLO labels but no data.yaml or classes.txt naming the classes: add one "
                       f"(data.yaml: 'names: [cat, dog]'; classes.txt: one name per line)")


def _read_text(path: str, limit: int) -> str:
    try:
        if os.path.getsize(path) > limit:
            raise DatasetError(f"{path} is over {limit >> 20} MiB: not a class list")
        with open(path, "rb") as file:
            return file.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path} is not UTF-8 text ({error}): save it as UTF-8") from error
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error


def _names_from_yaml(path: str) -> dict[int, str]:
    try:
        data = yaml.safe_load(_read_text(path, MAX_NAMES_BYTES))
    except (yaml.YAMLError, RecursionError, ValueError) as error:
        where = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(f"{path} is not valid YAML ({where}): fix it") from error
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list) and names:
        result = {k: _name(v) for k, v in enumerate(names)}
    elif isinstance(names, dict) and names:
        result = {k: _name(v) for k, v in names.items()}
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in result):
            raise DatasetError(f"{path}: the keys of 'names' must be class indices 0, 1, ...; got {list(names)[:5]!r}")
    else:
        raise DatasetError(f"{path} has no 'names' list of classes: add e.g. 'names: [cat, dog]' or "
                           f"'names: {{0: cat, 1: dog}}'")
    bad = [k for k, v in result.items() if v is None]
    if bad:
        raise DatasetError(f"{path}: class {bad[0]} in 'names' is not a name (a text): fix it")
    return result  # type: ignore[return-value]


def _names_from_txt(path: str) -> dict[int, str]:
    lines = _read_text(path, MAX_NAMES_BYTES).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DatasetError(f"{path} line {number} is empty: class k is named on line k + 1, so no line may be "
                               f"blank")
    if not lines:
        raise DatasetError(f"{path} names no classes: put one class name per line")
    return {k: line.strip() for k, line in enumerate(lines)}


def _number(path: str, number: int, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path} line {number}: {token[:20]!r} is not a finite number; fix the line")
    return value


def _read_label_file(path: str, names: dict[int, str], names_file: str,
                     size: tuple[int, int] | None) -> list[Shape]:
    """The objects of one label file, in pixels of an image of ``size`` (unit coordinates when it is None)."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path} is not a YOLO label file (not UTF-8 text: {error})") from error
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    width, height = size or (1, 1)
    shapes = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path} line {number}"
        if len(tokens) < 5 or (len(tokens) > 5 and len(tokens) % 2 == 0):
            raise DatasetError(f"{where} has {len(tokens)} values: {_LINE_FORMS}")
        index = _number(path, number, tokens[0])
        if index != int(index):
            raise DatasetError(f"{where}: the class {tokens[0][:20]!r} is not a class index (0, 1, ...)")
        if int(index) not in names:
            known = sorted(names)
            raise DatasetError(f"{where}: class {int(index)} is not one of the {len(names)} classes of {names_file} "
                               f"({known[0]}..{known[-1]}); fix the line or add the class")
        values = [_number(path, number, token) for token in tokens[1:]]
        over = max(values)
        if over > 1.001:
            raise DatasetError(f"{where}: coordinate {over:g} is over 1, but YOLO labels are fractions (0..1) of the "
                               f"image size (these look like pixels): export normalised coordinates")
        category_id = int(index) + 1
        if len(values) == 4:
            cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            shapes.append(Shape(category_id, where, box=box))
        else:
            polygon = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
            shapes.append(Shape(category_id, where, polygons=[polygon]))
    return shapes


def read_yolo(root: str) -> DetectionSplits:
    """The train and val splits of a YOLO folder, converted to COCO dicts (masks where the lines are polygons)."""
    names, names_file = read_class_names(root)
    categories = [(k + 1, names[k]) for k in sorted(names)]
    splits = {}
    for split, (image_dir, label_dir) in _split_folders(root).items():
        label_of: dict[str, str] = {}  # label file (relative) -> its image (relative)
        for image in list_images(image_dir, recursive=True):
            label = os.path.splitext(image)[0] + ".txt"
            if label in label_of:
                raise DatasetError(f"{os.path.join(label_dir, label)} would label both {label_of[label]} and {image} "
                                   f"in {image_dir}: rename one of them")
            label_of[label] = image
        for current, folders, files in os.walk(label_dir):
            folders.sort()
            for file in sorted(files):
                relative = os.path.relpath(os.path.join(current, file), label_dir).replace(os.sep, "/")
                if not file.endswith(".txt") or relative == "classes.txt" or relative in label_of:
                    continue
                raise DatasetError(f"{os.path.join(label_dir, relative)} has no image in {image_dir} (looked for "
                                   f"{os.path.splitext(relative)[0]}.jpg, .png, ...): add the image, or remove the "
                                   f"label file")
        images, label_files = [], {}
        for label, file_name in sorted(label_of.items(), key=lambda item: item[1]):
            size = image_size(os.path.join(image_dir, file_name))
            image = LabeledImage(file_name, *(size or (None, None)))
            path = os.path.join(label_dir, label)
            if os.path.isfile(path):
                image.shapes = _read_label_file(path, names, names_file, size)
                label_files[file_name] = path
            images.append(image)
        source = f"YOLO {split} split of {root} ({label_dir})"
        if not images:
            raise DatasetError(f"{source}: no images in {image_dir}")
        splits[split] = DetectionSplit(split, image_dir, source, annotations=to_coco(images, categories, label_files))
    return DetectionSplits("yolo", root, splits["train"], splits["val"])
