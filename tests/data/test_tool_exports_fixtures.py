"""The tool exports of tool_exports.py checked on their own, without botnet's readers: every builder writes what
its Export says (counted again from the files with json, ElementTree, yaml and PIL), and each quirk is really
there."""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from PIL import Image
from tool_exports import (
    ALL_EXPORTS,
    ALL_QUIRKS,
    TRAINABLE,
    Export,
    labelimg_yolo,
    labelme3_video,
    labelme5_rectangles,
    quirk_box_outside,
    quirk_coco_category_zero,
    quirk_duplicate_images,
    quirk_exif_orientation,
    quirk_png_named_jpg,
    quirk_subpixel_overshoot,
    quirk_unused_class_and_nc,
    quirk_wrong_size_labelme,
    quirk_zero_size_voc,
    roboflow_yolov8,
    roboflow_yolov8_yaml,
)

BUILDERS = [*ALL_EXPORTS, *ALL_QUIRKS, quirk_box_outside]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "test": "test"}


@dataclass
class Tally:
    """What the files of one export hold, read with the standard library."""

    classes: list[str] = field(default_factory=list)
    images: int = 0
    objects: int = 0
    splits: set[str] = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)
    unlabelled: int = 0
    boxes: list[tuple[Path, float, float, float, float]] = field(default_factory=list)  # image, x0, y0, x1, y1
    sizes: list[tuple[Path, tuple[int, int]]] = field(default_factory=list)  # image, (width, height) as labelled

    def found(self, label_file: Path, root: Path) -> None:
        """Notes the split a label file sits in, if any folder on its way names one."""
        self.splits |= {SPLIT_NAMES[part] for part in label_file.relative_to(root).parts[:-1] if part in SPLIT_NAMES}


def _root(export: Export) -> Path:
    return export.data if export.data.is_dir() else export.data.parent


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _size(image: Path) -> tuple[int, int]:
    with Image.open(image) as im:
        return im.size


def _tally_voc(root: Path, tally: Tally) -> None:
    names = set()
    for xml in sorted(root.rglob("*.xml")):
        tally.found(xml, root)
        document = ET.parse(xml).getroot()
        filename = document.findtext("filename")
        image = xml.with_name(filename) if (xml.parent / filename).exists() else xml.parent.parent / "images" / filename
        assert image.exists(), f"{xml} names {filename}, which is not there"
        tally.sizes.append((image, (int(document.findtext("size/width")), int(document.findtext("size/height")))))
        for element in document.iter("object"):
            names.add(element.findtext("name"))
            x0, y0, x1, y1 = (int(element.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            tally.boxes.append((image, x0 - 1, y0 - 1, x1, y1))  # 1-based inclusive corners
            tally.objects += 1
    tally.classes = sorted(names)
    tally.images = len(_image_files(root))


def _tally_yolo(root: Path, tally: Tally) -> None:
    yamls = sorted(root.rglob("*.yaml"))
    if yamls:
        tally.classes = list(yaml.safe_load(yamls[0].read_text())["names"])
    else:
        tally.classes = next(root.rglob("classes.txt")).read_text().split()
    for labels in sorted(p for p in root.rglob("*.txt") if p.parent.name == "labels" and p.name != "classes.txt"):
        tally.found(labels, root)
        image = labels.parent.parent / "images" / labels.with_suffix(".jpg").name
        assert image.exists(), f"{labels} has no image"
        width, height = _size(image)
        for line in labels.read_text().splitlines():
            index, cx, cy, w, h = line.split()
            assert 0 <= int(index) < len(tally.classes)
            cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
            tally.boxes.append((image, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            tally.objects += 1
    tally.images = len(_image_files(root))


def _tally_labelme(root: Path, tally: Tally) -> None:
    names, labelled = set(), set()
    jsons = sorted(root.rglob("*.json"))
    for path in jsons:
        tally.found(path, root)
        labelled.add(path.parent)
        document = json.loads(path.read_text())
        image = path.parent / document["imagePath"]
        assert image.exists(), f"{path} names {document['imagePath']}, which is not there"
        tally.sizes.append((image, (document["imageWidth"], document["imageHeight"])))
        for shape in document["shapes"]:
            if shape["shape_type"] not in TRAINABLE:
                tally.skipped[shape["shape_type"]] += 1
                continue
            names.add(shape["label"])
            xs, ys = [p[0] for p in shape["points"]], [p[1] for p in shape["points"]]
            tally.boxes.append((image, min(xs), min(ys), max(xs), max(ys)))
            tally.objects += 1
    tally.classes = sorted(names)
    tally.images = len(jsons)
    tally.unlabelled = sum(1 for image in _image_files(root) if image.parent not in labelled)


def _tally_coco(root: Path, tally: Tally) -> None:
    used: dict[int, str] = {}
    for path in sorted(root.rglob("_annotations.coco.json")):
        tally.found(path, root)
        document = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in document["categories"]}
        images = {}
        for entry in document["images"]:
            images[entry["id"]] = path.parent / entry["file_name"]
            assert images[entry["id"]].exists(), f"{path} lists {entry['file_name']}, which is not there"
            tally.sizes.append((images[entry["id"]], (entry["width"], entry["height"])))
        for annotation in document["annotations"]:
            used[annotation["category_id"]] = names[annotation["category_id"]]
            x, y, w, h = annotation["bbox"]
            tally.boxes.append((images[annotation["image_id"]], x, y, x + w, y + h))
        tally.images += len(images)
        tally.objects += len(document["annotations"])
    tally.classes = list(dict.fromkeys(used[i] for i in sorted(used)))  # used categories by id, a name once


TALLIES: dict[str, Callable[[Path, Tally], None]] = {
    "voc": _tally_voc, "yolo": _tally_yolo, "labelme": _tally_labelme, "coco": _tally_coco,
}


def _tally(export: Export) -> Tally:
    tally = Tally()
    TALLIES[export.format](_root(export), tally)
    return tally


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=BUILDERS, ids=lambda builder: builder.__name__)
def built(request, tmp_path) -> tuple[Callable[[Path], Export], Export]:
    return request.param, request.param(tmp_path)


def test_export_matches_its_files(built):
    builder, export = built
    assert export.format in TALLIES and export.data.exists()
    tally = _tally(export)
    assert (tally.images, tally.objects, tally.unlabelled) == (export.images, export.objects, export.unlabelled)
    assert tally.classes == export.classes
    assert tally.splits == export.splits
    assert dict(tally.skipped) == export.skipped
    assert 6 <= len(_image_files(_root(export))) <= 14
    assert export.notes


def test_labelled_sizes_are_the_files_but_in_the_size_quirks(built):
    builder, export = built
    wrong = [(image, size) for image, size in _tally(export).sizes if size != _size(image)]
    if builder is quirk_zero_size_voc:
        assert len(wrong) == 2 and all(size == (0, 0) for _, size in wrong)
    elif builder is quirk_wrong_size_labelme:
        assert len(wrong) == 2 and all(image.name in export.notes for image, _ in wrong)
    else:
        assert wrong == []


def test_boxes_lie_in_their_images_but_in_the_overshoot_quirks(built):
    builder, export = built
    overshoots = []
    for image, x0, y0, x1, y1 in _tally(export).boxes:
        width, height = _size(image)
        assert x0 < x1 and y0 < y1
        beyond = max(-x0, -y0, x1 - width, y1 - height)
        if beyond > 1e-3:  # YOLO's 6 decimals leave up to ~1e-4 pixel
            overshoots.append((image.name, round(beyond, 6)))
    if builder is quirk_subpixel_overshoot:
        assert len(overshoots) == 3 and all(0.3 <= amount <= 0.6 for _, amount in overshoots)
    elif builder is quirk_box_outside:
        assert len(overshoots) == 1 and overshoots[0][1] == 20 and overshoots[0][0] in export.notes
    else:
        assert overshoots == []


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda builder: builder.__name__)
def test_builders_are_deterministic(builder, tmp_path):
    builder(tmp_path / "a")
    builder(tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_builders_are_listed_once():
    assert len(ALL_EXPORTS) == 8 and len(ALL_QUIRKS) == 8
    assert len(set(BUILDERS)) == len(BUILDERS)
    assert all(b.__name__.startswith("quirk_") for b in ALL_QUIRKS) and quirk_box_outside not in ALL_QUIRKS


def test_labelimg_yolo_has_an_empty_file_and_one_without_final_newline(tmp_path):
    export = labelimg_yolo(tmp_path)
    texts = [p.read_text() for p in (export.data / "labels").glob("*.txt") if p.name != "classes.txt"]
    assert sum(text == "" for text in texts) == 1
    assert sum(bool(text) and not text.endswith("\n") for text in texts) == 1
    assert (export.data / "labels" / "classes.txt").read_text().split() == export.classes
    assert yaml.safe_load((export.data / "dataset.yaml").read_text()) == {"nc": 3, "names": export.classes}


def test_roboflow_yolov8_layout(tmp_path):
    export = roboflow_yolov8_yaml(tmp_path)
    assert export.data == tmp_path / "data.yaml"
    config = yaml.safe_load(export.data.read_text())
    assert (config["train"], config["val"], config["test"]) == ("../train/images", "../valid/images", "../test/images")
    assert config["nc"] == len(config["names"]) and "roboflow" in config
    assert all(re.fullmatch(r"pets_\d\d_jpg\.rf\.[0-9a-f]{32}\.jpg", p.name) for p in _image_files(tmp_path))
    assert roboflow_yolov8(tmp_path / "again").data == tmp_path / "again"


def test_labelme3_image_data_is_a_smaller_png(tmp_path):
    export = labelme3_video(tmp_path)
    jsons = sorted(export.data.rglob("*.json"))
    assert [p.stem for p in jsons] == [f"{i:06d}" for i in range(1, 13)]
    for path in jsons:
        document = json.loads(path.read_text())
        assert document["version"] == "3.16.7" and document["imagePath"] == path.with_suffix(".jpg").name
        assert all({"line_color", "fill_color"} <= set(shape) for shape in document["shapes"])
        data = base64.b64decode(document["imageData"])
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as small:
            assert small.size != (document["imageWidth"], document["imageHeight"])


def test_labelme5_test_folder_has_no_labels(tmp_path):
    labelme5_rectangles(tmp_path)
    test = tmp_path / "images" / "test"
    assert len(list(test.glob("*.jpg"))) == 4 and not list(test.glob("*.json"))
    for path in (tmp_path / "images" / "train").glob("*.json"):
        document = json.loads(path.read_text())
        assert document["version"] == "5.2.1" and document["imageData"] is None
        assert all(shape["shape_type"] == "rectangle" for shape in document["shapes"])


def test_png_named_jpg_files_are_png(tmp_path):
    quirk_png_named_jpg(tmp_path)
    kinds = {}
    for image in _image_files(tmp_path):
        assert image.suffix == ".jpg"
        head = image.read_bytes()[:8]
        with Image.open(image) as im:
            kinds[image.name] = ("PNG" if head == b"\x89PNG\r\n\x1a\n" else "JPEG" if head[:3] == b"\xff\xd8\xff"
                                 else "?", im.mode)
    assert Counter(kinds.values()) == Counter({("PNG", "RGBA"): 1, ("PNG", "P"): 1, ("JPEG", "L"): 1,
                                               ("JPEG", "RGB"): len(kinds) - 3})


def test_exif_orientations_are_stored(tmp_path):
    quirk_exif_orientation(tmp_path)
    orientations = []
    for image in _image_files(tmp_path):
        with Image.open(image) as im:
            orientations.append(im.getexif().get(0x0112))
    assert sorted(orientations, key=str) == sorted([0, 3, 6, None, None, None], key=str)


def test_unused_class_and_wrong_nc(tmp_path):
    export = quirk_unused_class_and_nc(tmp_path)
    config = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert config["names"] == export.classes == (tmp_path / "labels" / "classes.txt").read_text().split()
    assert config["nc"] != len(config["names"])
    used = {line.split()[0] for p in (tmp_path / "labels").glob("*.txt") if p.name != "classes.txt"
            for line in p.read_text().splitlines()}
    assert str(export.classes.index("fish")) not in used and len(used) == len(export.classes) - 1


def test_coco_category_zero_is_used_and_a_name_repeats(tmp_path):
    quirk_coco_category_zero(tmp_path)
    for split in ("train", "valid"):
        document = json.loads((tmp_path / split / "_annotations.coco.json").read_text())
        names = Counter(c["name"] for c in document["categories"])
        assert [name for name, n in names.items() if n > 1] == ["dog"]
    used = {a["category_id"] for a in json.loads((tmp_path / "train" / "_annotations.coco.json").read_text())
            ["annotations"]}
    assert 0 in used and 3 not in used


def test_duplicate_images_share_bytes_not_boxes(tmp_path):
    quirk_duplicate_images(tmp_path)
    images, labels = tmp_path / "images", tmp_path / "labels"
    assert (images / "IMG_2041.jpg").read_bytes() == (images / "IMG_2041-copy.jpg").read_bytes()
    assert (labels / "IMG_2041.txt").read_text() != (labels / "IMG_2041-copy.txt").read_text()
    contents = Counter(p.read_bytes() for p in _image_files(tmp_path))
    assert sorted(contents.values(), reverse=True)[:2] == [2, 1]
