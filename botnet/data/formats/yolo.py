"""YOLO txt labels (Ultralytics, Roboflow, CVAT): boxes, or polygons for segmentation.

Pairing, as Ultralytics does: an image's label file is its path with the
last ``images`` folder swapped for ``labels`` and the extension for ``.txt``
(``train/images/a.jpg`` -> ``train/labels/a.txt``, ``images/train/a.jpg`` ->
``labels/train/a.txt``). Class names come from a data.yaml (``names:`` as a
list, or as a {index: name} mapping; ``nc`` is checked against it and
reported) or a ``classes.txt`` or CVAT's ``obj.names`` (one per line, LabelImg keeps it in
``labels/``); class index k becomes COCO category id k + 1. A data.yaml's
``train``/``val``/``test`` folders are resolved as Ultralytics does.

Each line of a label file is one object, in fractions (0..1) of the image's
width and height: ``class cx cy w h`` (a box), or ``class x1 y1 ... xn yn``
with n >= 3 (a polygon: the mask, and its extent the box). Image sizes are
read from the image headers. As in Ultralytics, an image without a label
file (or with an empty one) is an image without objects; a line that is
neither form is an error naming its line.
"""

from __future__ import annotations

import math
import os

import yaml

from ...errors import DatasetError
from .common import LabeledImage, Shape, labeled_image

__all__ = ["label_path", "list_file_images", "read_class_names", "read_data_yaml", "yaml_split_paths", "yolo_image"]

MAX_NAMES_BYTES = 1 << 20
_LINE_FORMS = (
    "a box is 'class cx cy w h' (5 values), a polygon 'class x1 y1 x2 y2 x3 y3 ...' (an odd number, 7 or more)"
)


def label_path(image: str) -> str | None:
    """Ultralytics' pairing: the image's path with its last ``images`` folder swapped for ``labels`` and its
    extension for ``.txt``; None when the path has no ``images`` folder."""
    parts = image.split(os.sep)
    folders = [k for k, part in enumerate(parts[:-1]) if part == "images"]
    if not folders:
        return None
    parts[folders[-1]] = "labels"
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _name(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_class_names(path: str) -> tuple[dict[int, str], str]:
    """({class index: name}, a note or "") from a data.yaml (``names`` as a list or a mapping; ``nc``, when it
    disagrees, is reported and ``names`` kept, as Ultralytics does) or a classes.txt (one name per line)."""
    if path.lower().endswith((".yaml", ".yml")):
        names, count = _names_from_yaml(path)
        note = "" if count in (None, len(names)) else f"{path} gives nc: {count} but names {len(names)} classes: the names are used"
        return names, note
    return _names_from_txt(path), ""


def read_data_yaml(path: str) -> dict:
    """An Ultralytics data.yaml as a dict (DatasetError naming the file when it is not YAML or not a mapping)."""
    try:
        data = yaml.safe_load(_read_text(path, MAX_NAMES_BYTES))
    except (yaml.YAMLError, RecursionError, ValueError) as error:
        where = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(f"{path} is not valid YAML ({where}): fix it") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is not a data.yaml: it needs 'names' and the train and val image folders")
    return data


def yaml_split_paths(path: str, data: dict) -> dict[str, list[str]]:
    """{split: image folders or list files} of a data.yaml, resolved as Ultralytics does: relative to ``path:``
    (itself relative to the yaml's folder), and a ``../x`` that does not exist there tried as ``x`` (Roboflow
    writes ``../train/images`` for a yaml that sits beside train/)."""
    base = os.path.dirname(os.path.abspath(path))
    if isinstance(data.get("path"), str) and data["path"].strip():
        base = os.path.normpath(os.path.join(base, data["path"]))
    found: dict[str, list[str]] = {}
    for key, split in (("train", "train"), ("val", "val"), ("valid", "val"), ("test", "test")):
        value = data.get(key)
        entries = value if isinstance(value, list) else [value] if isinstance(value, str) and value.strip() else []
        for entry in entries:
            if not isinstance(entry, str):
                raise DatasetError(f"{path}: '{key}' must name image folders, got {entry!r}")
            resolved = os.path.normpath(os.path.join(base, entry))
            if not os.path.exists(resolved) and entry.startswith("../"):
                resolved = os.path.normpath(os.path.join(base, entry[3:]))
            if not os.path.exists(resolved):
                raise DatasetError(f"{path}: the {key} images {entry!r} are not at {resolved}: fix the path in the yaml")
            found.setdefault(split, []).append(resolved)
    if "train" not in found and "val" not in found:
        raise DatasetError(f"{path} names no train or val images: add e.g. 'train: train/images'")
    return found


def list_file_images(path: str) -> list[str]:
    """The image paths of an Ultralytics list file (one per line, relative to the file's folder)."""
    base = os.path.dirname(path)
    lines = _read_text(path, MAX_NAMES_BYTES * 64).splitlines()
    return [os.path.normpath(os.path.join(base, line.strip())) for line in lines if line.strip()]


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


def _names_from_yaml(path: str) -> tuple[dict[int, str], int | None]:
    data = read_data_yaml(path)
    names = data.get("names")
    count = data.get("nc") if isinstance(data.get("nc"), int) else None
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
    return result, count  # type: ignore[return-value]


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


def yolo_image(image: str, label: str | None, names: dict[int, str], names_file: str, fixes) -> LabeledImage:
    """An image and the objects of its label file (none when ``label`` is None: a background image)."""
    labeled = labeled_image(image)
    if label is not None:
        size = (labeled.width, labeled.height) if labeled.width is not None else None
        labeled.shapes = _read_label_file(label, names, names_file, size)
    return labeled
