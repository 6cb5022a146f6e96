"""Image folders: DIR/train/CLASS/* and DIR/val/CLASS/*, checked before training starts.

Every file that is not hidden must be an image PIL can decode, in any format,
grey or colour (16-bit, palette and transparent images included), any size.
Unreadable files stop the run with their names, or with ``skip_bad=True`` are
left out and counted. Checking decodes every file (in parallel, remembered
between runs; see ``botnet.data.images``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import DatasetError
from .images import check_images, read_image, read_pixels

__all__ = ["BadImages", "ImageFolderSplit", "DatasetError", "load_image_folder", "read_image", "scan_split"]


@dataclass
class BadImages:
    """Files that are not readable images, with the reason for each."""

    files: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def summary(self, limit: int = 5) -> str:
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.files[:limit])
        more = f"; and {len(self.files) - limit} more" if len(self.files) > limit else ""
        return shown + more


class ImageFolderSplit(Dataset):
    """One split of an image folder: (path, class index) samples, each image read with PIL as a uint8
    (C, H, W) ``tv_tensors.Image``; :meth:`keep_in_memory` decodes them all once instead."""

    def __init__(self, root: str, classes: list[str], samples: list[tuple[str, int]], mode: str = "RGB") -> None:
        self.root, self.classes, self.samples, self.mode = root, classes, samples, mode
        self.transform: Callable | None = None
        self.decoded: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = tv_tensors.Image(self.decoded[index] if self.decoded is not None else read_pixels(path, self.mode))
        return (self.transform(image) if self.transform else image), label

    def keep_in_memory(self, limit_bytes: int, workers: int = 1) -> bool:
        """Decode every image once and keep the pixels, if they take at most ``limit_bytes`` (estimated from
        the first few images first); True if they are kept. Small images are decoded faster than they are
        read from disk each epoch; worker processes share them."""
        if self.decoded is not None:
            return True
        paths = [path for path, _ in self.samples]
        sample = [read_pixels(path, self.mode) for path in paths[:16]]
        if sum(p.numel() for p in sample) / max(len(sample), 1) * len(paths) > limit_bytes:
            return False
        with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL lets go of the GIL while it decodes
            rest = list(pool.map(lambda path: read_pixels(path, self.mode), paths[len(sample):], chunksize=64))
        decoded = sample + rest
        if sum(p.numel() for p in decoded) > limit_bytes:
            return False
        self.decoded = decoded
        return True

    @property
    def decoded_bytes(self) -> int:
        return sum(p.numel() for p in self.decoded) if self.decoded is not None else 0


def _list_split(split_dir: str) -> tuple[list[str], dict[str, list[str]]]:
    if not os.path.isdir(split_dir):
        raise DatasetError(
            f"missing folder {split_dir}: --data expects DIR/train/CLASS/* and DIR/val/CLASS/* (one folder per class)"
        )
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"{split_dir} has no class folders: put each class's images in {split_dir}/CLASS_NAME/")
    files = {}
    for name in classes:
        class_dir = os.path.join(split_dir, name)
        files[name] = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, filenames in os.walk(class_dir, followlinks=True)
            for f in filenames
            if not f.startswith(".")
        )
    return classes, files


def scan_split(
    split_dir: str,
    *,
    classes: list[str] | None = None,
    reference: str = "train",
    skip_bad: bool = False,
    mode: str = "RGB",
    workers: int | None = None,
) -> tuple[ImageFolderSplit, BadImages]:
    """Scan and check one split folder (CLASS/* inside).

    ``classes``, when given, is the class list the split must have (that of
    ``reference``). Raises DatasetError for a missing folder, no class folders,
    other classes, unreadable files (unless ``skip_bad``: then they are left
    out and returned) and a class with no readable image.
    """
    found, files = _list_split(split_dir)
    if classes is not None and found != list(classes):
        only_ref = sorted(set(classes) - set(found))
        only_here = sorted(set(found) - set(classes))
        raise DatasetError(
            f"{split_dir} must have the same class folders as {reference}: only in {reference}: "
            f"{only_ref or 'none'}; only in {split_dir}: {only_here or 'none'}"
        )
    every_file = [p for paths in files.values() for p in paths]
    reasons = check_images(every_file, folder=split_dir, workers=workers)
    bad = BadImages([(p, r) for p, r in reasons.items() if r is not None])
    if bad and not skip_bad:
        raise DatasetError(
            f"{len(bad)} file(s) in {split_dir} are not readable images: {bad.summary()}. "
            f"Remove them, or pass --skip-bad-images to leave them out (they are counted in the log and summary)"
        )
    samples = []
    for index, name in enumerate(found):
        good = [p for p in files[name] if reasons[p] is None]
        if not good:
            raise DatasetError(f"class {name!r} has no readable images in {os.path.join(split_dir, name)}")
        samples += [(p, index) for p in good]
    return ImageFolderSplit(split_dir, found, samples, mode), bad


def load_image_folder(
    root: str, *, skip_bad: bool = False, mode: str = "RGB"
) -> tuple[ImageFolderSplit, ImageFolderSplit, BadImages]:
    """Scan and check DIR/train and DIR/val (same classes); returns (train, val, skipped files)."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root} does not exist")
    train, bad_train = scan_split(os.path.join(root, "train"), skip_bad=skip_bad, mode=mode)
    val, bad_val = scan_split(os.path.join(root, "val"), classes=train.classes, skip_bad=skip_bad, mode=mode)
    return train, val, BadImages(bad_train.files + bad_val.files)
