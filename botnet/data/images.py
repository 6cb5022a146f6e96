"""Reading image files, and checking many of them quickly before a run starts.

A file passes :func:`check_image` only if PIL decodes all of its pixels: a
header check (``Image.verify``) lets truncated JPEGs through, which then stop
a run mid-epoch. :func:`check_images` checks many files in parallel worker
processes and remembers each result by the file's size, modification and
change times (in ``$BOTNET_CACHE_DIR``, default ``~/.cache/botnet``; a
folder's results unused for 30 days are deleted), so a second run on the
same 100,000-image folder starts at once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import PIL
import torch
from PIL import Image
from torchvision.transforms import v2

from ..errors import DatasetError
from ..files import atomic_write, remove_stale_temporaries
from ..interrupts import init_helper_process

__all__ = ["cache_dir", "check_image", "check_images", "read_image", "read_pixels"]

# what judged a file: a new PIL, or another image-size limit, checks everything again
_CACHE_FORMAT = f"2/pillow-{PIL.__version__}/{Image.MAX_IMAGE_PIXELS}"
_PARALLEL_FROM = 256  # fewer files are checked in this process: starting workers costs more
_CHUNK = 128


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` as "RGB" or "L"; 16- and 32-bit greys are scaled to 8 bits (PIL's convert would clip them)."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.point(lambda v: v * 255).convert("L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels become white, not whatever colour they happen to hold
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def _decode(path: str, mode: str | None) -> Image.Image | None:
    """The image converted to ``mode``; with ``mode`` None only decoded (a check), and nothing returned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # very large images are still images
        with Image.open(path) as image:
            if mode is None:  # a check: JPEGs may decode at 1/8 scale, which still reads every byte
                image.draft("RGB", (1, 1))
                image.load()
                return None
            image.load()
            return _to_mode(image, mode)


def read_image(path: str, mode: str) -> Image.Image:
    """Open and decode an image, converted to ``mode`` ("RGB" or "L"); DatasetError names a bad file."""
    try:
        return _decode(path, mode)  # type: ignore[return-value]
    except Exception as error:  # PIL raises many types for bad files
        raise DatasetError(f"cannot read image {path}: {type(error).__name__}: {error}") from error


def read_pixels(path: str, mode: str) -> torch.Tensor:
    """:func:`read_image` as a uint8 (C, H, W) tensor (C = 1 for "L", 3 for "RGB"): what the training and
    evaluation pipelines take."""
    return v2.functional.to_image(read_image(path, mode)).as_subclass(torch.Tensor)


def _transient(error: BaseException) -> bool:
    """A failure of the moment (no permission, too many open files, an I/O error, no memory), not of the file's
    content: reported, but not remembered."""
    return isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno is not None)


def _check(path: str) -> tuple[str | None, bool]:
    """(None, True) for a good image, else (the reason, whether the reason may be remembered)."""
    try:
        _decode(path, None)
        return None, True
    except Exception as error:  # noqa: BLE001 - any failure makes the file unusable
        return f"{type(error).__name__}: {error}".strip(), not _transient(error)


def check_image(path: str) -> str | None:
    """None if PIL decodes every pixel of the file, else the reason it cannot be used."""
    return _check(path)[0]


def _check_chunk(paths: Sequence[str]) -> list[tuple[str | None, bool]]:
    return [_check(p) for p in paths]


def cache_dir() -> str | None:
    """Where check results are kept: $BOTNET_CACHE_DIR (empty: no cache), else ~/.cache/botnet."""
    configured = os.environ.get("BOTNET_CACHE_DIR")
    if configured is not None:
        return configured or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "botnet")


def _cache_file(folder: str) -> str | None:
    root = cache_dir()
    if root is None:
        return None
    key = hashlib.sha1(os.path.abspath(folder).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return os.path.join(root, f"image-checks-{key}.json")


def _load_cache(path: str | None) -> dict[str, list]:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            data = json.load(f)
        if data.get("format") == _CACHE_FORMAT and isinstance(data.get("files"), dict):
            return data["files"]
    except (OSError, ValueError, AttributeError):
        pass  # no cache, or a damaged one: check everything again
    return {}


_FORGET_AFTER_SECONDS = 30 * 86400  # a folder's results unused for a month are deleted


def _save_cache(path: str | None, entries: dict[str, list] | None) -> None:
    """Write a folder's results (None: only mark them used), and tidy the cache folder."""
    if path is None:
        return
    try:
        if entries is None:
            os.utime(path)
        else:
            text = json.dumps({"format": _CACHE_FORMAT, "files": entries}, separators=(",", ":"))
            atomic_write(path, lambda f: f.write(text.encode()))
        folder = os.path.dirname(path)
        remove_stale_temporaries(folder, older_than=86400)  # left by killed checks
        for entry in os.scandir(folder):
            if entry.name.startswith("image-checks-") and time.time() - entry.stat().st_mtime > _FORGET_AFTER_SECONDS:
                os.remove(entry.path)
    except OSError:
        pass  # a read-only or full cache folder only costs the next run time


def _pool(workers: int):
    if "fork" in multiprocessing.get_all_start_methods():
        # fork: the children need nothing but PIL and start in milliseconds
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(workers, mp_context=context, initializer=init_helper_process)
    return ThreadPoolExecutor(workers)  # PIL releases the GIL while it decodes


def _check_all(paths: list[str], workers: int) -> list[tuple[str | None, bool]]:
    if len(paths) < _PARALLEL_FROM or workers < 2:
        return _check_chunk(paths)
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    try:
        with _pool(workers) as pool:
            return [result for part in pool.map(_check_chunk, chunks) for result in part]
    except BrokenProcessPool:  # a worker was killed (most likely out of memory): check in this process instead
        return _check_chunk(paths)


def check_images(paths: Sequence[str], *, folder: str, workers: int | None = None) -> dict[str, str | None]:
    """The reason each file cannot be used (None for a good image), checked in parallel.

    Results are cached per ``folder`` by each file's size, modification and change times (and the PIL version
    and image-size limit that judged it); failures of the moment (no permission, an I/O error) are not."""
    cache_path = _cache_file(folder)
    cached = _load_cache(cache_path)
    results: dict[str, str | None] = {}
    keys: dict[str, list] = {}
    todo = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as error:
            results[path] = f"{type(error).__name__}: {error.strerror}"
            continue
        keys[path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = cached.get(path)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == keys[path]:
            results[path] = hit[3]
        else:
            todo.append(path)
    if todo:
        workers = workers or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
        keep = set(cached) & set(keys)
        for path, (reason, cacheable) in zip(todo, _check_all(todo, workers)):
            results[path] = reason
            if cacheable:
                keep.add(path)
            else:
                keep.discard(path)
        _save_cache(cache_path, {p: [*keys[p], results[p]] for p in keys if p in keep})
    elif cached:
        _save_cache(cache_path, None)
    return {p: results[p] for p in paths}
