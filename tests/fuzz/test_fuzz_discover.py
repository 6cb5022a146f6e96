"""Real exports rearranged at random (folders renamed and nested, files moved, deleted and copied, junk added):
discovery ends in our own error, or accounts for every image on disk exactly once: read into one split, or
counted as left out."""

from __future__ import annotations

import os
import re
import shutil

from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st

from botnet.data.formats import find_layout
from botnet.errors import BotnetError
from tests.data.tool_exports import ALL_EXPORTS, ALL_QUIRKS

FOLDER_NAMES = ["train", "val", "valid", "test", "Training", "images", "labels", "annotations", "Annotations", "x",
                "export 2", "data"]
JUNK = {
    "notes.xml": b"<annotations><image/></annotations>",
    "stats.json": b'{"images": 3}',
    "labels/readme.txt": b"not a label",
    "shapes.json": b'{"shapes": []',
    "data.yaml": b"names: [a, b\n",
    "image.jpg": b"not an image",
}


def _every_image(root: str) -> set[str]:
    found = set()
    for current, folders, files in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found |= {os.path.join(current, f) for f in files if not f.startswith(".")
                  and f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"))}
    return found


@st.composite
def changes(draw):
    return draw(st.lists(st.tuples(st.sampled_from(["rename", "nest", "delete", "copy", "junk"]),
                                   st.integers(0, 10**6), st.sampled_from(FOLDER_NAMES), st.sampled_from(sorted(JUNK))),
                         max_size=4))


def _apply(root: str, change: tuple) -> None:
    kind, pick, name, junk = change
    paths = sorted(os.path.join(c, f) for c, _, fs in os.walk(root) for f in fs)
    folders = sorted(c for c, _, _ in os.walk(root) if c != root)
    if kind == "junk":
        target = os.path.join(folders[pick % len(folders)] if folders else root, junk)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as file:
            file.write(JUNK[junk])
    elif kind == "rename" and folders:
        folder = folders[pick % len(folders)]
        target = os.path.join(os.path.dirname(folder), name)
        if not os.path.exists(target):
            os.rename(folder, target)
    elif kind == "nest" and paths:
        path = paths[pick % len(paths)]
        os.makedirs(os.path.join(os.path.dirname(path), name), exist_ok=True)
        shutil.move(path, os.path.join(os.path.dirname(path), name, os.path.basename(path)))
    elif kind == "delete" and paths:
        os.remove(paths[pick % len(paths)])
    elif kind == "copy" and paths:
        path = paths[pick % len(paths)]
        shutil.copy(path, re.sub(r"(\.[^./]*)?$", r"_copy\1", path, count=1))


@fuzz_settings(60)
@given(build=st.sampled_from(ALL_EXPORTS + ALL_QUIRKS), done=changes())
def test_rearranged_exports_are_read_whole_or_refused_cleanly(tmp_path_factory, build, done):
    root = tmp_path_factory.mktemp("export")
    export = build(root)
    for change in done:
        _apply(str(root), change)
    data = str(export.data) if os.path.exists(export.data) else str(root)
    try:
        splits = find_layout(data)
        datasets = [split.dataset(with_masks=False, skip_bad=True) for split in splits]
    except BotnetError as error:
        event(f"refused: {str(error)[:40]}")
        return
    event("accepted")
    read = [os.path.normpath(os.path.join(split.image_dir, e["file_name"])) for split in splits
            for e in split.coco()["images"]]
    assert len(read) == len(set(read))  # no image in two splits
    left_out = sum(int(count) for line in splits.report if line.startswith("left out: ")
                   for count, what in re.findall(r"(\d+) (images [^;(]*)", line))
    if os.path.isdir(data):  # a listed image that is not there is CocoDetection's to name (or skip)
        assert len([p for p in read if os.path.isfile(p)]) + left_out == len(_every_image(splits.root))
    assert sum(len(d) for d in datasets) <= len(read)
