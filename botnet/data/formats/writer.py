"""Writing a recognised dataset as a COCO folder: OUT/{train,val,test}/annotations.json + .../images/."""

from __future__ import annotations

import json
import os
import shutil

from ...errors import ConfigError, DatasetError
from ...files import atomic_write
from .common import DetectionSplit, DetectionSplits

__all__ = ["write_coco"]


def _image_target(split: DetectionSplit, file_name: object) -> str:
    if not isinstance(file_name, str) or not file_name:
        raise DatasetError(f'an image in {split.source} has no "file_name": it cannot be written')
    name = os.path.normpath(file_name)
    if os.path.isabs(name) or name == ".." or name.startswith(".." + os.sep):
        raise DatasetError(f"image {file_name!r} in {split.source} lies outside {split.image_dir}: it cannot be "
                           f"placed in the images/ folder of the COCO copy")
    return name


def _place(source: str, target: str) -> str:
    """Link ``target`` to ``source`` (absolute), or copy it where links cannot be made; "link" or "copy"."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.symlink(os.path.abspath(source), target)
        return "link"
    except (OSError, NotImplementedError):
        shutil.copy2(source, target)
        return "copy"


def write_coco(splits: DetectionSplits, out_dir: str) -> DetectionSplits:
    """Write ``splits`` (any format, from :func:`~botnet.data.formats.find_layout`) as the COCO layout botnet
    trains on: ``OUT/{split}/annotations.json``, whose file_names are relative to ``OUT/{split}/images/``, which
    holds a symbolic link to each image (absolute, so OUT may move but the originals may not), or a copy where
    links cannot be made. The annotations are written as converted (not checked: CocoDetection checks them when
    OUT is read), atomically and after the images, so an interrupted run leaves no annotations.json behind.
    An image file that does not exist is not placed (reading OUT names it, as reading the original would).
    Returns the written folder as COCO splits. ConfigError when OUT already holds a split."""
    for split in splits:
        folder = os.path.join(out_dir, split.name)
        if os.path.exists(folder) and os.listdir(folder):
            raise ConfigError(f"{folder} already exists and is not empty: choose another output folder")
    written = {}
    for split in splits:
        data = split.coco()
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f'{split.source} has no "images" list: it is not a COCO annotation file')
        data = dict(data)
        if "info" not in data:
            data["info"] = {"description": f"converted by botnet from {split.source}",
                            "images_from": os.path.abspath(split.image_dir)}
        images = os.path.join(out_dir, split.name, "images")
        os.makedirs(images, exist_ok=True)
        placed: set[str] = set()
        for entry in data["images"]:
            name = _image_target(split, entry.get("file_name") if isinstance(entry, dict) else None)
            source = os.path.join(split.image_dir, name)
            if name in placed or not os.path.isfile(source):
                continue
            _place(source, os.path.join(images, name))
            placed.add(name)
        ann_file = os.path.join(out_dir, split.name, "annotations.json")
        text = json.dumps(data).encode()  # as read: NaN in a COCO source stays for CocoDetection to name
        atomic_write(ann_file, lambda file, text=text: file.write(text))
        written[split.name] = DetectionSplit(split.name, images, ann_file, ann_file=ann_file)
    return DetectionSplits("coco", out_dir, written["train"], written["val"], written.get("test"))
