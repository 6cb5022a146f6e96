"""What a classification folder holds, read quickly from a sample of its files: how many images and
classes, their typical size, and whether they are grey (scans, documents) or colour (photos).
The fitted defaults of ``botnet train --data DIR`` are chosen from it."""

from __future__ import annotations

import os
import statistics
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .folder import _list_split, find_folder_layout
from .holdout import SHARE

__all__ = ["FolderProfile", "DIGITS_PROFILE", "profile_folder"]

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_GREY_TOLERANCE = 8  # largest channel difference (of 255) that still counts as grey: JPEG's colour noise


@dataclass(frozen=True)
class FolderProfile:
    train_images: int
    val_images: int
    classes: int
    short_side: int  # the median over the sampled training images of min(width, height), pixels
    long_side: int  # the median of max(width, height)
    grey: bool  # every sampled image is grey (a grey mode, or colour channels within _GREY_TOLERANCE)
    sampled: int  # images the sizes and colours were read from

    def describe(self) -> str:
        kind = "grey" if self.grey else "colour"
        return (
            f"{self.train_images} training images in {self.classes} classes, {kind}, typically "
            f"{self.short_side}x{self.long_side} px (median short x long side of {self.sampled} sampled)"
        )


DIGITS_PROFILE = FolderProfile(train_images=1437, val_images=360, classes=10, short_side=8, long_side=8, grey=True, sampled=1797)


def _is_grey(image: Image.Image) -> bool:
    if image.mode in _GREY_MODES:
        return True
    image.draft("RGB", (64, 64))  # a JPEG decodes at a fraction of its size: the colour check needs no detail
    rgb = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int16)
    return int(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max()) <= _GREY_TOLERANCE


def profile_folder(root: str, sample: int = 256) -> FolderProfile:
    """Count the training and val images (in any layout of ``botnet.data.folder``; where the val share is held
    out, its expected size), and read the size and colour of up to ``sample`` training images
    spread evenly over the sorted file list (so over the classes) (sizes from the headers; colour from small decodes). Unreadable files
    are passed over here: the full check before training names them."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root} does not exist")
    layout = find_folder_layout(root)
    classes, files = _list_split(layout.train)
    every = [path for name in classes for path in files[name]]
    if layout.val is not None:
        val_images = sum(len(v) for v in _list_split(layout.val)[1].values())
    else:
        val_images = round(len(every) * SHARE)  # about what botnet.data.holdout will hold out
    step = max(1, len(every) // sample)
    shorts, longs, grey, read = [], [], True, 0
    for path in every[::step][:sample]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
                    grey = grey and _is_grey(image)
        except Exception:  # noqa: BLE001 - a bad file is reported by the full check
            continue
        shorts.append(min(width, height))
        longs.append(max(width, height))
        read += 1
    return FolderProfile(
        train_images=len(every) - (0 if layout.val is not None else val_images),
        val_images=val_images,
        classes=len(classes),
        short_side=int(statistics.median(shorts)) if shorts else 0,
        long_side=int(statistics.median(longs)) if longs else 0,
        grey=grey and read > 0,
        sampled=read,
    )
