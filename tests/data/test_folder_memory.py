"""A folder of small images is decoded once and kept in memory; what a sample gets is unchanged."""

import numpy as np
import pytest
import torch
from PIL import Image

from botnet.data import keep_in_memory, load_classification_data
from botnet.data.folder import scan_split


def _folder(root, per_class=5):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (17 + i, 23, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                (image.convert("L") if i == 0 else image).save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_samples_from_memory_equal_samples_from_disk(tmp_path):
    root = _folder(tmp_path / "data")
    kept = load_classification_data(str(root), 16)
    disk = load_classification_data(str(root), 16)
    assert kept.train.decoded is not None and kept.val.decoded is not None  # small: kept by default
    disk.train.decoded = disk.val.decoded = None
    for kept_split, disk_split in ((kept.train, disk.train), (kept.val, disk.val)):
        for index in range(len(kept_split)):
            torch.manual_seed(index)
            a, label_a = kept_split[index]
            torch.manual_seed(index)
            b, label_b = disk_split[index]
            pairs = zip(a, b) if isinstance(a, tuple) else [(a, b)]  # training: (image, its draws)
            assert label_a == label_b and all(torch.equal(x, y) for x, y in pairs)


def test_splits_too_large_for_the_limit_stay_on_disk(tmp_path):
    root = _folder(tmp_path / "data")
    train, _ = scan_split(str(root / "train"))
    val, _ = scan_split(str(root / "val"), classes=train.classes)
    pixels = sum(int(np.prod(Image.open(path).size)) * 3 for path, _ in train.samples)
    assert not keep_in_memory(train, val, limit_bytes=pixels // 2)
    assert train.decoded is None and val.decoded is None
    assert not keep_in_memory(train, val, limit_bytes=pixels + 10)  # train fits, the two together do not
    assert train.decoded is None and val.decoded is None
    assert keep_in_memory(train, val, limit_bytes=3 * pixels)
    assert train.decoded_bytes == pixels and [p.shape[0] for p in train.decoded] == [3] * len(train)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_kept_pixels_are_the_decoded_image(tmp_path, mode, channels):
    root = _folder(tmp_path / "data")
    split, _ = scan_split(str(root / "train"), mode=mode)
    assert split.keep_in_memory(10**8)
    for (path, _), pixels in zip(split.samples, split.decoded):
        expected = np.asarray(Image.open(path).convert(mode))
        assert pixels.shape[0] == channels and np.array_equal(pixels.permute(1, 2, 0).squeeze(-1).numpy(), expected)
