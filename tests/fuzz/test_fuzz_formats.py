"""Pascal VOC XML, YOLO txt and LabelMe JSON files made bad in every way (garbage, NaN, huge and negative numbers,
wrong types, missing fields, cut-short and non-UTF-8 files, entity declarations): reading them ends in our own
error, or in a dataset whose every item loads with boxes inside the image."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from botnet.data.formats import find_layout
from botnet.errors import BotnetError

SIZES = {"a.png": (37, 23), "b.png": (20, 31)}  # train images
VAL = {"d.png": (37, 23)}
CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("format_images")
    rng = np.random.default_rng(0)
    for name, (w, h) in {**SIZES, **VAL}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return str(folder)


def _images(image_files, folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        os.symlink(os.path.join(image_files, name), os.path.join(folder, name))


numbers = st.one_of(
    st.floats(-60, 60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 1e-320, 2**63, 37, 23]),
    st.integers(-(10**30), 10**30),
)
texts = st.one_of(st.text(max_size=8), st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "", " ", "cat", "dog"]))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def rare(draw, n: int) -> bool:
    """True about once in ``n`` draws (hypothesis favours the ends of a range, so the middle value is the rare one)."""
    return draw(st.integers(1, n)) == (n + 1) // 2


def soundness(draw, all_sound: bool) -> bool:
    """Whether the next file is left sound (its geometry still random): every file of half the datasets, half the
    files of the others, so that both refusals and accepted datasets are common."""
    return all_sound or draw(st.booleans())


def _damage_bytes(draw, data: bytes, sound: bool) -> bytes:
    """The file as written, or cut short, or with bytes that are not UTF-8, or with garbage appended."""
    if sound:
        return data
    how = draw(st.sampled_from(["keep"] * 3 + ["truncate", "binary", "append"]))
    if how == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "binary":
        return b"\xff\xfe\x00" + data
    if how == "append":
        return data + draw(st.binary(max_size=12))
    return data


# -- Pascal VOC ------------------------------------------------------------------------------------------------------


@st.composite
def voc_objects(draw, sound):
    """An object whose fields may each be bad, unless ``sound``."""
    bad = lambda: not sound and rare(draw, 6)  # noqa: E731
    fields = {
        "name": draw(st.sampled_from(["horse", "", "cat "]) | texts) if bad() else draw(st.sampled_from(CLASSES)),
        "difficult": draw(st.sampled_from(["2", "true", "x"])) if bad() else draw(st.sampled_from(["0", "1", None])),
    }
    x1, y1 = draw(st.integers(1, 18)), draw(st.integers(1, 20))
    box = {"xmin": x1, "ymin": y1, "xmax": x1 + draw(st.integers(0, 18)), "ymax": y1 + draw(st.integers(0, 10))}
    for key in list(box):
        if bad():
            box[key] = draw(numbers.map(repr) | texts | st.integers(-5, 45).map(str))
        elif bad():
            del box[key]
    box = {k: str(v) for k, v in box.items()}
    inner = "".join(f"<{k}>{_escape(v)}</{k}>" for k, v in box.items())
    head = "".join(f"<{k}>{_escape(v)}</{k}>" for k, v in fields.items() if v is not None)
    bndbox = "" if bad() else f"<bndbox>{inner}</bndbox>"
    return f"<object>{head}{bndbox}</object>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def voc_files(draw, name, size, sound):
    bad = lambda n: not sound and rare(draw, n)  # noqa: E731
    width, height = size
    if bad(6):
        width, height = draw(st.sampled_from([(0, 0), (height, width), (-1, 5), ("x", 3), (width + 0.5, height)]))
    objects = "".join(draw(st.lists(voc_objects(sound), min_size=1, max_size=3)))
    filename = draw(st.sampled_from(["other.png", "", "../" + name])) if bad(6) else name
    text = (f"<annotation><filename>{filename}</filename>"
            f"<size><width>{width}</width><height>{height}</height></size>{objects}</annotation>")
    if bad(8):
        text = '<!DOCTYPE a [<!ENTITY e "x">]>' + text.replace("<filename>", "<filename>&e;")
    if bad(8):
        text = draw(st.sampled_from(["<root/>", "", "<annotation>", "not xml"]))
    return _damage_bytes(draw, text.encode(), sound)


@st.composite
def voc_datasets(draw):
    files, all_sound = {}, draw(st.booleans())
    for split, sizes in (("train", SIZES), ("val", VAL)):
        for name, size in sizes.items():
            if not rare(draw, 6):
                files[(split, name)] = draw(voc_files(name, size, soundness(draw, all_sound)))
    if not all_sound and rare(draw, 10):
        files[("train", "orphan.png")] = draw(voc_files("orphan.png", (5, 5), True))
    return files


# -- YOLO ------------------------------------------------------------------------------------------------------------


@st.composite
def yolo_lines(draw, sound):
    """A box inside the image or a polygon of 3 or more points, any value of which may be bad unless ``sound``."""
    bad = lambda: not sound and rare(draw, 8)  # noqa: E731
    kind = "random" if bad() else draw(st.sampled_from(["box", "polygon"]))
    unit = st.floats(0, 1)
    cls = draw(st.sampled_from(["2", "-1", "0.0", "1.5", "x", "nan"])) if bad() else draw(st.sampled_from("01"))
    if kind == "box":
        cx, cy = draw(st.floats(0.1, 0.9)), draw(st.floats(0.1, 0.9))
        values = [cx, cy, draw(st.floats(0, 2 * min(cx, 1 - cx))), draw(st.floats(0, 2 * min(cy, 1 - cy)))]
    elif kind == "polygon":
        values = [draw(unit) for _ in range(2 * draw(st.integers(3, 6)))]
    else:
        values = draw(st.lists(unit | numbers | texts, max_size=9))
    values = [draw(numbers | texts) if bad() else v for v in values]
    return " ".join([cls] + [v if isinstance(v, str) else repr(v) for v in values])


@st.composite
def yolo_datasets(draw):
    files, all_sound = {}, draw(st.booleans())
    for split, sizes in (("train", SIZES), ("val", VAL)):
        for name in sizes:
            if not rare(draw, 5):
                sound = soundness(draw, all_sound)
                text = "\n".join(draw(st.lists(yolo_lines(sound), max_size=3)))
                files[(split, name[:-4] + ".txt")] = _damage_bytes(draw, text.encode(), sound)
    if not all_sound and rare(draw, 10):
        files[("train", "orphan.txt")] = b"0 0.5 0.5 0.1 0.1"
    names = draw(st.sampled_from(["list", "dict", "txt"] + ([] if all_sound else ["random", "broken"])))
    if names == "list":
        files["data.yaml"] = b"names: [cat, dog]\n"
    elif names == "dict":
        files["data.yaml"] = b"names: {0: cat, 1: dog}\n"
    elif names == "txt":
        files["classes.txt"] = _damage_bytes(draw, b"cat\ndog\n", all_sound or draw(st.booleans()))
    elif names == "random":
        files["data.yaml"] = json.dumps({"names": draw(json_values)}).encode()
    else:
        files["data.yaml"] = draw(st.sampled_from([b"names: [cat", b"\xff", b"- a\n- b", b"names: &a [*a]", b""]))
    return files


# -- LabelMe ---------------------------------------------------------------------------------------------------------


points = st.lists(st.lists(st.floats(-10, 50) | numbers, min_size=2, max_size=2), max_size=6)


@st.composite
def labelme_shapes(draw, sound):
    """A shape whose fields may each be bad, unless ``sound``."""
    bad = lambda: not sound and rare(draw, 8)  # noqa: E731
    kind = draw(st.sampled_from(["polygon", "rectangle", "circle", "line", "point", None]))
    count = {"polygon": draw(st.integers(3, 6)), "rectangle": 2, "circle": 2, "line": 2, "point": 1, None: 3}[kind]
    good = [[draw(st.floats(0, 20)), draw(st.floats(0, 20))] for _ in range(count)]
    if kind == "circle":
        good[1] = [good[0][0] + draw(st.floats(0, 2)), good[0][1]]
    elif kind == "rectangle":
        good[1] = [good[0][0] + draw(st.floats(0.5, 15)), good[0][1] + draw(st.floats(0.5, 3))]
    shape = {
        "label": draw(st.sampled_from(["horse", ""]) | json_values) if bad() else draw(st.sampled_from(["cat", "dog"])),
        "points": draw(points | json_values) if bad() else good,
        "shape_type": draw(st.sampled_from(["mask", "x", 3])) if bad() else kind,
        "group_id": draw(st.sampled_from([1, 2, "a", True, 1.5])) if bad() else None,
    }
    for key in list(shape):
        if bad():
            del shape[key]
    if bad():
        return draw(json_values)
    return shape


@st.composite
def labelme_files(draw, name, size, sound):
    data = {"shapes": draw(st.lists(labelme_shapes(sound), min_size=1, max_size=3)), "imagePath": name,
            "imageWidth": size[0], "imageHeight": size[1], "imageData": None}
    bad = lambda n: not sound and rare(draw, n)  # noqa: E731
    for key in ("imagePath", "imageWidth", "imageHeight", "shapes"):
        if bad(10):
            del data[key]
        elif bad(10):
            data[key] = draw(json_values | st.sampled_from(["../x.png", "b.png", "a\\b.png", size[1]]))
    if bad(12):
        data = draw(json_values)
    return _damage_bytes(draw, json.dumps(data, allow_nan=True).encode(), sound)


@st.composite
def labelme_datasets(draw):
    files, all_sound = {}, draw(st.booleans())
    for split, sizes in (("train", SIZES), ("val", VAL)):
        for name, size in sizes.items():
            if not rare(draw, 5):
                files[(split, name[:-4] + ".json")] = draw(labelme_files(name, size, soundness(draw, all_sound)))
    return files


# -- the checks ------------------------------------------------------------------------------------------------------


def _write(folder: str, name: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
    with open(os.path.join(folder, name), "wb") as file:
        file.write(data)


def _read_all(root: str, with_masks: bool, skip_bad: bool) -> None:
    """Reading ends in our own error, or every item of both splits loads and is sound."""
    try:
        splits = find_layout(root)
        datasets = [split.dataset(with_masks=with_masks, skip_bad=skip_bad) for split in splits]
    except BotnetError as error:
        event(f"refused: {type(error).__name__}")
        return
    event("accepted")
    for dataset in datasets:
        for index in range(len(dataset)):
            image, target = dataset[index]
            height, width = image.shape[-2:]
            boxes = target["boxes"].as_subclass(torch.Tensor)
            assert boxes.ndim == 2 and bool(boxes.isfinite().all())
            if len(boxes):
                assert bool((boxes[:, 2:] > boxes[:, :2]).all()) and float(boxes.min()) >= 0
                assert float(boxes[:, 0::2].max()) <= width and float(boxes[:, 1::2].max()) <= height
            assert all(1 <= int(v) <= len(dataset.category_ids) for v in target["labels"])
            if with_masks:
                assert tuple(target["masks"].shape) == (len(boxes), height, width)
            assert all(math.isfinite(float(a)) and float(a) >= 0 for a in target["area"])


@fuzz_settings(200)
@given(files=voc_datasets(), beside=st.booleans(), with_masks=st.booleans(), skip_bad=st.booleans())
def test_damaged_voc_files_are_refused_cleanly_or_usable(image_files, tmp_path_factory, files, beside, with_masks,
                                                         skip_bad):
    root = str(tmp_path_factory.mktemp("voc"))
    for split, names in (("train", SIZES), ("val", VAL)):
        _images(image_files, os.path.join(root, split) if beside else os.path.join(root, split, "JPEGImages"), names)
        os.makedirs(os.path.join(root, split, "Annotations") if not beside else os.path.join(root, split),
                    exist_ok=True)
    for (split, name), data in files.items():
        folder = os.path.join(root, split) if beside else os.path.join(root, split, "Annotations")
        _write(folder, name[:-4] + ".xml", data)
    _read_all(root, with_masks, skip_bad)


@fuzz_settings(200)
@given(files=yolo_datasets(), with_masks=st.booleans(), skip_bad=st.booleans())
def test_damaged_yolo_files_are_refused_cleanly_or_usable(image_files, tmp_path_factory, files, with_masks, skip_bad):
    root = str(tmp_path_factory.mktemp("yolo"))
    for split, names in (("train", SIZES), ("val", VAL)):
        _images(image_files, os.path.join(root, "images", split), names)
        os.makedirs(os.path.join(root, "labels", split))
    for key, data in files.items():
        _write(root, os.path.join("labels", *key) if isinstance(key, tuple) else key, data)
    _read_all(root, with_masks, skip_bad)


@fuzz_settings(200)
@given(files=labelme_datasets(), with_masks=st.booleans(), skip_bad=st.booleans())
def test_damaged_labelme_files_are_refused_cleanly_or_usable(image_files, tmp_path_factory, files, with_masks,
                                                             skip_bad):
    root = str(tmp_path_factory.mktemp("labelme"))
    for split, names in (("train", SIZES), ("val", VAL)):
        _images(image_files, os.path.join(root, split), names)
    for (split, name), data in files.items():
        _write(os.path.join(root, split), name, data)
    _read_all(root, with_masks, skip_bad)
