"""A held-out split for data that comes without one, the same on every run.

Both tasks use it: a flat class folder (``DIR/CLASS/*.jpg``) and a labelling
tool's export with no val split. The rules, each against a way a random split
misleads:

- **Deterministic**: which images are held out depends only on their file
  names and bytes (a stable hash orders them), so a resumed or repeated run,
  and ``eval`` after it, see the same split.
- **Byte-identical images stay on one side**: a copy of a training image in the
  held-out set measures memory, not generalisation.
- **Numbered frames are held out in contiguous blocks**: ``frame_000117.jpg``
  next to ``frame_000118.jpg`` is nearly the same picture, so the frames of a
  sequence (same folder, same name apart from the number, consecutive numbers)
  are cut into blocks of about ``share`` of the sequence and whole blocks are
  held out.
- **Every class represented where it can be**: a class found in at least two
  groups gets one of them held out first (and keeps the others for training),
  as long as that keeps the held-out share under ``MAX_SHARE`` (25%); the
  rest is filled in hash order up to ``share`` of the images.

About ``share`` (15%) of the images are held out, at least ``MIN_HELD_OUT``
where there are twice as many, never all of them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DatasetError

__all__ = ["HELDOUT_FILE", "MIN_HELD_OUT", "SHARE", "SPLIT_NAMES", "Item", "file_digest", "hold_out",
           "read_heldout", "write_heldout"]

# the folder names that name a split, lower case, in the exports of every tool and download seen
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
SHARE = 0.15
MAX_SHARE = 0.25  # how far holding out one image of each class may take the share
MIN_HELD_OUT = 2
HELDOUT_FILE = "heldout.txt"
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class Item:
    """One image: ``name`` (how it is listed: relative to the data folder), ``path`` (to read its bytes) and the
    classes it shows."""

    name: str
    path: str
    classes: frozenset = frozenset()


def file_digest(path: str) -> str:
    """The SHA-1 of a file's bytes (byte-identical files have the same one)."""
    hasher = hashlib.sha1()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                hasher.update(chunk)
    except OSError:
        return "unreadable:" + path  # the readers name it; here it is just one more image
    return hasher.hexdigest()


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _order(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()  # names need not be UTF-8


def _sequences(items: Sequence[Item]) -> list[list[int]]:
    """Runs of consecutive frame numbers, as item indices in frame order (same folder, same name around the
    number); a lone numbered file is a run of one."""
    keyed: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    singles = []
    for index, item in enumerate(items):
        folder, base = os.path.split(item.name)
        stem, ext = os.path.splitext(base)
        match = _NUMBERED.match(stem)
        if match is None:
            singles.append([index])
        else:
            keyed.setdefault((folder, match.group(1), ext.lower()), []).append((int(match.group(2)), index))
    runs = singles
    for frames in keyed.values():
        frames.sort()
        run = [frames[0][1]]
        for (previous, _), (number, index) in zip(frames, frames[1:]):
            if number - previous > 1:
                runs.append(run)
                run = []
            run.append(index)
        runs.append(run)
    return runs


def _groups(items: Sequence[Item], share: float) -> list[list[int]]:
    """The units held out whole: blocks of each frame sequence, merged where they share a byte-identical image."""
    blocks = []
    for run in _sequences(items):
        size = max(1, math.ceil(len(run) * share)) if len(run) > 2 else len(run)
        blocks += [run[start:start + size] for start in range(0, len(run), size)]
    parent = list(range(len(blocks)))
    sizes = [_size(item.path) for item in items]
    size_count = Counter(sizes)

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first_block: dict[str, int] = {}
    for number, block in enumerate(blocks):
        for index in block:
            if sizes[index] is not None and size_count[sizes[index]] == 1:
                continue  # no other file has its size: no copy to read it for
            other = first_block.setdefault(file_digest(items[index].path), number)
            parent[root(number)] = root(other)
    merged: dict[int, list[int]] = {}
    for number, block in enumerate(blocks):
        merged.setdefault(root(number), []).extend(block)
    return [sorted(group) for group in merged.values()]


def hold_out(items: Sequence[Item], share: float = SHARE) -> set[str]:
    """The names of the items to hold out (see the module docstring for the rules); DatasetError when there are
    too few images to keep some for each side."""
    if len(items) < 2:
        raise DatasetError(
            f"{len(items)} image(s) cannot be split into training and held-out images: add images, or give a "
            f"val split"
        )
    items = sorted(items, key=lambda item: item.name)  # the order they are listed in must not matter
    groups = _groups(items, share)
    if len(groups) < 2:
        raise DatasetError(
            f"the {len(items)} images are all copies of one picture or one short sequence: they cannot be split "
            f"into training and held-out images; add images, or give a val split"
        )
    target = max(round(len(items) * share), min(MIN_HELD_OUT, len(items) // 2), 1)
    groups.sort(key=lambda group: _order(items[group[0]].name))
    classes = [frozenset().union(*(items[k].classes for k in group)) for group in groups]
    groups_of: dict = {}
    for number, shown in enumerate(classes):
        for name in shown:
            groups_of.setdefault(name, []).append(number)
    chosen: list[int] = []
    count = 0
    room = max(target, round(len(items) * MAX_SHARE))
    for name in sorted(groups_of, key=str):  # one group per class first, where training keeps another
        covered = any(name in classes[number] for number in chosen)
        if covered or len(groups_of[name]) < 2 or count + len(groups[groups_of[name][0]]) > room:
            continue
        number = groups_of[name][0]
        chosen.append(number)
        count += len(groups[number])
    taken = set(chosen)
    for number in range(len(groups)):
        if count >= target:
            break
        if number not in taken and count + len(groups[number]) <= min(room, len(items) - 1):
            taken.add(number)
            chosen.append(number)
            count += len(groups[number])
    if not chosen:  # every group is larger than the share: the smallest one (there are two at least)
        chosen.append(min(range(len(groups)), key=lambda number: len(groups[number])))
    return {items[k].name for number in chosen for k in groups[number]}


def write_heldout(path: str, names: set[str]) -> None:
    """The held-out image names, one per line, sorted (what ``eval`` of the run scores)."""
    from ..files import atomic_write

    text = "".join(f"{name}\n" for name in sorted(names))
    atomic_write(path, lambda file: file.write(text.encode("utf-8", "surrogateescape")))  # a name's bytes as they are


def read_heldout(path: str) -> set[str] | None:
    """The names written by :func:`write_heldout`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return {line.rstrip("\n") for line in file if line.strip()}
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read the held-out list {path}: {error}") from error
