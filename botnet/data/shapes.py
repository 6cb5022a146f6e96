"""The bundled detection data: a deterministic synthetic COCO-format
instance-segmentation dataset that a CPU can learn in minutes.

Each image has a textured background (smooth colour noise, stripes or a
checkerboard, plus unannotated clutter strokes and blobs) and 2 to 7 shapes
of six classes at sizes from 12 to 90 pixels, each with its own colour
gradient, so colour says nothing about the class. Later shapes are drawn over
earlier ones: masks and boxes are the visible parts, and a shape hidden
below ``MIN_VISIBLE`` of its area is left out. Image widths vary, so aspect
ratios vary. Images are PNGs; masks are stored as compressed RLE.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["PhotoSpec", "SHAPE_CLASSES", "ShapesSpec", "render_photo", "render_scene", "write_shapes_dataset", "write_shapes_folder"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")
MIN_VISIBLE = 0.35  # a shape hidden below this share of its own area is not annotated


@dataclass(frozen=True)
class ShapesSpec:
    """How much data and of what size; the defaults are the bundled demo's."""

    train_images: int = 1536
    val_images: int = 160
    height: int = 128
    min_width: int = 112
    max_width: int = 176
    min_objects: int = 2
    max_objects: int = 7
    min_size: float = 12.0  # shape diameter in pixels
    max_size: float = 90.0
    seed: int = 0


def _shape_points(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a polygonal shape, rotated by ``angle``."""
    if kind == "square":
        corners = [(math.pi / 4 + k * math.pi / 2, radius) for k in range(4)]
    elif kind == "triangle":
        corners = [(-math.pi / 2 + k * 2 * math.pi / 3, radius) for k in range(3)]
    elif kind == "star":
        corners = [(-math.pi / 2 + k * math.pi / 5, radius if k % 2 == 0 else radius * 0.45) for k in range(10)]
    elif kind == "cross":
        t = radius * 0.33  # half the arm width
        outline = [(t, radius), (t, t), (radius, t), (radius, -t), (t, -t), (t, -radius),
                   (-t, -radius), (-t, -t), (-radius, -t), (-radius, t), (-t, t), (-t, radius)]  # fmt: skip
        corners = [(math.atan2(y, x), math.hypot(x, y)) for x, y in outline]
    else:
        raise ValueError(f"{kind!r} is not a polygonal shape")
    return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for a, r in corners]


def _shape_mask(kind: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "ring":
        draw.ellipse(box, fill=255)
        inner = radius * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        draw.polygon(_shape_points(kind, cx, cy, radius, angle), fill=255)
    return np.asarray(canvas) > 127


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour noise, with stripes or a checkerboard half the time, plus clutter."""
    coarse = rng.uniform(0, 255, size=(max(2, height // 24), max(2, width // 24), 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    pattern = rng.integers(3)
    if pattern:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(6, 20)
        theta = rng.uniform(0, math.pi)
        if pattern == 1:  # stripes
            wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        else:  # checkerboard
            wave = np.sign(np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period))
        image += wave[..., None] * rng.uniform(15, 45) * rng.choice([-1.0, 1.0], size=3)
    clutter = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(c) for c in _random_colour(rng))
        if rng.random() < 0.6:  # strokes
            points = [tuple(p) for p in rng.uniform(0, [width, height], size=(int(rng.integers(2, 4)), 2))]
            draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
        else:  # small irregular blobs, unlike any shape class
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            angles = np.sort(rng.uniform(0, 2 * math.pi, size=7))
            radii = rng.uniform(2, 7, size=7)
            draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)], fill=colour)
    return np.asarray(clutter.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)


def _fill(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A shape's paint: a linear gradient between two random colours."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(theta) + yy * math.sin(theta)
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    a, b = _random_colour(rng), _random_colour(rng)
    return a + (b - a) * ramp[..., None]


def render_scene(
    rng: np.random.Generator, height: int, width: int, spec: ShapesSpec
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image (H, W, 3) uint8 and its instances as (class index, visible mask) pairs."""
    image = _background(rng, height, width)
    shapes: list[tuple[int, np.ndarray, int]] = []  # class, visible mask, full area
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        kind_index = int(rng.integers(len(SHAPE_CLASSES)))
        # Log-uniform sizes: small objects are as common as large ones.
        diameter = math.exp(rng.uniform(math.log(spec.min_size), math.log(min(spec.max_size, 0.85 * height))))
        radius = diameter / 2
        cx = rng.uniform(radius * 0.5, width - radius * 0.5)
        cy = rng.uniform(radius * 0.5, height - radius * 0.5)
        mask = _shape_mask(SHAPE_CLASSES[kind_index], height, width, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        area = int(mask.sum())
        if area < 16:
            continue
        paint = _fill(rng, height, width)
        image[mask] = paint[mask]
        shapes = [(k, m & ~mask, a) for k, m, a in shapes]  # the new shape hides what lies below it
        shapes.append((kind_index, mask, area))
    noise = rng.normal(0, 6, size=image.shape)
    visible = [(k, m) for k, m, a in shapes if m.sum() >= max(12, MIN_VISIBLE * a)]
    return (image + noise).clip(0, 255).astype(np.uint8), visible


def _annotation(mask: np.ndarray, annotation_id: int, image_id: int, category_id: int) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(
        id=annotation_id,
        image_id=image_id,
        category_id=category_id,
        bbox=[x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        area=int(mask.sum()),
        iscrowd=0,
        segmentation=dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii")),
    )


def _write_image(job: tuple[ShapesSpec, str, int, int, str]) -> tuple[dict, list[tuple[int, np.ndarray]]]:
    spec, split, split_index, index, image_dir = job
    rng = np.random.default_rng([spec.seed, split_index, index])
    width = int(rng.integers(spec.min_width, spec.max_width + 1))
    pixels, shapes = render_scene(rng, spec.height, width, spec)
    file_name = f"{split}_{index:05d}.png"
    Image.fromarray(pixels).save(os.path.join(image_dir, file_name))
    return dict(id=index + 1, file_name=file_name, height=spec.height, width=width), shapes


def write_shapes_dataset(
    root: str, spec: ShapesSpec = ShapesSpec(), workers: int | None = None
) -> dict[str, tuple[str, str]]:
    """Write ROOT/{train,val}/images/*.png and ROOT/{train,val}/annotations.json.

    The same spec always gives the same files (each image has its own seed), whatever
    the number of ``workers`` (processes; default one per CPU). Returns, per split, the
    image folder and the annotation file."""
    categories = [dict(id=i + 1, name=name, supercategory="shape") for i, name in enumerate(SHAPE_CLASSES)]
    workers = workers or os.cpu_count() or 1
    splits = {}
    for split_index, (split, count) in enumerate((("train", spec.train_images), ("val", spec.val_images))):
        image_dir = os.path.join(root, split, "images")
        os.makedirs(image_dir, exist_ok=True)
        jobs = [(spec, split, split_index, index, image_dir) for index in range(count)]
        if workers > 1 and count >= 64:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                rendered = list(pool.map(_write_image, jobs, chunksize=16))
        else:
            rendered = [_write_image(job) for job in jobs]
        images, annotations = [], []
        for image, shapes in rendered:
            images.append(image)
            for kind_index, mask in shapes:
                annotations.append(_annotation(mask, len(annotations) + 1, image["id"], kind_index + 1))
        ann_file = os.path.join(root, split, "annotations.json")
        with open(ann_file, "w") as file:
            json.dump(dict(images=images, annotations=annotations, categories=categories), file)
        splits[split] = (image_dir, ann_file)
    return splits


@dataclass(frozen=True)
class PhotoSpec:
    """A photo-like classification folder: one shape per image on a textured, cluttered background,
    with smaller shapes of other classes around it, drawn large and shrunk (blurred edges, as in a
    downscaled photo). Colour says nothing about the class."""

    train_per_class: int = 700
    val_per_class: int = 150
    size: int = 32
    seed: int = 0


def render_photo(rng: np.random.Generator, kind_index: int, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 image whose main object is a ``SHAPE_CLASSES[kind_index]``: 0.45-0.95 of
    the image across, anywhere it fits, turned at random, over 0-2 distractor shapes a third its size
    or less. Rendered at 4x and shrunk with antialiasing."""
    big = 4 * size
    image = _background(rng, big, big)
    main_radius = rng.uniform(0.225, 0.475) * big
    for _ in range(int(rng.integers(0, 3))):  # distractors: other classes, small, placed anywhere
        other = int(rng.integers(len(SHAPE_CLASSES) - 1))
        other += other >= kind_index
        radius = rng.uniform(0.15, 0.33) * main_radius
        cx, cy = rng.uniform(0, big, size=2)
        mask = _shape_mask(SHAPE_CLASSES[other], big, big, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        image[mask] = _fill(rng, big, big)[mask]
    cx, cy = rng.uniform(main_radius * 0.8, big - main_radius * 0.8, size=2)
    mask = _shape_mask(SHAPE_CLASSES[kind_index], big, big, cx, cy, main_radius, rng.uniform(0, 2 * math.pi))
    image[mask] = _fill(rng, big, big)[mask]
    small = Image.fromarray(image.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BOX)
    noisy = np.asarray(small, dtype=np.float32) + rng.normal(0, 4, size=(size, size, 3))
    return noisy.clip(0, 255).astype(np.uint8)


def _write_photo(job: tuple[PhotoSpec, int, int, int, str]) -> None:
    spec, split_index, kind_index, index, path = job
    rng = np.random.default_rng([spec.seed, 100 + split_index, kind_index, index])
    Image.fromarray(render_photo(rng, kind_index, spec.size)).save(path)


def write_shapes_folder(root: str, spec: PhotoSpec = PhotoSpec(), workers: int | None = None) -> dict[str, int]:
    """Write ROOT/{train,val}/CLASS/*.png (an image folder for ``botnet train --data ROOT``); the same
    spec always gives the same files. Returns the number of images per split."""
    jobs = []
    counts = {}
    for split_index, (split, per_class) in enumerate((("train", spec.train_per_class), ("val", spec.val_per_class))):
        for kind_index, kind in enumerate(SHAPE_CLASSES):
            folder = os.path.join(root, split, kind)
            os.makedirs(folder, exist_ok=True)
            jobs += [(spec, split_index, kind_index, i, os.path.join(folder, f"{i:05d}.png")) for i in range(per_class)]
        counts[split] = per_class * len(SHAPE_CLASSES)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) >= 64:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_write_photo, jobs, chunksize=64))
    else:
        for job in jobs:
            _write_photo(job)
    return counts
