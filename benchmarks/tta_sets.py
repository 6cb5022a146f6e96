"""The classification folders the time-to-accuracy benchmark trains on.

- ``digit_scans``: scikit-learn's real 8x8 digit scans, enlarged to 28 px, each written several times
  with a small random shift, turn and zoom (as a scanner would place it), 8,000 training and 2,000
  held-out images; held-out images come only from the digits' own held-out split.
- ``photos``: the photo-like shapes folder (``botnet.data.shapes.PhotoSpec``).

Usage: python benchmarks/tta_sets.py digit-scans|photos ROOT
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

from botnet.data.digits import digits_splits
from botnet.data.shapes import PhotoSpec, write_shapes_folder

__all__ = ["write_digit_scans", "write_photos"]


def _scan(pixels: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """An 8x8 digit enlarged to ``size`` px, turned (+-12 degrees), zoomed (0.85-1.1) and shifted (+-2 px)."""
    image = Image.fromarray(pixels, "L").resize((size, size), Image.BICUBIC)
    scale = rng.uniform(0.85, 1.1)
    image = image.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, translate=tuple(rng.uniform(-2, 2, 2)))
    zoomed = image.resize((round(size * scale),) * 2, Image.BILINEAR)
    canvas = Image.new("L", (size, size), 0)
    offset = (size - zoomed.size[0]) // 2
    canvas.paste(zoomed, (offset, offset)) if offset >= 0 else canvas.paste(zoomed.crop((-offset, -offset, -offset + size, -offset + size)))
    noisy = np.asarray(canvas, np.float32) + rng.normal(0, 6, (size, size))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L")


def write_digit_scans(root: str, train_images: int = 8000, val_images: int = 2000, size: int = 28, seed: int = 0) -> None:
    """ROOT/{train,val}/DIGIT/*.png: the digits' train and held-out splits, each image written in several
    random placements until the split has its count."""
    rng = np.random.default_rng(seed)
    for split, dataset, count in zip(("train", "val"), digits_splits(), (train_images, val_images)):
        for index in range(count):
            image, label = dataset[index % len(dataset)]
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            pixels = np.asarray(image).reshape(8, 8).astype(np.uint8)
            _scan(pixels, rng, size).save(os.path.join(folder, f"{index:05d}.png"))


def write_photos(root: str, seed: int = 0) -> None:
    write_shapes_folder(root, PhotoSpec(seed=seed))


if __name__ == "__main__":
    {"digit-scans": write_digit_scans, "photos": write_photos}[sys.argv[1]](sys.argv[2])
