"""Reading and checking image files: every pixel decoded, odd formats converted sensibly, checks cached."""

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from botnet.data import images
from botnet.errors import DatasetError


def _jpeg_bytes(size=(96, 64), seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_truncated_jpeg_fails_the_check_though_its_header_verifies(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_jpeg_bytes()[:1500])
    with Image.open(path) as image:
        image.verify()  # the header check an earlier version relied on lets it through
    reason = images.check_image(str(path))
    assert reason is not None and "truncated" in reason
    with pytest.raises(DatasetError, match=r"cannot read image .*cut\.jpg.*truncated"):
        images.read_image(str(path), "RGB")
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(_jpeg_bytes())
    assert images.check_image(str(whole)) is None


def test_sixteen_bit_and_transparent_images_convert_sensibly(tmp_path):
    grey16 = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    assert np.asarray(images.read_image(str(tmp_path / "deep.png"), "L")).tolist() == [[0, 128, 255]]

    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: white, not its stored colour
    rgba[0, 1] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert np.asarray(images.read_image(str(tmp_path / "alpha.png"), "RGB")).tolist() == [
        [[255, 255, 255], [10, 20, 30]]
    ]

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)
    assert np.asarray(images.read_image(str(tmp_path / "palette.png"), "RGB")).tolist() == [
        [[255, 255, 255], [200, 0, 0]]
    ]

    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "print.jpg")
    red = np.asarray(images.read_image(str(tmp_path / "print.jpg"), "RGB"))
    assert red.shape == (2, 3, 3) and red[..., 0].min() > 200 and red[..., 1:].max() < 60


def test_decompression_bombs_are_reported_not_decoded(tmp_path):
    # a 20000 x 20000 all-black PNG: 400 M pixels, twice PIL's limit, in a few hundred KB
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    reason = images.check_image(str(path))
    assert reason is not None and "DecompressionBomb" in reason


def _write_pngs(folder, count, bad_every=7):
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        if i % bad_every == 3:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(i))  # a PNG signature and nothing else
        else:
            Image.new("RGB", (4 + i % 5, 3), (i % 256, 0, 0)).save(path)
        paths.append(str(path))
    return paths


def test_parallel_check_agrees_with_one_by_one(tmp_path):
    paths = _write_pngs(tmp_path, 300)
    parallel = images.check_images(paths, folder=str(tmp_path), workers=2)
    assert list(parallel) == paths
    assert parallel == {p: images.check_image(p) for p in paths}
    assert sum(r is not None for r in parallel.values()) == len(range(3, 300, 7))


def test_results_are_cached_by_size_and_modification_time(tmp_path, monkeypatch):
    paths = _write_pngs(tmp_path, 20)
    first = images.check_images(paths, folder=str(tmp_path))
    checked = []
    real_check = images._check
    monkeypatch.setattr(images, "_check", lambda p: checked.append(p) or real_check(p))
    assert images.check_images(paths, folder=str(tmp_path)) == first and checked == []
    # a file repaired since: checked again, and now good
    broken = paths[3]
    Image.new("RGB", (5, 5)).save(broken, format="PNG")
    os.utime(broken, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = images.check_images(paths, folder=str(tmp_path))
    assert checked == [broken] and first[broken] is not None and again[broken] is None
    # no cache at all when BOTNET_CACHE_DIR is empty
    monkeypatch.setenv("BOTNET_CACHE_DIR", "")
    checked.clear()
    images.check_images(paths, folder=str(tmp_path))
    assert len(checked) == len(paths)


def test_failures_of_the_moment_are_not_remembered(tmp_path, monkeypatch):
    """A file that could not be read for a passing reason (permissions since fixed, an I/O error) is checked
    again next time, not reported bad for ever."""
    paths = _write_pngs(tmp_path, 3)  # all good (the first bad one is the fourth)
    real_decode = images._decode

    def unreadable_now(path, mode):
        if path == paths[1]:
            raise PermissionError(13, "Permission denied", path)
        return real_decode(path, mode)

    monkeypatch.setattr(images, "_decode", unreadable_now)
    assert images.check_images(paths, folder=str(tmp_path))[paths[1]].startswith("PermissionError")
    monkeypatch.setattr(images, "_decode", real_decode)
    assert images.check_images(paths, folder=str(tmp_path)) == dict.fromkeys(paths)


def test_results_unused_for_a_month_are_forgotten(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("BOTNET_CACHE_DIR", str(cache))
    old, recent = cache / "image-checks-0123.json", cache / "image-checks-4567.json"
    for path, days in ((old, 31), (recent, 29)):
        path.write_text("{}")
        stamp = time.time() - days * 86400
        os.utime(path, (stamp, stamp))
    folder = tmp_path / "images"
    folder.mkdir()
    images.check_images(_write_pngs(folder, 2), folder=str(folder))
    assert not old.exists() and recent.exists() and len(os.listdir(cache)) == 2
