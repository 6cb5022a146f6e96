"""Finding a detection dataset by what its files are, wherever a labelling tool left them.

:func:`find_layout` walks the folder given as ``--data`` and sorts what it
finds by content, not by a fixed tree: Pascal VOC XML (a root
``<annotation>``), YOLO label files (``.txt`` under a ``labels`` folder, or
beside the image of the same name), LabelMe JSON (a ``"shapes"`` list) and
COCO JSON (``"images"`` and ``"annotations"``). Each annotation file is paired
with its image as its tool does (see each format's module), and the split is
the export's own: the nearest folder (or COCO file) named train/training,
val/valid/validation or test/testing, or the VOC devkit's ImageSets lists, or
an Ultralytics data.yaml's ``train``/``val``/``test`` given as ``--data
FILE.yaml``. ``--data FILE.json`` is one COCO file.

Where the export has no val split, one is held out of the training images
(see :mod:`botnet.data.holdout`); a test split is kept apart for
``eval --split test``. Where the folder is ambiguous (labels of two formats,
two COCO files for one split) a one-line error names the candidates and the
flag that chooses. Nothing is dropped silently: every fix (sizes taken from
the image file, sub-pixel overshoot clipped) and everything left out (shapes
without an area, images no label file covers, label files without an image)
is counted in the report that the run logs before training.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

from ...errors import ConfigError, DatasetError, MissingFileError
from ..holdout import HELDOUT_FILE, SHARE, SPLIT_NAMES, Item, hold_out
from . import labelme, voc, yolo
from .cocofile import read_coco_file
from .common import (
    IMAGE_EXTENSIONS,
    DetectionSplit,
    DetectionSplits,
    LabeledImage,
    labeled_image,
    to_coco,
)

__all__ = ["FORMATS", "FORMAT_NAMES", "find_layout", "layout_of"]

FORMATS = ("coco", "voc", "yolo", "labelme")
FORMAT_NAMES = {"coco": "COCO", "voc": "Pascal VOC", "yolo": "YOLO", "labelme": "LabelMe"}
MAX_DEPTH = 8
NAMES_FILES = ("classes.txt", "obj.names")  # LabelImg's and CVAT's (YOLO 1.1) class lists
_PEEK = 1 << 16
_VOC_ROOT = re.compile(rb"<annotation[\s>]")
_LABELME_KEY = re.compile(r'"shapes"\s*:')
_COCO_KEY = re.compile(r'"(images|annotations)"\s*:')


@dataclass
class _Files:
    """What a walk found, by kind (absolute paths, sorted)."""

    root: str
    images: list[str] = field(default_factory=list)
    voc: list[str] = field(default_factory=list)
    labelme: list[str] = field(default_factory=list)
    coco: list[str] = field(default_factory=list)
    yolo: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # classes.txt, obj.names and yaml files
    parsed: dict[str, dict] = field(default_factory=dict)  # the COCO files, read once

    def count(self, kind: str) -> int:
        return len(getattr(self, kind))


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(_PEEK)
    except OSError:
        return b""


def _coco_data(path: str) -> dict | None:
    """The file's content when it is a COCO file ("images", "annotations" and "categories" lists), else None."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError, RecursionError):
        return None
    keys = ("images", "annotations", "categories")
    return data if isinstance(data, dict) and all(isinstance(data.get(k), list) for k in keys) else None


def _add_json(files: _Files, path: str) -> None:
    """A LabelMe file (a "shapes" key near the start), a COCO file (read whole, kept), or some other JSON file
    (a tool's statistics), left alone."""
    text = _head(path).decode("utf-8", "replace")
    if _LABELME_KEY.search(text):
        files.labelme.append(path)
    elif _COCO_KEY.search(text) and (data := _coco_data(path)) is not None:
        files.coco.append(path)
        files.parsed[path] = data


def _walk(root: str) -> list[str]:
    """The files below ``root`` (hidden ones and macOS zip residue left out), links followed once each."""
    found, seen = [], set()
    for current, folders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        depth = os.path.relpath(current, root).count(os.sep)
        folders[:] = sorted(f for f in folders if not f.startswith((".", "__MACOSX")) and depth < MAX_DEPTH)
        found += [os.path.join(current, name) for name in sorted(files) if not name.startswith(".")]
    return found


def _scan(root: str, *, labels: bool = True) -> _Files:
    """Every file below ``root`` sorted by what it holds (only the images without ``labels``)."""
    files = _Files(root)
    paths = _walk(root)
    stems = {os.path.splitext(p)[0] for p in paths if p.lower().endswith(IMAGE_EXTENSIONS)}
    for path in paths:
        lower = path.lower()
        name = os.path.basename(lower)
        if lower.endswith(IMAGE_EXTENSIONS):
            files.images.append(path)
        elif not labels:
            continue
        elif lower.endswith(".xml") and _VOC_ROOT.search(_head(path)):
            files.voc.append(path)
        elif lower.endswith(".json"):
            _add_json(files, path)
        elif name in NAMES_FILES or lower.endswith((".yaml", ".yml")):
            files.names.append(path)
        elif lower.endswith(".txt") and ("labels" in os.path.relpath(path, root).split(os.sep)
                                         or os.path.splitext(path)[0] in stems):
            files.yolo.append(path)
    return files


def split_of(root: str, path: str, *, by_name: bool = False) -> str:
    """The export's split of ``path``: the nearest folder below ``root`` (or, ``by_name``, the file's own name,
    as COCO's instances_val2017.json) named train, training, val, valid, validation, test or testing (trailing
    digits allowed: train2017); "" when none is. An image's own name never names a split (test_tube_01.jpg)."""
    parts = os.path.relpath(path, root).split(os.sep)
    parts[-1] = os.path.splitext(parts[-1])[0] if by_name else ""
    for part in reversed(parts):
        for token in re.split(r"[^a-z0-9]+", part.lower()):
            word = SPLIT_NAMES.get(token.rstrip("0123456789"))
            if word:
                return word
    return ""


def _choose_format(path: str, files: _Files, data_format: str | None) -> str:
    counts = {kind: files.count(kind) for kind in ("voc", "yolo", "labelme", "coco")}
    if data_format is not None:
        if data_format not in FORMATS:
            raise ConfigError(f"--data-format must be one of {', '.join(FORMATS)}, got {data_format!r}")
        if not counts[data_format]:
            raise DatasetError(f"{path} holds no {FORMAT_NAMES[data_format]} annotation files: check the folder, or "
                               f"leave out --data-format")
        return data_format
    present = [kind for kind, count in counts.items() if count]
    if len(present) > 1:
        shown = ", ".join(f"{FORMAT_NAMES[k]} ({counts[k]} file{'s' * (counts[k] != 1)})" for k in present)
        raise DatasetError(f"{path} holds labels in {len(present)} formats: {shown}; choose one with --data-format "
                           f"{'|'.join(present)}")
    if not present:
        what = "is empty" if not os.listdir(path) else "holds no annotation files botnet reads"
        raise DatasetError(
            f"{path} {what}: it looks for Pascal VOC .xml, YOLO labels/*.txt (with a data.yaml or classes.txt), "
            f"LabelMe .json and COCO .json files in any folder layout; for image classification (a folder per "
            f"class) use `botnet train --data {path}`"
        )
    return present[0]


class _Reading:
    """What reading one dataset collects besides its images: fixes and things left out, counted."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fixes: Counter = Counter()
        self.left_out: Counter = Counter()
        self.examples: dict[str, str] = {}
        self.notes: list[str] = []

    def leave_out(self, reason: str, count: int = 1, example: str = "") -> None:
        if count:
            self.left_out[reason] += count
            self.examples.setdefault(reason, os.path.relpath(example, self.root) if example else "")


def _categories(names: list[str]) -> list[tuple[int, str]]:
    return [(k, name) for k, name in enumerate(names, start=1)]


def _background(groups: dict[str, list[LabeledImage]], images: list[str], labelled: set[str]) -> None:
    """Add to each split, as images without objects, the unlabelled images in the folders its labelled ones are."""
    by_folder: dict[str, list[str]] = {}
    for image in images:
        by_folder.setdefault(os.path.dirname(image), []).append(image)
    for split, found in groups.items():
        folders = {os.path.dirname(image.file_name) for image in found}
        for folder in sorted(folders):
            for image in by_folder.get(folder, []):
                if image not in labelled:
                    found.append(labeled_image(image))
                    labelled.add(image)


def _one_per_image(label_files: dict[str, str], image: str, label: str) -> None:
    if image in label_files:
        raise DatasetError(f"{label} and {label_files[image]} are labels of the same image {image}: keep one")
    label_files[image] = label


def _read_voc(files: _Files, reading: _Reading,
              difficult: str) -> tuple[dict[str, list[LabeledImage]], list[tuple[int, str]]]:
    by_split: dict[str, list[str]] = {}
    listed: set[str] = set()
    for folder in sorted({os.path.dirname(p) for p in files.voc if os.path.basename(os.path.dirname(p)) == "Annotations"}):
        lists = voc.devkit_lists(folder)
        for split, paths in (lists or {}).items():
            by_split.setdefault(split, []).extend(paths)
            listed.update(paths)
        if lists:
            unlisted = [p for p in files.voc if os.path.dirname(p) == folder and p not in listed]
            reading.leave_out("Pascal VOC files in no ImageSets/Main list", len(unlisted), unlisted[0] if unlisted else "")
            listed.update(unlisted)
    for path in files.voc:
        if path not in listed:
            by_split.setdefault(split_of(files.root, path), []).append(path)
    parsed = {path: voc.VocFile(path) for paths in by_split.values() for path in paths}
    categories = _categories(voc.class_names(list(parsed.values())))
    id_of = {name: k for k, name in categories}
    finder, groups, label_files = voc.ImageFinder(), {}, {}
    for split, paths in by_split.items():
        groups[split] = []
        for path in paths:
            file = parsed[path]
            image = finder.of(path, file.filename, voc.image_folders(path))
            _one_per_image(label_files, image, path)
            groups[split].append(voc.voc_image(file, image, id_of, difficult, reading.fixes))
    if not listed:  # the devkit's lists say which images belong to a split; elsewhere unlabelled ones are background
        _background(groups, files.images, set(label_files))
    return groups, categories


def _names_yaml(path: str) -> bool:
    """A data.yaml (which must then be readable), or another yaml that reads as a mapping with 'names'."""
    if os.path.basename(path).lower() in ("data.yaml", "data.yml"):
        return True
    try:
        return path.lower().endswith((".yaml", ".yml")) and "names" in yolo.read_data_yaml(path)
    except DatasetError:
        return False  # some other yaml (a CI file, notes)


def _names_file(files: _Files, given: str | None) -> str:
    """The file naming a YOLO export's classes: the data.yaml given, else the shallowest yaml with 'names', else
    the shallowest classes.txt or obj.names."""
    if given:
        return given
    yamls = [p for p in files.names if _names_yaml(p)]
    texts = [p for p in files.names if os.path.basename(p).lower() in NAMES_FILES]
    for candidates in (yamls, texts):
        if candidates:
            return min(candidates, key=lambda p: (os.path.relpath(p, files.root).count(os.sep), p))
    raise DatasetError(f"{files.root} has YOLO labels but no data.yaml, classes.txt or obj.names naming the classes: "
                       f"add one (data.yaml: 'names: [cat, dog]'; classes.txt: one name per line)")


def _yolo_label(image: str) -> str | None:
    """The image's label file: Ultralytics' images -> labels swap, else the .txt beside it (LabelImg, CVAT)."""
    swapped = yolo.label_path(image)
    if swapped is not None and os.path.isfile(swapped):
        return swapped
    beside = os.path.splitext(image)[0] + ".txt"
    return beside if os.path.isfile(beside) else None


def _yolo_images(files: _Files, yaml_file: str | None, labels: set[str]) -> dict[str, list[str]]:
    """{split: image paths}: a data.yaml's folders, or every image a label file or labels folder pairs with."""
    if yaml_file is not None:
        found: dict[str, list[str]] = {}
        for split, entries in yolo.yaml_split_paths(yaml_file, yolo.read_data_yaml(yaml_file)).items():
            for entry in entries:
                if os.path.isdir(entry):
                    found.setdefault(split, []).extend(p for p in _walk(entry) if p.lower().endswith(IMAGE_EXTENSIONS))
                elif entry.lower().endswith(".txt"):
                    found.setdefault(split, []).extend(yolo.list_file_images(entry))
                else:
                    found.setdefault(split, []).append(entry)
        return found
    label_folders = {os.path.dirname(p) for p in labels}
    found: dict[str, list[str]] = {}
    for image in files.images:
        swapped = yolo.label_path(image)
        if (swapped and os.path.dirname(swapped) in label_folders) or os.path.dirname(image) in label_folders:
            found.setdefault(split_of(files.root, image), []).append(image)
    return found


def _read_yolo(files: _Files, reading: _Reading,
               yaml_file: str | None) -> tuple[dict[str, list[LabeledImage]], list[tuple[int, str]]]:
    names_file = _names_file(files, yaml_file)
    index_names, note = yolo.read_class_names(names_file)
    if note:
        reading.notes.append(note)
    groups: dict[str, list[LabeledImage]] = {}
    used: set[str] = set()
    for split, images in _yolo_images(files, yaml_file, set(files.yolo)).items():
        pairs = [(image, _yolo_label(image)) for image in sorted(set(images))]
        if not any(label for _, label in pairs):
            continue  # a folder of unlabelled images (counted with the images no file names)
        claimed: dict[str, str] = {}
        for image, label in pairs:
            if label is not None and claimed.setdefault(label, image) != image:
                raise DatasetError(f"{label} would label both {claimed[label]} and {image}: rename one of them")
        groups[split] = [yolo.yolo_image(image, label, index_names, names_file, reading.fixes) for image, label in pairs]
        used |= set(claimed)
    orphans = sorted(p for p in files.yolo if p not in used)
    reading.leave_out("YOLO label files without their image", len(orphans), orphans[0] if orphans else "")
    return groups, [(k + 1, index_names[k]) for k in sorted(index_names)]


def _read_labelme(files: _Files, reading: _Reading) -> tuple[dict[str, list[LabeledImage]], list[tuple[int, str]]]:
    parsed = [labelme.LabelMeFile(path) for path in files.labelme]
    categories = _categories(labelme.class_names(parsed))
    id_of = {name: k for k, name in categories}
    groups: dict[str, list[LabeledImage]] = {}
    label_files: dict[str, str] = {}
    for file in parsed:
        split = split_of(files.root, file.path)
        found = groups.setdefault(split, [])
        _one_per_image(label_files, file.image, file.path)
        found.append(labelme.labelme_image(file, id_of, reading.fixes))
        for kind, count in file.skipped.items():
            reading.leave_out(f"LabelMe {kind} shapes, which have no area to detect", count, file.path)
    _background(groups, files.images, set(label_files))
    return groups, categories


def _read_coco(files: _Files, reading: _Reading) -> dict[str, tuple[str, dict]]:
    by_split: dict[str, list[str]] = {}
    for path in files.coco:
        by_split.setdefault(split_of(files.root, path, by_name=True), []).append(path)
    for split, paths in by_split.items():
        instances = [p for p in paths if os.path.basename(p).startswith("instances")]
        if len(paths) > 1 and len(instances) == 1:  # COCO's own download: keypoints and other files beside
            reading.leave_out("COCO files beside the instances file of their split", len(paths) - 1,
                              next(p for p in paths if p not in instances))
            paths[:] = instances
        if len(paths) > 1:
            shown = ", ".join(os.path.relpath(p, files.root) for p in paths[:4])
            raise DatasetError(f"{files.root} holds {len(paths)} COCO files for the {split or 'unnamed'} split "
                               f"({shown}): give the one to train on with --data FILE.json")
    return {split: (paths[0], read_coco_file(paths[0], reading.fixes, reading.notes, files.parsed.get(paths[0])))
            for split, paths in by_split.items()}


def _merge(split: str, parts: list[dict], source: str) -> DetectionSplit:
    """One split from COCO dicts whose file_names are paths: ids renumbered, file_names relative to the folder
    holding all the split's images."""
    images, annotations = [], []
    for part in parts:
        new_id = {}
        for entry in part["images"]:
            new_id[entry["id"]] = len(images) + 1
            images.append({**entry, "id": len(images) + 1})
        for ann in part["annotations"]:
            if ann.get("image_id") in new_id:
                annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_id[ann["image_id"]]})
    folders = sorted({os.path.dirname(os.path.abspath(entry["file_name"])) for entry in images})
    image_dir = os.path.commonpath(folders) if folders else ""
    for entry in images:
        entry["file_name"] = os.path.relpath(os.path.abspath(entry["file_name"]), image_dir).replace(os.sep, "/")
    coco = {"images": images, "annotations": annotations, "categories": parts[0]["categories"]}
    return DetectionSplit(split, image_dir, source, annotations=coco)


def _subset(coco: dict, keep: set[str], image_dir: str, root: str) -> dict:
    kept = [e for e in coco["images"] if _name(image_dir, e["file_name"], root) in keep]
    ids = {e["id"] for e in kept}
    return {**coco, "images": kept, "annotations": [a for a in coco["annotations"] if a.get("image_id") in ids]}


def _name(image_dir: str, file_name: str, root: str) -> str:
    """How an image is listed in heldout.txt: its path relative to the data folder."""
    return os.path.relpath(os.path.join(image_dir, file_name), root).replace(os.sep, "/")


def _hold_out(pool: DetectionSplit, root: str, heldout: set[str] | None) -> tuple[DetectionSplit, DetectionSplit, set[str]]:
    coco = pool.annotations
    assert coco is not None
    if heldout is None:
        classes: dict[int, set] = {}
        for ann in coco["annotations"]:
            classes.setdefault(ann.get("image_id"), set()).add(ann.get("category_id"))
        items = [Item(_name(pool.image_dir, e["file_name"], root), os.path.join(pool.image_dir, e["file_name"]),
                      frozenset(classes.get(e["id"], ()))) for e in coco["images"]]
        heldout = hold_out(items)
    names = {_name(pool.image_dir, e["file_name"], root) for e in coco["images"]}
    missing = sorted(heldout - names)
    if missing:
        raise DatasetError(f"the held-out list names {len(missing)} image(s) no longer in {root} (e.g. {missing[0]}): "
                           f"put them back, or delete the run's {HELDOUT_FILE} to hold out anew")
    train = DetectionSplit("train", pool.image_dir, pool.source, annotations=_subset(coco, names - heldout, pool.image_dir, root))
    val = DetectionSplit("val", pool.image_dir, pool.source + " (held out)",
                         annotations=_subset(coco, heldout, pool.image_dir, root))
    return train, val, heldout


def _counts(split: DetectionSplit) -> str:
    coco = split.annotations or {}
    objects = len(coco.get("annotations", []))
    return f"{split.name} {len(coco.get('images', []))} images ({objects} objects)"


def _report(format_name: str, path: str, splits: DetectionSplits, reading: _Reading, pooled: str) -> list[str]:
    names = splits.classes
    lines = [f"found {FORMAT_NAMES[format_name]} labels in {path}: {len(names)} classes "
             f"({', '.join(map(str, names[:8]))}{', ...' if len(names) > 8 else ''}); "
             + ", ".join(_counts(split) for split in splits)]
    if splits.heldout is not None:
        total = len(splits.heldout) + len(splits.train.coco()["images"])
        lines.append(f"the export has no val split: held out {len(splits.heldout)} of its {total} {pooled} images as val "
                     f"(about {SHARE:.0%}, the same on every run: byte-identical copies kept together, numbered frames "
                     f"in blocks); a training run lists them in its {HELDOUT_FILE}")
    if reading.fixes:
        lines.append("fixed: " + "; ".join(f"{count} x {what}" for what, count in sorted(reading.fixes.items())))
    if reading.left_out:
        lines.append("left out: " + "; ".join(
            f"{count} {what}" + (f" (e.g. {reading.examples[what]})" if reading.examples.get(what) else "")
            for what, count in sorted(reading.left_out.items())))
    lines += _overlaps(splits)
    rotated = sum(1 for split in splits for e in split.coco()["images"] if "exif_orientation" in e)
    if rotated:
        lines.append(f"{rotated} images carry an EXIF orientation tag: botnet reads pixels as stored, ignoring the tag "
                     f"at training, evaluation and prediction alike (as torchvision and pycocotools do); if your "
                     f"labelling tool showed them rotated, save them with the rotation applied and label again")
    return lines + reading.notes


def _overlaps(splits: DetectionSplits) -> list[str]:
    """A line for each two splits that share images (Ultralytics' coco8 validates on its training images)."""
    paths = {split.name: {os.path.join(split.image_dir, e["file_name"]) for e in split.coco()["images"]}
             for split in splits}
    lines = []
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(paths.get(first, set()) & paths.get(second, set()))
        if shared:
            lines.append(f"{len(shared)} images are in both the {first} and the {second} split (e.g. "
                         f"{os.path.relpath(shared[0], splits.root)}): scores on {second} then measure memory")
    return lines


def _arrange(parts: dict[str, dict], sources: dict[str, str], root: str, heldout: set[str] | None,
             reading: _Reading) -> tuple[DetectionSplit, DetectionSplit, DetectionSplit | None, set[str] | None, str]:
    """(train, val, test, held-out names or None, what the val split was held out of). Images outside any split
    folder are training images; without a val split one is held out of the training images (of the test split,
    where that is all the export has)."""
    if "" in parts:
        if "train" in parts:
            outside = sum(len(coco["images"]) for coco in parts[""])
            reading.notes.append(f"{outside} images outside the split folders are trained on with the train split")
        parts["train"] = [*parts.get("train", []), *parts.pop("")]
    test = _merge("test", parts["test"], sources["test"]) if "test" in parts else None
    if "train" in parts and "val" in parts:
        return _merge("train", parts["train"], sources["train"]), _merge("val", parts["val"], sources["val"]), test, None, ""
    pooled = next((name for name in ("train", "val") if name in parts), "test")
    if pooled == "test":
        test = None  # the export's only split is all the data there is
    train, val, names = _hold_out(_merge("train", parts[pooled], sources[pooled]), root, heldout)
    return train, val, test, names, "test-split" if pooled == "test" else "labelled"


def _read_labels(format_name: str, files: _Files, reading: _Reading, difficult: str,
                 yaml_file: str | None) -> tuple[dict[str, dict], dict[str, str]]:
    """({split: COCO dict with paths as file_names}, {split: what names it in messages}) of the chosen format."""
    if format_name == "coco":
        found = _read_coco(files, reading)
        categories = {split: [(c["id"], c["name"]) for c in coco["categories"]] for split, (_, coco) in found.items()}
        if len({tuple(c) for c in categories.values()}) > 1:
            raise DatasetError(f"the COCO files in {files.root} list different categories ({categories}); every split "
                               f"must use the same category ids and names")
        return {split: coco for split, (_, coco) in found.items()}, {split: path for split, (path, _) in found.items()}
    if format_name == "voc":
        labelled, categories = _read_voc(files, reading, difficult)
    elif format_name == "yolo":
        labelled, categories = _read_yolo(files, reading, yaml_file)
    else:
        labelled, categories = _read_labelme(files, reading)
    parts = {split: to_coco(sorted(images, key=lambda i: i.file_name), categories, reading.fixes)
             for split, images in labelled.items() if images}
    return parts, {split: f"{FORMAT_NAMES[format_name]} {split or 'unsplit'} data in {files.root}" for split in parts}


def find_layout(path: str, *, data_format: str | None = None, difficult: str = "train",
                heldout: set[str] | None = None) -> DetectionSplits:
    """The train, val (and test) splits of the detection data at ``path`` (a folder, a data.yaml or a COCO
    .json), found by what its files are (see the module docstring). ``data_format`` chooses where a folder holds
    several formats; ``difficult`` what Pascal VOC's difficult objects become (see
    :mod:`botnet.data.formats.voc`); ``heldout`` the names to hold out as val (a run's heldout.txt) instead of
    choosing them, where the export has no val split."""
    if not os.path.exists(path):
        raise MissingFileError(f"dataset folder {path} does not exist")
    is_file = os.path.isfile(path)
    yaml_file = path if is_file and path.lower().endswith((".yaml", ".yml")) else None
    if is_file and yaml_file is None and not path.lower().endswith(".json"):
        raise DatasetError(f"{path} is a file but neither a data.yaml nor a COCO .json: give the dataset's folder")
    root = os.path.dirname(os.path.abspath(path)) if is_file else os.path.abspath(path)
    files = _scan(root, labels=not is_file or yaml_file is not None)  # one COCO file: its siblings are not read
    if yaml_file is not None:
        format_name = "yolo"
    elif is_file:
        format_name, files.coco = "coco", [os.path.abspath(path)]
    else:
        format_name = _choose_format(path, files, data_format)
    reading = _Reading(root)
    parts, sources = _read_labels(format_name, files, reading, difficult, yaml_file)
    if not parts:
        raise DatasetError(f"{path} has {FORMAT_NAMES[format_name]} files but no labelled images in them")
    used = {os.path.abspath(e["file_name"]) for coco in parts.values() for e in coco["images"]}
    unused = [p for p in files.images if p not in used]
    reading.leave_out("images no annotation file names", len(unused), unused[0] if unused else "")
    if "" in sources:
        sources.setdefault("train", sources[""])
    train, val, test, names, pooled = _arrange({split: [coco] for split, coco in parts.items()}, sources, root,
                                               heldout, reading)
    splits = DetectionSplits(format_name, root, train, val, test, heldout=names)
    splits.report = _report(format_name, path, splits, reading, pooled)
    return splits


def layout_of(path: str) -> str:
    """The format of the data at ``path`` ("coco", "voc", "yolo" or "labelme"), from its files alone."""
    if not os.path.exists(path):
        raise MissingFileError(f"dataset folder {path} does not exist")
    if os.path.isfile(path):
        return "yolo" if path.lower().endswith((".yaml", ".yml")) else "coco"
    return _choose_format(path, _scan(os.path.abspath(path)), None)

