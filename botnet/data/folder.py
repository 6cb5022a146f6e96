"""Image folders for classification, read in the layout found and checked before training starts.

Layouts (the split folders' names are case-insensitive):

- ``DIR/train/CLASS/*`` and ``DIR/val/CLASS/*`` (``valid`` or ``validation`` also name the val folder, and
  ``training``/``testing`` the others); a ``DIR/test/CLASS/*`` beside them is left for ``botnet eval --split test``.
- ``DIR/CLASS/*``, no split folders (a download, a phone's export): a val share is held out of each class
  (:func:`hold_out_classes`, with ``botnet.data.holdout``'s rules: the same on every run, byte-identical
  images on one side, numbered frames in blocks).
- ``DIR/train/CLASS/*`` without a val folder (with or without ``DIR/test``): the val share is held out of train.

A folder with both split and class folders, or with no class folders, is refused with the fix.

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
from .holdout import SPLIT_NAMES, Item, file_digest, hold_out
from .images import check_images, read_image, read_pixels

__all__ = [
    "BadImages",
    "DatasetError",
    "FolderLayout",
    "ImageFolder",
    "ImageFolderSplit",
    "eval_split",
    "find_folder_layout",
    "heldout_split",
    "hold_out_classes",
    "load_image_folder",
    "read_image",
    "scan_split",
]



@dataclass(frozen=True)
class FolderLayout:
    """Where a classification folder's splits are: ``train`` holds the training class folders (``root`` itself
    when the folder is flat), ``val`` and ``test`` the others' (None: absent; a missing val is held out of train)."""

    root: str
    train: str
    val: str | None = None
    test: str | None = None

    @property
    def flat(self) -> bool:
        return self.train == self.root

    def describe(self) -> str:
        if self.flat:
            return "DIR/CLASS/* (no split folders): a val share is held out of each class"
        found = " + ".join(os.path.basename(p) + "/" for p in (self.train, self.val, self.test) if p)
        held = "" if self.val else f"; no val folder: a val share is held out of {os.path.basename(self.train)}/"
        return f"DIR/SPLIT/CLASS/* with {found}{held}"


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


def _folders(root: str) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _loose_files(folder: str) -> list[str]:
    """The files directly in ``folder`` (not in a class folder), which are not read."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def _listed(names: list[str], limit: int = 5) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def find_folder_layout(root: str) -> FolderLayout:
    """The layout of the classification folder ``root`` (see the module docstring). A DatasetError names the
    problem and the fix for a folder with no class folders, one that mixes split and class folders, repeats a
    split, has val or test folders but no train folder, or (flat) has a single class folder."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root} does not exist")
    folders = _folders(root)
    if not folders:
        raise DatasetError(
            f"{root} has no class folders: put each class's images in {root}/CLASS_NAME/ "
            f"(or in {root}/train/CLASS_NAME/ and {root}/val/CLASS_NAME/)"
        )
    splits: dict[str, list[str]] = {}
    for name in folders:
        if name.lower() in SPLIT_NAMES:
            splits.setdefault(SPLIT_NAMES[name.lower()], []).append(name)
    classes = [name for name in folders if name.lower() not in SPLIT_NAMES]
    found = [name for names in splits.values() for name in names]
    if splits and classes:
        raise DatasetError(
            f"{root} mixes split folders ({_listed(found)}) with class folders ({_listed(classes)}): move the class "
            f"folders into the split folders ({root}/train/CLASS_NAME/), or rename split folders that are classes"
        )
    for split, names in splits.items():
        if len(names) > 1:
            raise DatasetError(f"{root} has {len(names)} {split} folders ({', '.join(names)}): keep one of them")
    if splits and "train" not in splits:
        raise DatasetError(
            f"{root} has {', '.join(n + '/' for n in found)} but no train/ folder: put the training images in "
            f"{root}/train/CLASS_NAME/"
        )
    if not splits:
        if len(classes) == 1:
            raise DatasetError(
                f"{root} has one class folder ({classes[0]}); a classifier needs two or more: if {classes[0]}/ holds "
                f"the class folders, give --data {os.path.join(root, classes[0])}"
            )
        return FolderLayout(root, root)

    def path(split: str) -> str | None:
        return os.path.join(root, splits[split][0]) if split in splits else None

    return FolderLayout(root, path("train"), path("val"), path("test"))


def _list_split(split_dir: str) -> tuple[list[str], dict[str, list[str]]]:
    if not os.path.isdir(split_dir):
        raise DatasetError(
            f"missing folder {split_dir}: --data takes DIR/CLASS/*, or DIR/train/CLASS/* with DIR/val/CLASS/* "
            f"(one folder per class)"
        )
    classes = _folders(split_dir)
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


def _same_classes(found: list[str], classes: list[str], where: str, reference: str) -> None:
    if found != list(classes):
        only_ref = sorted(set(classes) - set(found))
        only_here = sorted(set(found) - set(classes))
        raise DatasetError(
            f"{where} must have the same class folders as {reference}: only in {reference}: "
            f"{only_ref or 'none'}; only in {where}: {only_here or 'none'}"
        )


def _check(
    folder: str, files: dict[str, list[str]], *, skip_bad: bool, workers: int | None
) -> tuple[dict[str, list[str]], BadImages]:
    """Each class's readable files, and the unreadable ones (a DatasetError naming them unless ``skip_bad``)."""
    every_file = [p for paths in files.values() for p in paths]
    reasons = check_images(every_file, folder=folder, workers=workers)
    bad = BadImages([(p, r) for p, r in reasons.items() if r is not None])
    if bad and not skip_bad:
        raise DatasetError(
            f"{len(bad)} file(s) in {folder} are not readable images: {bad.summary()}. "
            f"Remove them, or pass --skip-bad-images to leave them out (they are counted in the log and summary)"
        )
    return {name: [p for p in paths if reasons[p] is None] for name, paths in files.items()}, bad


def _require_images(folder: str, files: dict[str, list[str]]) -> None:
    for name, paths in files.items():
        if not paths:
            raise DatasetError(f"class {name!r} has no readable images in {os.path.join(folder, name)}")


def _split(root: str, classes: list[str], files: dict[str, list[str]], mode: str) -> ImageFolderSplit:
    samples = [(path, index) for index, name in enumerate(classes) for path in files[name]]
    return ImageFolderSplit(root, classes, samples, mode)


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
    if classes is not None:
        _same_classes(found, classes, split_dir, reference)
    good, bad = _check(split_dir, files, skip_bad=skip_bad, workers=workers)
    _require_images(split_dir, good)
    return _split(split_dir, found, good, mode), bad


def _copies(paths: list[str]) -> int:
    """How many of ``paths`` are byte-identical copies of another one (only files of equal size are read)."""
    by_size: dict[int, list[str]] = {}
    for path in paths:
        by_size.setdefault(os.path.getsize(path), []).append(path)
    return sum(len(same) - len({file_digest(p) for p in same}) for same in by_size.values() if len(same) > 1)


def hold_out_classes(root: str, files: dict[str, list[str]]) -> tuple[set[str], list[str]]:
    """Hold out a val share of each class's ``files`` with ``botnet.data.holdout.hold_out``, one class at a
    time so that every class is represented in proportion. Returns the held-out names (paths relative to
    ``root``) and a report line for each class kept whole in training: one with a single image, or whose
    images are all copies of one picture or one short run of frames."""
    names: set[str] = set()
    kept = []
    for name, paths in files.items():
        items = [Item(os.path.relpath(path, root), path, frozenset([name])) for path in paths]
        if len(items) < 2:
            kept.append(f"class {name!r} kept whole in training: it has {len(items)} image, too few to hold one out")
            continue
        try:
            names |= hold_out(items)
        except DatasetError:  # hold_out's refusal: no two groups to put on either side
            kept.append(
                f"class {name!r} kept whole in training: its {len(items)} images are copies of one picture or one "
                f"short run of frames, too few to hold some out"
            )
    return names, kept


@dataclass
class ImageFolder:
    """A classification folder read in its layout: the train and val splits, the unreadable files left out,
    ``heldout`` (the names, relative to the folder, of the images botnet held out as val; None when the folder
    has its own val split) and ``report`` (log lines: the layout, splits, counts, what was held or left out)."""

    layout: FolderLayout
    train: ImageFolderSplit
    val: ImageFolderSplit
    bad: BadImages
    heldout: set[str] | None
    report: list[str]


def _held_out_line(held: int, total: int, copies: int) -> str:
    return (
        f"held out {held} of {total} images ({held / total:.0%}, deterministic; numbered frames in blocks; "
        f"{copies} byte-identical copies kept together)"
    )


def _left_out_lines(layout: FolderLayout) -> list[str]:
    """What the layout leaves unread: files outside the class folders, and test/ (kept for ``eval``)."""
    lines = []
    for folder in (layout.train, layout.val):
        loose = _loose_files(folder) if folder else []
        if loose:
            lines.append(f"left out {len(loose)} file(s) directly in {folder}, not in a class folder: {_listed(loose)}")
    if layout.test:
        count = sum(len(paths) for paths in _list_split(layout.test)[1].values())
        lines.append(f"left out {layout.test} ({count} images): kept for `botnet eval --split test`")
    return lines


def load_image_folder(
    root: str, *, skip_bad: bool = False, mode: str = "RGB", workers: int | None = None,
    heldout: set[str] | None = None,
) -> ImageFolder:
    """Find ``root``'s layout (:func:`find_folder_layout`), then scan and check its training images and its val
    split, or hold a val share out of the training images where there is no val folder (each class on its own;
    see :func:`hold_out_classes`; ``heldout``: the names to hold out instead, a resumed run's heldout.txt). A
    test folder is left for ``botnet eval --split test``."""
    layout = find_folder_layout(root)
    classes, files = _list_split(layout.train)
    good, bad = _check(layout.train, files, skip_bad=skip_bad, workers=workers)
    _require_images(layout.train, good)
    report = [f"data {root}: layout {layout.describe()}", f"classes: {len(classes)} ({_listed(classes, 10)})"]
    notes: list[str] = []
    if layout.val is not None:
        heldout = None  # the folder's own val split
        train = _split(layout.train, classes, good, mode)
        val, bad_val = scan_split(layout.val, classes=classes, skip_bad=skip_bad, mode=mode, workers=workers)
        bad = BadImages(bad.files + bad_val.files)
    else:
        if heldout is None:
            heldout, notes = hold_out_classes(root, good)
        _check_listed(root, heldout, good)
        if not heldout:
            raise DatasetError(
                f"no val images can be held out of {layout.train}: no class has two distinct images; add images, "
                f"or give a val split ({root}/val/CLASS_NAME/)"
            )
        kept = {name: [p for p in paths if os.path.relpath(p, root) not in heldout] for name, paths in good.items()}
        held = {name: [p for p in paths if os.path.relpath(p, root) in heldout] for name, paths in good.items()}
        train, val = _split(layout.train, classes, kept, mode), _split(layout.train, classes, held, mode)
        copies = sum(_copies(paths) for paths in good.values())
        notes.insert(0, _held_out_line(len(heldout), len(train) + len(val), copies))
    report.append(f"images: {len(train)} train, {len(val)} val")
    report += notes + _left_out_lines(layout)
    return ImageFolder(layout, train, val, bad, heldout, report)


def _check_listed(root: str, heldout: set[str], good: dict[str, list[str]]) -> None:
    """Every held-out name is a readable training image (a resumed run's list may name one since removed)."""
    names = {os.path.relpath(path, root) for paths in good.values() for path in paths}
    missing = sorted(heldout - names)
    if missing:
        raise DatasetError(f"the run's held-out list names {len(missing)} image(s) no longer in {root} (e.g. "
                           f"{missing[0]}): put them back, or start a new run")


def heldout_split(
    root: str, names: set[str], *, classes: list[str], listed_in: str, mode: str = "RGB", workers: int | None = None
) -> ImageFolderSplit:
    """The images ``names`` of ``root`` (relative to it, as a run's heldout.txt lists them), each labelled by its
    class folder (``CLASS/...`` or ``train/CLASS/...``). A DatasetError names a listed image outside the class
    folders, of a class not in ``classes``, missing or unreadable."""
    files: dict[str, list[str]] = {name: [] for name in classes}
    missing = []
    for name in sorted(names):
        parts = os.path.normpath(name).split(os.sep)
        if os.path.isabs(name) or ".." in parts or len(parts) < 2:
            raise DatasetError(
                f"{listed_in} lists {name!r}, which is not in a class folder of {root}: the list is damaged; "
                f"delete it to score the held-out share again"
            )
        label = parts[1] if len(parts) > 2 and SPLIT_NAMES.get(parts[0].lower()) == "train" else parts[0]
        if label not in files:
            raise DatasetError(
                f"{listed_in} lists {name}, of class {label!r}, which the model does not know: the model was "
                f"trained on other classes; give the images to score with --data"
            )
        path = os.path.join(root, name)
        if os.path.isfile(path):
            files[label].append(path)
        else:
            missing.append(name)
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) listed in {listed_in} are missing from {root} (e.g. {missing[0]}): restore "
            f"them, or give the images to score with --data"
        )
    good, _ = _check(root, files, skip_bad=False, workers=workers)
    return _split(root, list(classes), good, mode)


def eval_split(
    root: str,
    *,
    split: str = "val",
    classes: list[str],
    whole: bool = False,
    mode: str = "RGB",
    workers: int | None = None,
) -> tuple[ImageFolderSplit, str]:
    """The images ``botnet eval`` scores in ``root``, and where they are: the ``split`` folder ("val" or
    "test"); for val, where there is no val folder, every image of a flat folder with ``whole`` (``DIR/val``
    given itself), else the val share held out of the training images as training held it out. The split's
    classes must be ``classes``."""
    layout = find_folder_layout(root)
    if split == "test" and layout.test is None:
        raise DatasetError(
            f"{root} has no test split: --split test scores {root}/test/CLASS_NAME/*; score the val split with "
            f"--split val"
        )
    folder = layout.test if split == "test" else layout.val or (root if layout.flat and whole else None)
    if folder is not None:
        scanned, _ = scan_split(folder, classes=classes, reference="the model's classes", mode=mode, workers=workers)
        return scanned, folder
    data = load_image_folder(root, skip_bad=True, mode=mode, workers=workers)  # as training held them out
    _same_classes(data.train.classes, classes, layout.train, "the model's classes")
    return data.val, f"{root} (the {len(data.val)} images held out of it)"
