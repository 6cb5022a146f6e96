"""Pascal VOC XML labels (LabelImg, CVAT, the VOC devkit): boxes only.

Where the images are: each file's image is its ``<filename>`` (or, failing
that, the one image with the file's stem) in the file's own folder, or, when
that folder is an annotations folder (``Annotations/``, LabelImg's
``annotations/``), in the image folder beside it (``JPEGImages/``,
``images/``). The devkit's ``ImageSets/Main/{train,trainval,val,test}.txt``
lists give the splits where they exist; elsewhere the folder names do (see
:mod:`botnet.data.formats.discover`). An image beside the labelled ones
without an XML file is an image without objects (LabelImg writes no file
for an image without boxes).

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

Classes are the sorted names found in all the files (category ids 1..K).

XML is parsed with expat directly, any DOCTYPE or ENTITY declaration refused (no VOC file has one; they are
how "billion laughs" files blow up), and files over 16 MiB are refused.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from xml.parsers import expat

from ...errors import DatasetError
from .common import LabeledImage, Shape, labeled_image, list_images

__all__ = ["DIFFICULT", "ImageFinder", "VocFile", "class_names", "devkit_lists", "image_folders", "parse_xml",
           "voc_image"]

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


class VocFile:
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
            self.size = (int(width), int(height))  # some exporters write 0: the image file's size is used
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


IMAGE_FOLDERS = ("JPEGImages", "images", "Images", "imgs", "img")
LABEL_FOLDERS = ("annotations", "labels", "xml", "xmls")


def image_folders(xml_path: str) -> list[str]:
    """Where a Pascal VOC file's image may be, in this order: its own folder, and when that is an annotations
    folder the image folders beside it (the devkit's JPEGImages, LabelImg's images)."""
    here = os.path.dirname(xml_path)
    folders = [here]
    if os.path.basename(here).lower() in LABEL_FOLDERS:
        parent = os.path.dirname(here)
        folders += [os.path.join(parent, name) for name in IMAGE_FOLDERS if os.path.isdir(os.path.join(parent, name))]
    return folders


class ImageFinder:
    """The images of folders, found by relative name or by stem (LabelImg keeps <filename> but renames happen)."""

    def __init__(self) -> None:
        self.listed: dict[str, dict[str, list[str]]] = {}

    def _stems(self, folder: str) -> dict[str, list[str]]:
        if folder not in self.listed:
            stems: dict[str, list[str]] = {}
            for name in list_images(folder):
                stems.setdefault(os.path.splitext(name)[0], []).append(os.path.join(folder, name))
            self.listed[folder] = stems
        return self.listed[folder]

    def of(self, label_file: str, filename: str | None, folders: list[str]) -> str:
        """The image of ``label_file``: ``filename`` in one of ``folders``, else the one image with its stem."""
        if filename:
            name = os.path.normpath(filename.replace("\\", "/")).replace(os.sep, "/")
            inside = not (os.path.isabs(name) or name == ".." or name.startswith("../"))
            for folder in folders:
                for candidate in ([name] if inside else []) + [os.path.basename(name)]:
                    if os.path.isfile(os.path.join(folder, candidate)):
                        return os.path.join(folder, candidate)
        stem = os.path.splitext(os.path.basename(label_file))[0]
        for folder in folders:
            found = self._stems(folder).get(stem, [])
            if len(found) > 1:
                raise DatasetError(f"{label_file} fits several images ({', '.join(found)}): give its <filename>, or "
                                   f"rename the images")
            if found:
                return found[0]
        named = f" (its <filename> is {filename!r})" if filename else ""
        raise DatasetError(f"{label_file} has no image in {' or '.join(folders)}{named}: add the image, or remove the "
                           f"label file")


def devkit_lists(annotations: str) -> dict[str, list[str]] | None:
    """The devkit's splits beside an ``Annotations`` folder: {split: XML paths} from ImageSets/Main/{train,val,
    trainval,test}.txt (trainval is the training split where there is no train.txt); None without such lists."""
    lists = os.path.join(os.path.dirname(annotations), "ImageSets", "Main")
    found: dict[str, list[str]] = {}
    for split, names in (("train", ("train", "trainval")), ("val", ("val",)), ("test", ("test",))):
        list_file = next((os.path.join(lists, f"{n}.txt") for n in names if os.path.isfile(os.path.join(lists, f"{n}.txt"))), None)
        if list_file is None:
            continue
        try:
            with open(list_file, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DatasetError(f"cannot read {list_file} as text: {error}") from error
        paths = [(number, os.path.join(annotations, f"{line.split()[0]}.xml"))
                 for number, line in enumerate(lines, start=1) if line.strip()]
        missing = [(number, path) for number, path in paths if not os.path.isfile(path)]
        if split == "test" and len(missing) == len(paths):
            continue  # VOC's test set comes without its annotations
        if missing:
            number, path = missing[0]
            raise DatasetError(f"{list_file} line {number} names {os.path.basename(path)[:-4]!r}, but {path} does not "
                               f"exist: fix the list, or add the file")
        if not paths:
            raise DatasetError(f"{list_file} lists no images: put the image ids of the {split} split in it")
        found[split] = [path for _, path in paths]
    return found or None


def class_names(files: list[VocFile]) -> list[str]:
    """The sorted class names of the files' objects."""
    return sorted({obj[0] for file in files for obj in file.objects})


def voc_image(file: VocFile, image: str, id_of: dict[str, int], difficult: str, fixes) -> LabeledImage:
    """The image a parsed file labels, with its objects (1-based inclusive corners made continuous)."""
    if difficult not in DIFFICULT:
        raise ValueError(f"difficult must be one of {', '.join(DIFFICULT)}, got {difficult!r}")
    labeled = labeled_image(image, file.size, fixes)
    for name, is_difficult, (xmin, ymin, xmax, ymax), where in file.objects:
        if is_difficult and difficult == "drop":
            continue
        crowd = int(is_difficult and difficult == "ignore")
        labeled.shapes.append(Shape(id_of[name], where, box=(xmin - 1, ymin - 1, xmax, ymax), iscrowd=crowd))
    return labeled
