"""Small detection datasets written on disk exactly as labelling tools export them, for the readers' tests.

Each builder takes an empty folder ``root``, writes one export there (images made with PIL, deterministic) and
returns an :class:`Export`: what the user would pass as ``--data`` and what a correct reader must find there.
The layout builders (:data:`ALL_EXPORTS`) follow LabelImg, Roboflow and LabelMe as their users download them;
the quirk builders (:data:`ALL_QUIRKS`, plus :func:`quirk_box_outside`, which a reader must refuse) are small
valid exports with one thing real exports get wrong.

Objects are kept as :class:`Shape` (pixels of the image file on disk) and written in each format by the
``write_*`` helpers, so the counts in an :class:`Export` are those of the shapes actually written.

No pytest and no botnet import here: ``from tool_exports import ALL_EXPORTS`` in any test of tests/data.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ALL_EXPORTS",
    "ALL_QUIRKS",
    "TRAINABLE",
    "Builder",
    "Export",
    "Picture",
    "Shape",
    "labelimg_voc_flat",
    "labelimg_voc_zips",
    "labelimg_yolo",
    "labelme3_video",
    "labelme5_rectangles",
    "quirk_box_outside",
    "quirk_coco_category_zero",
    "quirk_duplicate_images",
    "quirk_exif_orientation",
    "quirk_png_named_jpg",
    "quirk_subpixel_overshoot",
    "quirk_unused_class_and_nc",
    "quirk_wrong_size_labelme",
    "quirk_zero_size_voc",
    "rect",
    "regular_polygon",
    "render_image",
    "roboflow_coco_test_only",
    "roboflow_yolov8",
    "roboflow_yolov8_yaml",
    "write_coco",
    "write_image",
    "write_labelme_json",
    "write_voc_xml",
    "write_yolo",
]

Point = tuple[float, float]

TRAINABLE = ("polygon", "rectangle")
"""Shape kinds that are objects; any other kind (LabelMe's "line", "point") is counted in ``Export.skipped``."""

SIZES = ((64, 48), (80, 60), (96, 72), (120, 90), (48, 64))
"""(width, height) of the generated images: small, not square, one portrait."""

ROBOFLOW_DATE = "2024-03-05T10:12:44+00:00"


@dataclass
class Export:
    """What a correct reader must find in one export."""

    data: Path  # what the user passes as --data (a folder, or a .yaml/.json file)
    format: str  # "voc" | "yolo" | "labelme" | "coco"
    classes: list[str]  # YOLO: index order; VOC/LabelMe: sorted names; COCO: by category id
    images: int  # labelled + background images that must be read (all splits together)
    objects: int  # objects (region shapes) that must be read (all splits together)
    splits: set[str]  # the export's own split names normalised to {"train", "val", "test"}; empty when unsplit
    skipped: dict[str, int] = field(default_factory=dict)  # shapes a reader cannot train and must count
    unlabelled: int = 0  # image files in folders that hold no labels at all (left out and reported)
    notes: str = ""  # what quirk it carries


@dataclass
class Shape:
    """One labelled shape in pixels of the image file on disk: a polygon's vertices, a rectangle's two corners
    (in the order they were drawn), a line's two ends or a single point."""

    label: str
    points: list[Point]
    kind: str = "rectangle"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The extent (x0, y0, x1, y1)."""
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Picture:
    """One image file and its shapes."""

    name: str
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)

    @property
    def objects(self) -> list[Shape]:
        return [s for s in self.shapes if s.kind in TRAINABLE]


def rect(label: str, x0: float, y0: float, x1: float, y1: float) -> Shape:
    """A rectangle drawn from (x0, y0) to (x1, y1)."""
    return Shape(label, [(x0, y0), (x1, y1)], "rectangle")


def regular_polygon(label: str, cx: float, cy: float, radius: float, sides: int) -> Shape:
    """A polygon of ``sides`` vertices on a circle, rounded to 0.01 pixel as LabelMe stores clicks."""
    angles = np.linspace(0.0, 2 * np.pi, sides, endpoint=False)
    return Shape(label, [(round(cx + radius * np.cos(a), 2), round(cy + radius * np.sin(a), 2)) for a in angles],
                 "polygon")


# ---------------------------------------------------------------------------------------------------------------
# Images


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def render_image(width: int, height: int, shapes: Iterable[Shape] = (), *, seed: int = 0) -> Image.Image:
    """An RGB picture: a noisy flat background with each region shape filled in its own colour."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, size=3)
    noise = rng.integers(-12, 13, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if shape.kind == "polygon":
            draw.polygon(shape.points, fill=colour)
        elif shape.kind == "rectangle":
            draw.rectangle(shape.box, fill=colour)
    return image


def write_image(path: Path, width: int, height: int, shapes: Iterable[Shape] = (), *, fmt: str = "JPEG",
                mode: str = "RGB", exif: Image.Exif | None = None) -> Path:
    """Writes :func:`render_image` (seeded by the file name) to ``path`` in ``fmt`` and ``mode`` ("P": an adaptive
    16-colour palette), whatever the extension says; returns ``path``."""
    image = render_image(width, height, shapes, seed=_seed(path.name))
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        image = image.convert(mode)
    options: dict = {"quality": 90} if fmt == "JPEG" else {}
    if exif is not None:
        options["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path


def _write_picture(folder: Path, picture: Picture) -> Path:
    return write_image(folder / picture.name, picture.width, picture.height, picture.shapes)


def _random_pictures(seed: int, names: Sequence[str], labels: Sequence[str], *, backgrounds: Iterable[str] = (),
                     sizes: Sequence[tuple[int, int]] = SIZES) -> list[Picture]:
    """Pictures of random ``sizes`` with 1-3 integer boxes each (none for ``backgrounds``); labels are dealt in turn so
    every label is used once there are enough boxes."""
    rng = np.random.default_rng(seed)
    empty = set(backgrounds)
    pictures, dealt = [], 0
    for name in names:
        width, height = sizes[int(rng.integers(len(sizes)))]
        shapes = []
        for _ in range(0 if name in empty else int(rng.integers(1, 4))):
            w, h = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            shapes.append(rect(labels[dealt % len(labels)], x0, y0, x0 + w, y0 + h))
            dealt += 1
        pictures.append(Picture(name, width, height, shapes))
    return pictures


# ---------------------------------------------------------------------------------------------------------------
# Label writers


def write_voc_xml(path: Path, picture: Picture, *, folder: str, image_path: str, zero_size: bool = False) -> None:
    """A Pascal VOC file as LabelImg writes it (tab-indented, no XML declaration, 1-based inclusive integer
    corners, ``truncated`` 1 where the box touches the border); ``zero_size`` writes ``<size>`` as 0 x 0."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = picture.name
    ET.SubElement(root, "path").text = image_path
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "Unknown"
    size = ET.SubElement(root, "size")
    for key, value in (("width", 0 if zero_size else picture.width), ("height", 0 if zero_size else picture.height),
                       ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for shape in picture.objects:
        x0, y0, x1, y1 = (int(v) for v in shape.box)
        truncated = x0 <= 0 or y0 <= 0 or x1 >= picture.width or y1 >= picture.height
        element = ET.SubElement(root, "object")
        for key, value in (("name", shape.label), ("pose", "Unspecified"), ("truncated", str(int(truncated))),
                           ("difficult", "0")):
            ET.SubElement(element, key).text = value
        box = ET.SubElement(element, "bndbox")
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root, "\t")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")


def write_yolo(path: Path, picture: Picture, names: Sequence[str], *, number: str = ".6f",
               final_newline: bool = True) -> None:
    """A YOLO label file: ``class cx cy w h`` per object in fractions of the image, numbers formatted with
    ``number`` (LabelImg ".6f", Roboflow ".10g"); an image without objects gets an empty file."""
    lines = []
    for shape in picture.objects:
        x0, y0, x1, y1 = shape.box
        values = ((x0 + x1) / 2 / picture.width, (y0 + y1) / 2 / picture.height,
                  (x1 - x0) / picture.width, (y1 - y0) / picture.height)
        lines.append(" ".join([str(names.index(shape.label)), *(format(v, number) for v in values)]))
    text = "\n".join(lines) + ("\n" if lines and final_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_labelme_json(path: Path, picture: Picture, *, version: str, image_data: str | None = None,
                       size: tuple[int, int] | None = None) -> None:
    """A LabelMe file beside its image: 3.x shapes carry ``line_color``/``fill_color`` (and the file
    ``lineColor``/``fillColor``), 4.x/5.x shapes ``group_id`` and, from 5.2, ``description``. ``size``
    (width, height) overrides the image's own in ``imageWidth``/``imageHeight``."""
    major, minor = (int(part) for part in version.split(".")[:2])
    shapes = []
    for shape in picture.shapes:
        entry: dict = {"label": shape.label}
        if major < 4:
            entry |= {"line_color": None, "fill_color": None}
        entry["points"] = [[float(x), float(y)] for x, y in shape.points]
        if major >= 4:
            entry["group_id"] = None
            if (major, minor) >= (5, 2):
                entry["description"] = ""
        entry |= {"shape_type": shape.kind, "flags": {}}
        shapes.append(entry)
    document: dict = {"version": version, "flags": {}, "shapes": shapes}
    if major < 4:
        document |= {"lineColor": [0, 255, 0, 128], "fillColor": [255, 0, 0, 128]}
    width, height = size or (picture.width, picture.height)
    document |= {"imagePath": picture.name, "imageData": image_data, "imageHeight": height, "imageWidth": width}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def _number(value: float) -> float | int:
    """A COCO number as Roboflow writes it: an int when whole, else rounded to 3 decimals."""
    value = round(float(value), 3)
    return int(value) if value.is_integer() else value


def write_coco(path: Path, pictures: Sequence[Picture], categories: Sequence[Mapping], ids: Mapping[str, int]) -> None:
    """A COCO instances file as Roboflow writes it (``info``, ``licenses``, ids from 0, ``license`` and
    ``date_captured`` on each image, empty ``segmentation``); ``ids`` maps a label to its category id."""
    images, annotations = [], []
    for image_id, picture in enumerate(pictures):
        images.append({"id": image_id, "license": 1, "file_name": picture.name, "height": picture.height,
                       "width": picture.width, "date_captured": ROBOFLOW_DATE})
        for shape in picture.objects:
            x0, y0, x1, y1 = shape.box
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": ids[shape.label],
                                "bbox": [_number(x0), _number(y0), _number(x1 - x0), _number(y1 - y0)],
                                "area": _number((x1 - x0) * (y1 - y0)), "segmentation": [], "iscrowd": 0})
    document = {
        "info": {"year": "2024", "version": "2", "description": "Exported from roboflow.com", "contributor": "",
                 "url": "https://public.roboflow.com/object-detection/undefined", "date_created": ROBOFLOW_DATE},
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
        "categories": list(categories),
        "images": images,
        "annotations": annotations,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces of the builders


def _export(data: Path, fmt: str, classes: Sequence[str], pictures: Iterable[Picture], splits: Iterable[str] = (),
            **extra) -> Export:
    """The Export of ``pictures`` (all of them read): images, objects and skipped shapes counted from them."""
    pictures = list(pictures)
    skipped = Counter(s.kind for p in pictures for s in p.shapes if s.kind not in TRAINABLE)
    return Export(data=data, format=fmt, classes=list(classes), images=len(pictures),
                  objects=sum(len(p.objects) for p in pictures), splits=set(splits), skipped=dict(skipped), **extra)


def _sorted_labels(pictures: Iterable[Picture]) -> list[str]:
    """The class names of VOC and LabelMe: sorted labels of the region shapes."""
    return sorted({s.label for p in pictures for s in p.objects})


def _names(stem: str, count: int, start: int = 1, ext: str = ".jpg") -> list[str]:
    return [f"{stem}{i:04d}{ext}" for i in range(start, start + count)]


def _voc_beside(folder: Path, pictures: Sequence[Picture], image_dir: str) -> None:
    """VOC files next to their images in ``folder`` (as in LabelImg's "Change Save Dir" left alone)."""
    for picture in pictures:
        _write_picture(folder, picture)
        write_voc_xml((folder / picture.name).with_suffix(".xml"), picture, folder=folder.name,
                      image_path=f"{image_dir}/{picture.name}")


def _voc_flat(root: Path, pictures: Sequence[Picture], *, zero_size: Iterable[str] = ()) -> None:
    """LabelImg's lower-case ``annotations/`` + ``images/``; pictures without objects get no XML."""
    zero = set(zero_size)
    for picture in pictures:
        _write_picture(root / "images", picture)
        if picture.objects:
            write_voc_xml(root / "annotations" / Path(picture.name).with_suffix(".xml").name, picture,
                          folder="images", image_path=f"C:\\Users\\anna\\Pictures\\pets\\images\\{picture.name}",
                          zero_size=picture.name in zero)


def _yolo_folder(folder: Path, pictures: Sequence[Picture], names: Sequence[str], *, number: str = ".6f",
                 open_last_line: Iterable[str] = ()) -> None:
    """``folder/images/`` + ``folder/labels/`` (a label file per image, empty for backgrounds); the pictures
    named in ``open_last_line`` get no final newline."""
    open_files = set(open_last_line)
    for picture in pictures:
        _write_picture(folder / "images", picture)
        write_yolo(folder / "labels" / Path(picture.name).with_suffix(".txt").name, picture, names, number=number,
                   final_newline=picture.name not in open_files)


def _yaml_list(names: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _roboflow_name(stem: str, ext: str = "jpg") -> str:
    """A Roboflow export's file name: ``{stem}_{ext}.rf.{32 hex}.{ext}``."""
    return f"{stem}_{ext}.rf.{hashlib.md5(stem.encode()).hexdigest()}.{ext}"


def _roboflow_readmes(root: Path) -> None:
    _write_text(root / "README.roboflow.txt", "\nPets - v2 2024-03-05 10:12am\n==============================\n\n"
                "This dataset was exported via roboflow.com on March 5, 2024\n")
    _write_text(root / "README.dataset.txt", "# Pets > 2024-03-05 10:12am\nhttps://universe.roboflow.com/anna-pets/"
                "pets-detect\n\nProvided by a Roboflow user\nLicense: CC BY 4.0\n")


def _roboflow_categories(dataset: str, names: Sequence[str]) -> tuple[list[dict], dict[str, int]]:
    """Roboflow's categories: id 0 a super-category named after the dataset (used by no annotation), then the
    classes from id 1 with that super-category."""
    categories = [{"id": 0, "name": dataset, "supercategory": "none"}]
    categories += [{"id": i, "name": name, "supercategory": dataset} for i, name in enumerate(names, 1)]
    return categories, {name: i for i, name in enumerate(names, 1)}


def _coco_folders(root: Path, splits: Mapping[str, Sequence[Picture]], categories: Sequence[Mapping],
                  ids: Mapping[str, int]) -> None:
    """``root/{split}/_annotations.coco.json`` beside that split's images."""
    for split, pictures in splits.items():
        for picture in pictures:
            _write_picture(root / split, picture)
        write_coco(root / split / "_annotations.coco.json", pictures, categories, ids)


# ---------------------------------------------------------------------------------------------------------------
# Layout builders


def labelimg_voc_flat(root: Path) -> Export:
    """LabelImg, Pascal VOC: ``annotations/*.xml`` + ``images/*.jpg``, no ImageSets, no split; one background
    image has no XML."""
    names = _names("IMG_", 8)
    pictures = _random_pictures(11, names, ["cat", "dog", "bird"], backgrounds=[names[5]])
    _voc_flat(root, pictures)
    return _export(root, "voc", _sorted_labels(pictures), pictures,
                   notes="lower-case annotations/ + images/, Windows <path>, a background image without XML")


def labelimg_voc_zips(root: Path) -> Export:
    """Two LabelImg zips unpacked side by side: ``a_zip/train/`` and ``b_zip/test/``, each XML beside its JPEG."""
    train = _random_pictures(12, _names("IMG_", 6), ["cat", "dog", "bird"])
    test = _random_pictures(13, _names("IMG_", 4, start=101), ["dog", "cat", "bird"])
    _voc_beside(root / "a_zip" / "train", train, "C:\\Users\\anna\\pets\\train")
    _voc_beside(root / "b_zip" / "test", test, "/home/ben/pets/test")
    return _export(root, "voc", _sorted_labels(train + test), train + test, {"train", "test"},
                   notes="one folder per unpacked zip, each split one level down, XML beside the images")


def labelimg_yolo(root: Path) -> Export:
    """LabelImg, YOLO: ``dataset/images/`` + ``dataset/labels/`` with ``classes.txt`` inside ``labels/``, and a
    ``dataset.yaml`` beside (``nc``, ``names``, no paths); no split. One background has an empty label file and
    one label file has no final newline."""
    folder = root / "dataset"
    names = ["dog", "cat", "bird"]
    files = _names("frame_", 9)
    pictures = _random_pictures(14, files, names, backgrounds=[files[2]])
    _yolo_folder(folder, pictures, names, open_last_line=[files[4]])
    _write_text(folder / "labels" / "classes.txt", "".join(f"{name}\n" for name in names))
    _write_text(folder / "dataset.yaml", f"nc: {len(names)}\nnames:\n" + "".join(f"  - {n}\n" for n in names))
    return _export(folder, "yolo", names, pictures,
                   notes="classes.txt inside labels/, dataset.yaml without paths, empty label file, no final newline")


def roboflow_yolov8(root: Path) -> Export:
    """Roboflow, YOLOv8: ``{train,valid,test}/{images,labels}/`` with Roboflow file names and a ``data.yaml``
    whose paths start with ``../`` (relative to the wrong folder, as Roboflow writes them)."""
    names = ["bird", "cat", "dog"]
    stems = [f"pets_{i:02d}" for i in range(1, 11)]
    pictures = _random_pictures(15, [_roboflow_name(s) for s in stems], names, backgrounds=[_roboflow_name(stems[3])])
    splits = {"train": pictures[:6], "valid": pictures[6:8], "test": pictures[8:]}
    for split, part in splits.items():
        _yolo_folder(root / split, part, names, number=".10g")
    _write_text(root / "data.yaml",
                "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
                f"nc: {len(names)}\nnames: {_yaml_list(names)}\n\n"
                "roboflow:\n  workspace: anna-pets\n  project: pets-detect\n  version: 2\n  license: CC BY 4.0\n"
                "  url: https://universe.roboflow.com/anna-pets/pets-detect/dataset/2\n")
    _roboflow_readmes(root)
    return _export(root, "yolo", names, pictures, {"train", "val", "test"},
                   notes="Roboflow names (x_jpg.rf.<hash>.jpg), valid/ for val, '../' paths in data.yaml, "
                         "roboflow: block, README files, an empty label file")


def roboflow_yolov8_yaml(root: Path) -> Export:
    """:func:`roboflow_yolov8`, given as its ``data.yaml`` file."""
    export = roboflow_yolov8(root)
    export.data = root / "data.yaml"
    export.notes += "; --data is the data.yaml file"
    return export


def labelme3_video(root: Path) -> Export:
    """LabelMe 3.16.7 polygons on 12 consecutive video frames ``data/images/000001.jpg`` (+ ``.json``), objects
    moving a few pixels a frame; ``imageData`` is a half-size PNG while the points and ``imageWidth``/
    ``imageHeight`` are those of the file on disk. One "line" and two "point" shapes (labels that are no class)."""
    folder = root / "data" / "images"
    width, height = 96, 72
    pictures = []
    for frame in range(12):
        shapes = [regular_polygon("cat", 20 + 3 * frame, 30, 10, 6),
                  regular_polygon("dog", 75 - 2 * frame, 40 + frame, 12, 5)]
        if 5 <= frame <= 8:
            shapes.append(regular_polygon("bird", 50 + frame, 15, 6, 3))
        if frame == 2:
            shapes.append(Shape("leash", [(30.0, 55.0), (62.5, 60.0)], "line"))
        if frame in (4, 7):
            shapes.append(Shape("eye", [(22.0 + 3 * frame, 27.0)], "point"))
        pictures.append(Picture(f"{frame + 1:06d}.jpg", width, height, shapes))
    for picture in pictures:
        _write_picture(folder, picture)
        small = render_image(width, height, picture.shapes, seed=_seed(picture.name)).resize((width // 2, height // 2))
        png = io.BytesIO()
        small.save(png, "PNG")
        write_labelme_json((folder / picture.name).with_suffix(".json"), picture, version="3.16.7",
                           image_data=base64.b64encode(png.getvalue()).decode("ascii"))
    return _export(root / "data", "labelme", _sorted_labels(pictures), pictures,
                   notes="LabelMe 3 polygons, consecutive frames, imageData a half-size PNG, "
                         "line/point shapes with their own labels")


def labelme5_rectangles(root: Path) -> Export:
    """LabelMe 5.2.1 rectangles: ``images/train/*.json`` beside the JPEGs (``imageData`` null; one rectangle
    drawn from its bottom-right corner; one image saved with no shapes), and ``images/test/`` with JPEGs and
    no JSON at all."""
    files = _names("photo_", 8)
    pictures = _random_pictures(16, files, ["dog", "cat", "bird"], backgrounds=[files[6]])
    first = pictures[0].shapes[0]
    first.points.reverse()
    for picture in pictures:
        _write_picture(root / "images" / "train", picture)
        write_labelme_json(root / "images" / "train" / Path(picture.name).with_suffix(".json").name, picture,
                           version="5.2.1")
    unlabelled = _random_pictures(17, _names("photo_", 4, start=101), ["cat"], backgrounds=_names("photo_", 4, 101))
    for picture in unlabelled:
        _write_picture(root / "images" / "test", picture)
    return _export(root, "labelme", _sorted_labels(pictures), pictures, {"train"}, unlabelled=len(unlabelled),
                   notes="LabelMe 5 rectangles (one drawn backwards), a JSON with no shapes, "
                         "unlabelled images/test/")


def roboflow_coco_test_only(root: Path) -> Export:
    """Roboflow, COCO: only ``test/_annotations.coco.json`` beside its images; category 0 is the dataset's
    super-category "pets" (no annotation uses it, so it is no class), the classes are ids 1..3."""
    names = ["bird", "cat", "dog"]
    stems = [f"test_{i:02d}" for i in range(1, 7)]
    pictures = _random_pictures(18, [_roboflow_name(s) for s in stems], names, backgrounds=[_roboflow_name(stems[2])])
    categories, ids = _roboflow_categories("pets", names)
    _coco_folders(root, {"test": pictures}, categories, ids)
    _roboflow_readmes(root)
    return _export(root, "coco", names, pictures, {"test"},
                   notes="test split only; category 0 is Roboflow's super-category 'pets', not a class; "
                         "an image without annotations")


# ---------------------------------------------------------------------------------------------------------------
# Quirk builders


def quirk_zero_size_voc(root: Path) -> Export:
    """LabelImg VOC (flat) where two files give ``<size>`` as 0 x 0: the size is the image file's."""
    names = _names("IMG_", 6)
    pictures = _random_pictures(21, names, ["cat", "dog"])
    _voc_flat(root, pictures, zero_size=names[1:3])
    return _export(root, "voc", _sorted_labels(pictures), pictures,
                   notes=f"<size> 0x0 in {names[1]} and {names[2]}'s XML")


def quirk_wrong_size_labelme(root: Path) -> Export:
    """LabelMe 5.0.1 rectangles in one folder where two files' ``imageWidth``/``imageHeight`` disagree with the
    image (one swapped, one doubled); the points are those of the file on disk."""
    files = _names("shot_", 6)
    pictures = _random_pictures(22, files, ["cat", "dog", "bird"])
    wrong = {files[1]: (pictures[1].height, pictures[1].width),
             files[4]: (2 * pictures[4].width, 2 * pictures[4].height)}
    for picture in pictures:
        _write_picture(root, picture)
        write_labelme_json((root / picture.name).with_suffix(".json"), picture, version="5.0.1",
                           size=wrong.get(picture.name))
    return _export(root, "labelme", _sorted_labels(pictures), pictures,
                   notes=f"imageWidth/imageHeight wrong in {files[1]} (swapped) and {files[4]} (doubled)")


def _yolo_plain(root: Path, pictures: Sequence[Picture], names: Sequence[str], nc: int | None = None) -> None:
    """An unsplit YOLO folder: ``images/`` + ``labels/`` + ``data.yaml`` with ``nc`` (default: right) and
    ``names``."""
    _yolo_folder(root, pictures, names)
    _write_text(root / "data.yaml", f"nc: {len(names) if nc is None else nc}\nnames: {_yaml_list(names)}\n")


def quirk_png_named_jpg(root: Path) -> Export:
    """Unsplit YOLO where two ``.jpg`` files are PNG (one RGBA, one palette) and one is a greyscale JPEG."""
    names = ["cat", "dog", "bird"]
    files = _names("scan_", 7)
    pictures = _random_pictures(23, files, names)
    _yolo_plain(root, pictures, names)
    for picture, fmt, mode in zip(pictures[:3], ("PNG", "PNG", "JPEG"), ("RGBA", "P", "L")):
        write_image(root / "images" / picture.name, picture.width, picture.height, picture.shapes, fmt=fmt, mode=mode)
    return _export(root, "yolo", names, pictures,
                   notes=f"{files[0]} is an RGBA PNG, {files[1]} a palette PNG, {files[2]} a greyscale JPEG")


def quirk_exif_orientation(root: Path) -> Export:
    """Unsplit YOLO where three JPEGs carry EXIF orientation 6, 3 and the invalid 0; boxes are on the pixels as
    stored, so a reader must not rotate the pixels without rotating the boxes."""
    names = ["cat", "dog"]
    files = _names("phone_", 6)
    pictures = _random_pictures(24, files, names)
    _yolo_plain(root, pictures, names)
    for picture, orientation in zip(pictures, (6, 3, 0)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        write_image(root / "images" / picture.name, picture.width, picture.height, picture.shapes, exif=exif)
    return _export(root, "yolo", names, pictures,
                   notes=f"EXIF orientation 6 in {files[0]}, 3 in {files[1]}, 0 (invalid) in {files[2]}; "
                         "boxes on the stored pixels")


def quirk_unused_class_and_nc(root: Path) -> Export:
    """Unsplit YOLO whose ``labels/classes.txt`` and ``data.yaml`` name a class ("fish", index 1) no label uses,
    and whose ``nc`` (3) disagrees with ``names`` (4, the right list)."""
    names = ["cat", "fish", "dog", "bird"]
    pictures = _random_pictures(25, _names("tank_", 8), ["cat", "dog", "bird"])
    _yolo_plain(root, pictures, names, nc=3)
    _write_text(root / "labels" / "classes.txt", "".join(f"{name}\n" for name in names))
    return _export(root, "yolo", names, pictures,
                   notes="class 'fish' (index 1) used by no label; nc: 3 but 4 names (names is right)")


def quirk_coco_category_zero(root: Path) -> Export:
    """COCO ``{train,valid}/_annotations.coco.json`` where category id 0 ("cat") is a real class, and "dog" is
    both id 1 (used) and id 3 (unused); the classes are cat, dog, bird."""
    names = ["cat", "dog", "bird"]
    categories = [{"id": i, "name": name, "supercategory": "animal"} for i, name in enumerate(names)]
    categories.append({"id": 3, "name": "dog", "supercategory": "animal"})
    ids = {name: i for i, name in enumerate(names)}
    pictures = _random_pictures(26, _names("yard_", 8), names)
    _coco_folders(root, {"train": pictures[:6], "valid": pictures[6:]}, categories, ids)
    return _export(root, "coco", names, pictures, {"train", "val"},
                   notes="category id 0 is the class 'cat'; 'dog' is ids 1 (used) and 3 (unused)")


def _overshooting(seed: int, names: Sequence[str], by: Sequence[tuple[str, float]]) -> list[Picture]:
    """Random pictures where picture k's first box is pushed past edge ``by[k][0]`` ("left", "top", "right",
    "bottom") by ``by[k][1]`` pixels."""
    pictures = _random_pictures(seed, _names("cam_", 8), names)
    for picture, (edge, amount) in zip(pictures, by):
        shape = picture.objects[0]
        x0, y0, x1, y1 = shape.box
        x0, y0, x1, y1 = {"left": (-amount, y0, x1, y1), "top": (x0, -amount, x1, y1),
                          "right": (x0, y0, picture.width + amount, y1),
                          "bottom": (x0, y0, x1, picture.height + amount)}[edge]
        shape.points = [(x0, y0), (x1, y1)]
    return pictures


def quirk_subpixel_overshoot(root: Path) -> Export:
    """Roboflow COCO (``train/``, ``valid/``) where three boxes overshoot an edge by 0.3-0.6 pixel, as Roboflow's
    rounding leaves them: a reader clips them and keeps every box."""
    names = ["cat", "dog", "bird"]
    pictures = _overshooting(27, names, [("right", 0.4), ("bottom", 0.6), ("left", 0.3)])
    categories, ids = _roboflow_categories("cams", names)
    _coco_folders(root, {"train": pictures[:6], "valid": pictures[6:]}, categories, ids)
    return _export(root, "coco", names, pictures, {"train", "val"},
                   notes=f"boxes past the edge by 0.4 px (right, {pictures[0].name}), 0.6 px (bottom, "
                         f"{pictures[1].name}), 0.3 px (left, {pictures[2].name})")


def quirk_box_outside(root: Path) -> Export:
    """Roboflow COCO (``train/`` only) where one box runs 20 pixels past the right edge: a reader must refuse
    the export with an error naming ``train/_annotations.coco.json`` and the image (named in ``notes``)."""
    names = ["cat", "dog"]
    pictures = _overshooting(28, names, [("right", 20.0)])
    categories, ids = _roboflow_categories("cams", names)
    _coco_folders(root, {"train": pictures}, categories, ids)
    return _export(root, "coco", names, pictures, {"train"},
                   notes=f"a box 20 px past the right edge of {pictures[0].name} in train/_annotations.coco.json: "
                         "must be refused")


def quirk_duplicate_images(root: Path) -> Export:
    """Unsplit YOLO where ``IMG_2041.jpg`` and ``IMG_2041-copy.jpg`` are byte-identical with different boxes,
    among 10 other images: both are read."""
    names = ["cat", "dog", "bird"]
    pictures = _random_pictures(29, _names("street_", 10), names)
    pictures += _random_pictures(30, ["IMG_2041.jpg", "IMG_2041-copy.jpg"], names, sizes=[(96, 72)])
    _yolo_plain(root, pictures, names)
    shutil.copyfile(root / "images" / "IMG_2041.jpg", root / "images" / "IMG_2041-copy.jpg")
    return _export(root, "yolo", names, pictures,
                   notes="IMG_2041.jpg and IMG_2041-copy.jpg are the same bytes with different boxes")


Builder = Callable[[Path], Export]

ALL_EXPORTS: list[Builder] = [
    labelimg_voc_flat,
    labelimg_voc_zips,
    labelimg_yolo,
    roboflow_yolov8,
    roboflow_yolov8_yaml,
    labelme3_video,
    labelme5_rectangles,
    roboflow_coco_test_only,
]
"""The exports as the tools write them."""

ALL_QUIRKS: list[Builder] = [
    quirk_zero_size_voc,
    quirk_wrong_size_labelme,
    quirk_png_named_jpg,
    quirk_exif_orientation,
    quirk_unused_class_and_nc,
    quirk_coco_category_zero,
    quirk_subpixel_overshoot,
    quirk_duplicate_images,
]
"""Valid exports with one quirk each, all to be read (quirk_box_outside, to be refused, is not among them)."""
