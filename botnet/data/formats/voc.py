"""Pascal VOC XML labels (LabelImg, CVAT, the VOC devkit): boxes only.

Layouts: ``ROOT/Annotations/*.xml`` + ``ROOT/JPEGImages/`` with the image ids
of each split in ``ROOT/ImageSets/Main/{train,val}.txt`` (the VOC devkit's);
or one folder per split, ``ROOT/{train,val}/`` holding ``Annotations/`` +
``JPEGImages/``, or the XML files next to the images (LabelImg's default). In
split folders, an image without an XML file is an image without objects.

Coordinates: VOC's ``xmin ymin xmax ymax`` are 1-based pixel indices, both
corners inclusive, so a box over the whole W x H image is (1, 1, W, H). As in
the VOC devkit, torchvision's references and detectron2, the box in COCO's
continuous pixel coordinates starts one pixel earlier: x = xmin - 1,
y = ymin - 1, w = xmax - xmin + 1, h = ymax - ymin + 1 (so xmin == xmax is a
box one pixel wide). A file from a tool that writes 0-based corners is off by
at most a pixel, and its 0 lands within the tolerance at the border.

``difficult`` objects: detectron2 trains on them ("they don't hurt accuracy")
and the VOC metric ignores them. The default, ``difficult="train"``, follows
detectron2: they are ordinary objects (iscrowd 0). ``"ignore"`` marks them
iscrowd 1: not trained on, and ignored by COCO evaluation as VOC's metric
ignores them; ``"drop"`` leaves them out.

Classes are the sorted names found in the train split (category ids 1..K);
a val object of another class is an error naming its file.

XML is parsed with expat directly, any DOCTYPE or ENTITY declaration refused (no VOC file has one; they are
how "billion laughs" files blow up), and files over 16 MiB are refused.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from xml.parsers import expat

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
    list_images,
    to_coco,
    unknown_class,
)

__all__ = ["DIFFICULT", "matches", "parse_xml", "read_voc"]

DIFFICULT = ("train", "ignore", "drop")
MAX_XML_BYTES = 16 << 20


class _Declaration(Exception):
    pass


def _refuse(*_: object) -> None:
    raise _Declaration


def parse_xml(path: str) -> ET.Element:
    """The root element of an XML file, refusing DTDs and entity declarations; DatasetError when unusable."""
    try:
        if os.path.getsize(path) > MAX_XML_BYTES:
            raise DatasetError(f"{path} is over {MAX_XML_BYTES >> 20} MiB: not a Pascal VOC annotation file")
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    refused = DatasetError(
        f"{path} declares a DOCTYPE or ENTITY, which Pascal VOC files never do (and which can expand without "
        f"bound): remove the declaration"
    )
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = lambda tag: builder.end(tag)
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except _Declaration:
        raise refused from None
    except (expat.ExpatError, ValueError, LookupError, AssertionError) as error:  # TreeBuilder asserts a root
        raise DatasetError(f"{path} is not valid XML ({error or 'no root element'}): fix or re-export it") from None


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip()


def _number(path: str, what: str, text: str | None) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}: {what} is {text!r}, not a number: fix or re-export the file")
    return value


class _VocFile:
    """What one annotation file says: its image's name and size, and its objects."""

    def __init__(self, path: str) -> None:
        self.path = path
        root = parse_xml(path)
        if root.tag != "annotation":
            raise DatasetError(f"{path} is XML but not a Pascal VOC annotation (its root is <{root.tag}>, not "
                               f"<annotation>)")
        self.filename = _text(root.find("filename")) or None
        self.size: tuple[int, int] | None = None
        size = root.find("size")
        if size is not None and _text(size.find("width")) and _text(size.find("height")):
            width = _number(path, "<size><width>", _text(size.find("width")))
            height = _number(path, "<size><height>", _text(size.find("height")))
            if width != int(width) or height != int(height) or width < 0 or height < 0:
                raise DatasetError(f"{path}: <size> is {width:g}x{height:g}, not a whole number of pixels")
            if width > 0 and height > 0:  # some exporters write 0: the image file tells
                self.size = (int(width), int(height))
        self.objects: list[tuple[str, bool, tuple[float, ...], str]] = []
        for index, obj in enumerate(root.findall("object"), start=1):
            where = f"{path}, object {index}"
            name = _text(obj.find("name"))
            if not name:
                raise DatasetError(f"{where} has no <name>: give every object its class name")
            flag = (_text(obj.find("difficult")) or "0").lower()
            if flag not in ("0", "1", "true", "false"):
                raise DatasetError(f"{where}: <difficult> is {flag!r}, not 0 or 1")
            box = obj.find("bndbox")
            if box is None:
                raise DatasetError(f"{where} ({name!r}) has no <bndbox>: give it xmin, ymin, xmax, ymax")
            corners = tuple(_number(where, f"<{k}>", _text(box.find(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            self.objects.append((name, flag in ("1", "true"), corners, f"{where} ({name!r})"))


class _Images:
    """The images of a folder, found by relative name or by stem."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.names = list_images(folder)
        self.by_stem: dict[str, list[str]] = {}
        for name in self.names:
            self.by_stem.setdefault(os.path.splitext(name)[0], []).append(name)

    def of(self, label_file: str, filename: str | None) -> str:
        if filename:
            name = os.path.normpath(filename.replace("\\", "/")).replace(os.sep, "/")
            inside = not (os.path.isabs(name) or name == ".." or name.startswith("../"))
            if inside and os.path.isfile(os.path.join(self.folder, name)):
                return name
        stem = os.path.splitext(os.path.basename(label_file))[0]
        found = self.by_stem.get(stem, [])
        if len(found) == 1:
            return found[0]
        if found:
            raise DatasetError(f"{label_file} fits several images in {self.folder} ({', '.join(found)}): "
                               f"give its <filename>, or rename the images")
        named = f" (its <filename> is {filename!r})" if filename else ""
        raise DatasetError(
            f"{label_file} has no image in {self.folder}{named}: add the image, or remove the label file"
        )


def _split_sources(root: str) -> dict[str, tuple[list[str], str, bool, str]]:
    """Per split: (XML files, image folder, whether unlabelled images count, source description)."""
    sources = {}
    if os.path.isdir(os.path.join(root, "Annotations")):
        annotations, images = os.path.join(root, "Annotations"), os.path.join(root, "JPEGImages")
        if not os.path.isdir(images):
            raise DatasetError(f"{root} has Annotations/ but no JPEGImages/ (the Pascal VOC layout): add the images")
        for split in SPLITS:
            list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
            if not os.path.isfile(list_file):
                raise DatasetError(
                    f"{root} has Annotations/ but no ImageSets/Main/{split}.txt: list the image ids of each split "
                    f"in ImageSets/Main/train.txt and val.txt, or use ROOT/train/ and ROOT/val/ folders"
                )
            try:
                with open(list_file, encoding="utf-8") as file:
                    lines = file.read().splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise DatasetError(f"cannot read {list_file} as text: {error}") from error
            files = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                image_id = line.split()[0]
                xml = os.path.join(annotations, f"{image_id}.xml")
                if not os.path.isfile(xml):
                    raise DatasetError(f"{list_file} line {number} names {image_id!r}, but {xml} does not exist: "
                                       f"add it, or remove the line")
                files.append(xml)
            if not files:
                raise DatasetError(f"{list_file} lists no images: put the image ids of the {split} split in it")
            sources[split] = (files, images, False, f"Pascal VOC {split} split of {root} ({list_file})")
        return sources
    for split in SPLITS:
        folder = os.path.join(root, split)
        if os.path.isdir(os.path.join(folder, "Annotations")):
            labels, images = os.path.join(folder, "Annotations"), os.path.join(folder, "JPEGImages")
            if not os.path.isdir(images):
                raise DatasetError(f"{folder} has Annotations/ but no JPEGImages/: put the {split} images there")
        else:
            labels = images = folder
        if not os.path.isdir(folder):
            raise DatasetError(f"{root} has no {split}/ folder: Pascal VOC labels need ROOT/train/ and ROOT/val/")
        files = sorted(os.path.join(labels, n) for n in os.listdir(labels) if n.lower().endswith(".xml"))
        sources[split] = (files, images, True, f"Pascal VOC {split} split in {folder}")
    return sources


def matches(root: str) -> bool:
    """Whether ``root`` looks like a Pascal VOC folder (either layout)."""
    if os.path.isdir(os.path.join(root, "Annotations")):
        return True
    train = os.path.join(root, "train")
    if os.path.isdir(os.path.join(train, "Annotations")):
        return True
    return os.path.isdir(train) and any(n.lower().endswith(".xml") for n in os.listdir(train))


def read_voc(root: str, *, difficult: str = "train") -> DetectionSplits:
    """The train and val splits of a Pascal VOC folder, converted to COCO dicts (boxes, no masks)."""
    if difficult not in DIFFICULT:
        raise ValueError(f"difficult must be one of {', '.join(DIFFICULT)}, got {difficult!r}")
    sources = _split_sources(root)
    parsed = {split: [_VocFile(path) for path in sources[split][0]] for split in SPLITS}
    names = sorted({obj[0] for file in parsed["train"] for obj in file.objects})
    if not names:
        raise DatasetError(f"the Pascal VOC train split of {root} has no objects: label some, or check the layout")
    categories = category_ids(names)
    id_of = {name: category_id for category_id, name in categories}
    splits = {}
    for split in SPLITS:
        files, image_dir, unlabelled, source = sources[split]
        images_here = _Images(image_dir)
        images: list[LabeledImage] = []
        label_files: dict[str, str] = {}
        for voc in parsed[split]:
            file_name = images_here.of(voc.path, voc.filename)
            add_label_file(label_files, file_name, voc.path)
            size = check_declared_size(voc.path, voc.size, image_size(os.path.join(image_dir, file_name)),
                                       os.path.join(image_dir, file_name))
            image = LabeledImage(file_name, *(size or (None, None)))
            for name, is_difficult, (xmin, ymin, xmax, ymax), where in voc.objects:
                if name not in id_of:
                    raise unknown_class(where, name, categories)
                if is_difficult and difficult == "drop":
                    continue
                crowd = int(is_difficult and difficult == "ignore")
                image.shapes.append(Shape(id_of[name], where, box=(xmin - 1, ymin - 1, xmax, ymax), iscrowd=crowd))
            images.append(image)
        if unlabelled:
            images += [LabeledImage(n, *(image_size(os.path.join(image_dir, n)) or (None, None)))
                       for n in images_here.names if n not in label_files]
            images.sort(key=lambda image: image.file_name)
        if not images:
            raise DatasetError(f"{source}: no images or annotation files found")
        splits[split] = DetectionSplit(split, image_dir, source, annotations=to_coco(images, categories, label_files))
    return DetectionSplits("voc", root, splits["train"], splits["val"])
