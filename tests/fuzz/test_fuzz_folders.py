"""Generated image folders, good and bad: the check either refuses the folder with our own error, or every
sample it keeps can be read and transformed as training will read it."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
import torch
from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from botnet.data import load_classification_data
from botnet.errors import BotnetError

FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP", "tif": "TIFF"}
# modes each format can store
MODES = {
    "PNG": ["RGB", "RGBA", "L", "LA", "P", "P+t", "I;16", "1"],
    "JPEG": ["RGB", "L", "CMYK"],
    "GIF": ["P", "P+t", "L"],
    "BMP": ["RGB", "L", "P", "1"],
    "WEBP": ["RGB", "RGBA"],
    "TIFF": ["RGB", "RGBA", "L", "CMYK", "I;16", "F", "1"],
}
BOMB = None  # a 20000 x 20000 PNG of a few hundred KB, made once


def _bomb() -> bytes:
    global BOMB
    if BOMB is None:
        buffer = io.BytesIO()
        Image.new("1", (20000, 20000)).save(buffer, "PNG")
        BOMB = buffer.getvalue()
    return BOMB


def _image_bytes(fmt: str, mode: str, width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((height, width), dtype=np.float32))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode.rstrip("+t"))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"transparency": 0} if mode == "P+t" else {}))
    return buffer.getvalue()


@st.composite
def file_entries(draw):
    """(name, bytes or a marker) for one entry of a class folder."""
    kind = draw(
        st.sampled_from(
            ["good"] * 10 + ["truncated", "corrupted", "empty", "random", "text", "renamed",
             "bomb", "hidden", "folder", "dangling_link", "bad_name"]
        )
    )  # fmt: skip
    ext = draw(st.sampled_from(sorted(FORMATS)))
    fmt = FORMATS[ext]
    mode = draw(st.sampled_from(MODES[fmt]))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    stem = draw(st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12))
    name = f"{stem}.{ext}"
    if kind in ("good", "hidden", "bad_name", "renamed", "truncated", "corrupted"):
        data = _image_bytes(fmt, mode, width, height, seed)
        if kind == "truncated":
            data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
        elif kind == "corrupted":
            data = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            data = bytes(data)
        elif kind == "renamed":
            name = f"{stem}.{draw(st.sampled_from(sorted(set(FORMATS) - {ext})))}"
        elif kind == "hidden":
            name = "." + name
        elif kind == "bad_name":
            name = os.fsencode(stem) + b"\xff\xfe." + ext.encode()
        return name, data
    if kind == "empty":
        return name, b""
    if kind == "random":
        return name, draw(st.binary(max_size=200))
    if kind == "text":
        return f"{stem}.txt", draw(st.text(max_size=50)).encode()
    if kind == "bomb":
        return f"{stem}.png", _bomb()
    return name, kind  # "folder" or "dangling_link": made by _write


def _write(folder: str, entries) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, data in entries:
        path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
        if os.path.lexists(path):
            continue
        if data == "folder":
            os.makedirs(path, exist_ok=True)
            Image.new("RGB", (3, 3)).save(os.path.join(path, b"nested.png"))
        elif data == "dangling_link":
            os.symlink(os.path.join(os.fsencode(folder), b"no-such-target.png"), path)
        else:
            with open(path, "wb") as f:
                f.write(data)


CLASS_NAMES = st.sampled_from(["cat", "dog", "bird", "two words", "ünïcode", ".hidden_class"])


@st.composite
def folder_layouts(draw):
    """{split: {class: entries}}: usually the same classes in train and val, sometimes not, sometimes no val."""
    classes = draw(st.lists(CLASS_NAMES, min_size=1, max_size=3, unique=True))
    entries = st.lists(file_entries(), min_size=draw(st.sampled_from([0, 1, 1, 2])), max_size=5)
    layout = {"train": {name: draw(entries) for name in classes}}
    val = draw(st.sampled_from(["same", "same", "same", "same", "other", "none"]))
    if val == "same":
        layout["val"] = {name: draw(entries) for name in classes}
    elif val == "other":
        layout["val"] = {name: draw(entries) for name in draw(st.lists(CLASS_NAMES, max_size=3, unique=True))}
    return layout


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt metadata it reads past
@fuzz_settings(150)
@given(layout=folder_layouts(), skip_bad=st.booleans(), size=st.sampled_from([8, 17]))
def test_folders_are_refused_cleanly_or_fully_readable(tmp_path_factory, layout, skip_bad, size):
    root = str(tmp_path_factory.mktemp("folder"))
    try:
        for split, classes in layout.items():
            os.makedirs(os.path.join(root, split), exist_ok=True)
            for class_name, entries in classes.items():
                _write(os.path.join(root, split, class_name), entries)
        try:
            data = load_classification_data(root, size, skip_bad=skip_bad, randaugment=True)
        except BotnetError as error:
            event(f"refused: {type(error).__name__}")
            return
        event("accepted, bad files left out" if data.bad_images else "accepted")
        # Whatever the check kept, training and evaluation read without a failure.
        for dataset in (data.train, data.val):
            assert len(dataset) > 0
            for index in range(len(dataset)):
                image, label = dataset[index]
                image = image[0] if isinstance(image, tuple) else image  # training: (uint8 image, its draws)
                image = image.float() if image.dtype == torch.uint8 else image
                assert tuple(image.shape) == (3, size, size) and 0 <= label < len(data.classes)
                assert bool(image.isfinite().all())
    finally:
        shutil.rmtree(root, ignore_errors=True)
