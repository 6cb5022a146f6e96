"""Two hard instance-segmentation sets in botnet's COCO folder layout, for detection benchmarks.

Both write ``ROOT/{train,val}/images/*`` and ``ROOT/{train,val}/annotations.json`` (COCO instances, masks as
compressed RLE, as :func:`botnet.data.shapes.write_shapes_dataset` writes them) and ``ROOT/stats.json``.

``photos`` (:func:`write_photo_instances`): real photographs that scikit-image ships offline, which nobody
here made or tuned a model on: ``coins`` (a grey photo of 24 Greek coins), ``hubble_deep_field`` (galaxies)
and ``immunohistochemistry`` (a stained tissue section with cell nuclei). Each source is segmented once by
classical means (watershed, thresholds, a distance-transform watershed for touching nuclei) into one class
per source: "coin", "galaxy", "nucleus". Every image is a mosaic of 4 or 6 tiles, each a crop of a random
source, turned and flipped at random and enlarged 1.5-2.5x, so the images look like a user's
high-resolution photos (about 650-1400 pixels on the long side, aspect ratios varying) with small objects
(about 10-160 pixels across, up to 100 per image: the most COCO's evaluation scores). Objects cut by a
tile border are annotated with their visible part. The held-out images are cut only from a part of each
photograph (the right 30% of its columns) that no training image shows, so a model has to generalise to
unseen regions, not recognise crops it has seen. The masks are what classical segmentation finds, so they
are good but not perfect (a few merged nuclei, star spikes counted as part of a galaxy, galaxies under
40 pixels in area left out), like real labels.

``small-objects`` (:func:`write_small_objects`): botnet's synthetic shapes (six classes over textured,
cluttered backgrounds) drawn small (10-30 pixels by default) on large images (512 pixels high by default):
the objects are a few percent of the image side, where detectors at their default input sizes lose them,
and the background clutter strokes and blobs are of the objects' size.

``mixed-aspect`` (:func:`write_mixed_aspect`): the same shapes as one class, 24-160 pixels across and 10-40 an image, on
1280x400 strips, 1920x1080 frames and 1024x768 photos in one folder, a third of each, as a microscope or
camera rig leaves them: no one aspect ratio describes the folder.

Usage: python benchmarks/detection_sets.py photos ROOT [--train-images 48] [--val-images 16] [--seed 0]
       python benchmarks/detection_sets.py small-objects ROOT [--height 1024] [--min-size 10] [--max-size 30]
       python benchmarks/detection_sets.py mixed-aspect ROOT [--train-images 48] [--val-images 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from botnet.data.shapes import SHAPE_CLASSES, ShapesSpec, _annotation, write_shapes_dataset

__all__ = [
    "PHOTO_CLASSES",
    "PhotoSource",
    "Tile",
    "dataset_stats",
    "photo_sources",
    "segment_coins",
    "segment_galaxies",
    "segment_nuclei",
    "source_regions",
    "write_photo_instances",
    "write_mixed_aspect",
    "write_small_objects",
]

PHOTO_CLASSES = ("coin", "galaxy", "nucleus")
SPLITS = ("train", "val")
TRAIN_SHARE = 0.7  # the left 70% of every source's columns is for training, the rest is held out
GRIDS = ((2, 2), (2, 3), (3, 2))  # tile rows, tile columns
SCALES = (1.5, 2.5)  # how much a crop is enlarged
LONG_SIDE = (700, 1400)  # aimed-at image size in pixels; narrow held-out regions can make images smaller
MIN_VISIBLE_PIXELS = 20  # an object cut by a tile border is annotated if this much of it is left
MAX_OBJECTS = 100  # per image: COCO's evaluation (and torchvision's detectors) keep 100 detections per image
GALAXY_THRESHOLD = 0.16  # grey level (0-1) of the smoothed Hubble image; the sky is about 0.05
MIN_AREA = {"coin": 100, "galaxy": 40, "nucleus": 30}  # source pixels; smaller blobs are specks or stars


# -- segmenting the photographs ---------------------------------------------------------------------------------


def _keep_large(labels: np.ndarray, min_area: int) -> np.ndarray:
    """``labels`` with the objects smaller than ``min_area`` pixels removed, renumbered 1..n."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    new_ids = np.zeros(len(areas), np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_ids[labels]


def segment_coins(grey: np.ndarray) -> np.ndarray:
    """Label image (0 = background) of the coins in ``skimage.data.coins()``."""
    from scipy import ndimage as ndi
    from skimage import filters, segmentation

    # Flood the edge-strength map from sure background (dark) and sure coin (bright) seeds: the two floods
    # meet on the coins' rims, where the edges are strongest.
    seeds = np.zeros(grey.shape, np.int32)
    seeds[grey < 30] = 1
    seeds[grey > 150] = 2
    coins = segmentation.watershed(filters.sobel(grey), seeds) == 2
    labels, _ = ndi.label(ndi.binary_fill_holes(coins))
    return _keep_large(labels, MIN_AREA["coin"])


def segment_galaxies(rgb: np.ndarray) -> np.ndarray:
    """Label image of the bright sources of ``skimage.data.hubble_deep_field()`` large enough to be galaxies."""
    from scipy import ndimage as ndi
    from skimage import color, filters

    smooth = filters.gaussian(color.rgb2gray(rgb), sigma=1.5)
    labels, _ = ndi.label(smooth > GALAXY_THRESHOLD)
    return _keep_large(labels, MIN_AREA["galaxy"])


def segment_nuclei(rgb: np.ndarray) -> np.ndarray:
    """Label image of the cell nuclei (blue, hematoxylin-stained) of ``skimage.data.immunohistochemistry()``."""
    from scipy import ndimage as ndi
    from skimage import color, feature, filters, segmentation

    hed = color.rgb2hed(rgb)
    # The brown DAB stain of the cytoplasm leaks into rgb2hed's hematoxylin channel; taking part of it
    # away leaves the nuclei as the bright spots.
    stain = filters.gaussian(hed[..., 0] - 0.8 * hed[..., 2], sigma=1.0)
    # Otsu alone merges the pale nuclei of lightly stained tissue into large blobs; a local threshold
    # (never below Otsu's) separates them.
    threshold = np.maximum(filters.threshold_otsu(stain), filters.threshold_local(stain, 41, offset=-0.003))
    glass = filters.gaussian(color.rgb2lab(rgb)[..., 0], sigma=1.0) >= 80  # unstained, nearly white
    nuclei = ndi.binary_fill_holes(ndi.binary_opening((stain > threshold) & ~glass))
    # Touching nuclei: one seed per maximum of the distance to the background, then a watershed between seeds.
    distance = ndi.distance_transform_edt(nuclei)
    blobs, _ = ndi.label(nuclei)
    peaks = feature.peak_local_max(
        filters.gaussian(distance, sigma=1.0), min_distance=5, labels=blobs, exclude_border=False
    )
    seeds = np.zeros(nuclei.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return _keep_large(segmentation.watershed(-distance, seeds, mask=nuclei), MIN_AREA["nucleus"])


@dataclass(frozen=True)
class PhotoSource:
    """One photograph and its objects, all of one class."""

    name: str  # the skimage.data function it comes from
    category: str  # one of PHOTO_CLASSES
    pixels: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int32: 0 is background, 1..n the objects

    def region(self, split: str) -> tuple[int, int, int, int]:
        """The part (x0, y0, x1, y1) of the photograph that ``split``'s tiles are cut from."""
        height, width = self.labels.shape
        split_x = round(TRAIN_SHARE * width)
        return (0, 0, split_x, height) if split == "train" else (split_x, 0, width, height)


@functools.lru_cache(maxsize=1)
def photo_sources() -> tuple[PhotoSource, ...]:
    """The three photographs, segmented (about a second, once per process)."""
    from skimage import data

    coins = data.coins()
    hubble = data.hubble_deep_field()
    tissue = data.immunohistochemistry()
    return (
        PhotoSource("coins", "coin", np.repeat(coins[..., None], 3, axis=2), segment_coins(coins)),
        PhotoSource("hubble_deep_field", "galaxy", hubble, segment_galaxies(hubble)),
        PhotoSource("immunohistochemistry", "nucleus", tissue, segment_nuclei(tissue)),
    )


def source_regions() -> dict[str, dict[str, list[int]]]:
    """Per source, per split, the region [x0, y0, x1, y1] its tiles are cut from."""
    return {source.name: {split: list(source.region(split)) for split in SPLITS} for source in photo_sources()}


# -- mosaics ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """A crop of a source and where it lies in an image; recorded in each COCO image entry under "tiles"."""

    source: str
    box: tuple[int, int, int, int]  # the crop, x0, y0, x1, y1 in source pixels
    rot90: int  # quarter turns (np.rot90) applied to the crop, then
    flip: bool  # a left-right flip
    at: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image


def _cuts(rng: np.random.Generator, total: float, parts: int, limits: np.ndarray) -> list[int]:
    """Tile edges along one side: ``parts`` lengths near total / parts, each at most its limit."""
    lengths = np.minimum(total / parts * rng.uniform(0.8, 1.2, parts), limits)
    return [0, *np.cumsum(np.floor(lengths).astype(int)).tolist()]


def _plan_mosaic(
    rng: np.random.Generator, split: str, classes: tuple[str, ...], long_sides: tuple[int, int]
) -> list[Tile]:
    """A grid of tiles of ``classes``' sources cut from ``split``'s regions, ``long_sides`` pixels on its long side."""
    sources = [source for source in photo_sources() if source.category in classes]
    rows, cols = GRIDS[int(rng.integers(len(GRIDS)))]
    long_side = rng.uniform(*long_sides)
    short_side = long_side * rng.uniform(0.6, 0.95)
    landscape = cols > rows or (cols == rows and rng.random() < 0.5)
    width, height = (long_side, short_side) if landscape else (short_side, long_side)
    picks = rng.integers(len(sources), size=(rows, cols))
    turns = rng.integers(4, size=(rows, cols))
    flips = rng.random((rows, cols)) < 0.5
    scales = rng.uniform(*SCALES, size=(rows, cols))
    # The room each cell's region offers, as turned: a column can be no wider than its narrowest region allows
    # at the largest scale (which is what keeps tiles inside the narrow held-out regions).
    room = np.zeros((rows, cols, 2))
    for (i, j), pick in np.ndenumerate(picks):
        x0, y0, x1, y1 = sources[pick].region(split)
        room[i, j] = (x1 - x0, y1 - y0)[:: -1 if turns[i, j] % 2 else 1]
    xs = _cuts(rng, width, cols, SCALES[1] * room[..., 0].min(axis=0))
    ys = _cuts(rng, height, rows, SCALES[1] * room[..., 1].min(axis=1))
    tiles = []
    for (i, j), pick in np.ndenumerate(picks):
        source = sources[pick]
        tile_w, tile_h = xs[j + 1] - xs[j], ys[i + 1] - ys[i]
        scale = max(scales[i, j], tile_w / room[i, j, 0], tile_h / room[i, j, 1])
        crop_w, crop_h = max(1, round(tile_w / scale)), max(1, round(tile_h / scale))
        if turns[i, j] % 2:
            crop_w, crop_h = crop_h, crop_w
        rx0, ry0, rx1, ry1 = source.region(split)
        x0 = int(rng.integers(rx0, rx1 - crop_w + 1))
        y0 = int(rng.integers(ry0, ry1 - crop_h + 1))
        at = (xs[j], ys[i], xs[j + 1], ys[i + 1])
        tiles.append(Tile(source.name, (x0, y0, x0 + crop_w, y0 + crop_h), int(turns[i, j]), bool(flips[i, j]), at))
    return tiles


def _orient(array: np.ndarray, tile: Tile) -> np.ndarray:
    turned = np.rot90(array, tile.rot90)
    return np.ascontiguousarray(turned[:, ::-1] if tile.flip else turned)


def _render_mosaic(tiles: list[Tile]) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """The image (H, W, 3) uint8 and its objects as (class name, visible mask) pairs."""
    from scipy import ndimage as ndi

    by_name = {source.name: source for source in photo_sources()}
    width, height = max(t.at[2] for t in tiles), max(t.at[3] for t in tiles)
    pixels = np.zeros((height, width, 3), np.uint8)
    labels = np.zeros((height, width), np.int32)  # one id per object in the image
    classes: list[str] = []
    for tile in tiles:
        source = by_name[tile.source]
        x0, y0, x1, y1 = tile.box
        ax0, ay0, ax1, ay1 = tile.at
        size = (ax1 - ax0, ay1 - ay0)
        crop = Image.fromarray(_orient(source.pixels[y0:y1, x0:x1], tile)).resize(size, Image.LANCZOS)
        pixels[ay0:ay1, ax0:ax1] = np.asarray(crop)
        ids = Image.fromarray(_orient(source.labels[y0:y1, x0:x1], tile)).resize(size, Image.NEAREST)
        ids = np.asarray(ids, dtype=np.int32)
        present = np.unique(ids[ids > 0])
        renumber = np.zeros(int(ids.max()) + 1, np.int32)
        renumber[present] = len(classes) + 1 + np.arange(len(present))
        labels[ay0:ay1, ax0:ax1] = renumber[ids]
        classes += [source.category] * len(present)
    objects = []
    for index, where in enumerate(ndi.find_objects(labels, max_label=len(classes))):
        visible = labels[where] == index + 1
        if visible.sum() >= MIN_VISIBLE_PIXELS:
            mask = np.zeros(labels.shape, bool)
            mask[where] = visible
            objects.append((classes[index], mask))
    return pixels, objects


def _most_objects(tiles: list[Tile]) -> int:
    """How many objects the tiles show at most (some may turn out too cut to be annotated)."""
    by_name = {source.name: source for source in photo_sources()}
    count = 0
    for tile in tiles:
        x0, y0, x1, y1 = tile.box
        count += int(np.count_nonzero(np.unique(by_name[tile.source].labels[y0:y1, x0:x1])))
    return count


def _plan_image(rng: np.random.Generator, split: str, max_objects: int, classes: tuple[str, ...],
                long_sides: tuple[int, int]) -> list[Tile]:  # fmt: skip
    """A mosaic of at most ``max_objects`` objects: redrawn while it has more (tissue tiles hold hundreds of nuclei)."""
    for _ in range(1000):
        tiles = _plan_mosaic(rng, split, classes, long_sides)
        if _most_objects(tiles) <= max_objects:
            return tiles
    raise ValueError(f"no mosaic of at most {max_objects} objects was found in 1000 tries; allow more")


def write_photo_instances(
    root: str, *, train_images: int = 48, val_images: int = 16, seed: int = 0, max_objects: int = MAX_OBJECTS,
    classes: tuple[str, ...] = PHOTO_CLASSES, long_sides: tuple[int, int] = LONG_SIDE,
) -> dict:  # fmt: skip
    """Write the photo mosaics (see the module's docstring) under ``root``, each image with at most
    ``max_objects`` objects of ``classes`` (some of PHOTO_CLASSES) and ``long_sides`` pixels on its long side;
    the same arguments always give the same files. Returns the stats of :func:`dataset_stats`, also written
    to ROOT/stats.json."""
    unknown = set(classes) - set(PHOTO_CLASSES)
    if unknown or not classes:
        raise ValueError(f"classes must be some of {PHOTO_CLASSES}, got {classes}")
    categories = [dict(id=i + 1, name=name, supercategory="photo") for i, name in enumerate(classes)]
    for split_index, (split, count) in enumerate(zip(SPLITS, (train_images, val_images))):
        image_dir = os.path.join(root, split, "images")
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            tiles = _plan_image(rng, split, max_objects, classes, long_sides)
            pixels, objects = _render_mosaic(tiles)
            file_name = f"{split}_{index:05d}.jpg"
            Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=95)
            height, width = pixels.shape[:2]
            tile_entries = [asdict(tile) for tile in tiles]
            images.append(dict(id=index + 1, file_name=file_name, height=height, width=width, tiles=tile_entries))
            for name, mask in objects:
                category_id = classes.index(name) + 1
                annotations.append(_annotation(mask, len(annotations) + 1, index + 1, category_id))
        with open(os.path.join(root, split, "annotations.json"), "w") as file:
            json.dump(dict(images=images, annotations=annotations, categories=categories), file)
    return _write_stats(root)


# -- small objects ----------------------------------------------------------------------------------------------


def write_small_objects(
    root: str,
    *,
    train_images: int = 64,
    val_images: int = 16,
    height: int = 512,
    min_size: float = 10,
    max_size: float = 30,
    min_objects: int = 4,
    max_objects: int = 12,
    seed: int = 0,
    workers: int | None = None,
) -> dict:
    """Write botnet's synthetic shapes, ``min_size``-``max_size`` pixels across, on images ``height`` pixels high
    and 1.1-1.5 times as wide, under ``root``. Returns the stats of :func:`dataset_stats`, also written to
    ROOT/stats.json."""
    spec = ShapesSpec(
        train_images=train_images,
        val_images=val_images,
        height=height,
        min_width=int(height * 1.1),
        max_width=int(height * 1.5),
        min_objects=min_objects,
        max_objects=max_objects,
        min_size=min_size,
        max_size=max_size,
        seed=seed,
    )
    write_shapes_dataset(root, spec, workers=workers)
    return _write_stats(root)


MIXED_FRAMES = ((1280, 400), (1920, 1080), (1024, 768))  # width x height: strips, 16:9 frames, 4:3 photos


def write_mixed_aspect(
    root: str, *, train_images: int = 48, val_images: int = 16, frames: tuple[tuple[int, int], ...] = MIXED_FRAMES,
    min_size: float = 24, max_size: float = 160, min_objects: int = 10, max_objects: int = 40, seed: int = 0,
    workers: int | None = None,
) -> dict:  # fmt: skip
    """Write botnet's synthetic shapes on images of the mixed ``frames`` (width, height), about as many of each,
    in one folder (``ROOT/{train,val}``), objects ``min_size``-``max_size`` pixels across, all of one class
    ("shape"), as in a microscope's cells: the strips and 16:9 frames a microscope or a camera rig leaves side
    by side. Returns the stats of :func:`dataset_stats`."""
    import tempfile

    os.makedirs(root, exist_ok=True)
    merged = {split: dict(images=[], annotations=[], categories=None) for split in SPLITS}
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for index, (width, height) in enumerate(frames):
            share = dict(train_images=_share(train_images, len(frames), index), val_images=_share(val_images, len(frames), index))
            spec = ShapesSpec(**share, height=height, min_width=width, max_width=width, min_objects=min_objects,
                              max_objects=max_objects, min_size=min_size, max_size=max_size, seed=seed * 100 + index)  # fmt: skip
            part = os.path.join(scratch, str(index))
            for split, (image_dir, ann_file) in write_shapes_dataset(part, spec, workers=workers).items():
                _merge_into(merged[split], ann_file, image_dir, os.path.join(root, split, "images"), f"{width}x{height}-")
    for split, data in merged.items():
        with open(os.path.join(root, split, "annotations.json"), "w") as file:
            json.dump(data, file)
    return _write_stats(root)


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def _merge_into(merged: dict, ann_file: str, image_dir: str, out_dir: str, prefix: str) -> None:
    """Append one COCO split to ``merged``, renumbering its ids and moving its images to ``out_dir``."""
    with open(ann_file) as file:
        data = json.load(file)
    os.makedirs(out_dir, exist_ok=True)
    merged["categories"] = [dict(id=1, name="shape", supercategory="shape")]
    new_ids = {}
    for image in data["images"]:
        new_ids[image["id"]] = len(merged["images"]) + 1
        name = prefix + image["file_name"]
        os.replace(os.path.join(image_dir, image["file_name"]), os.path.join(out_dir, name))
        merged["images"].append({**image, "id": new_ids[image["id"]], "file_name": name})
    for annotation in data["annotations"]:
        merged["annotations"].append({**annotation, "id": len(merged["annotations"]) + 1, "category_id": 1,
                                      "image_id": new_ids[annotation["image_id"]]})  # fmt: skip


# -- stats ------------------------------------------------------------------------------------------------------


def dataset_stats(root: str) -> dict:
    """Per split: images, their sizes, instances per class, the most in one image, and object sides (the longer
    side of each box) in pixels."""
    stats = {}
    for split in SPLITS:
        with open(os.path.join(root, split, "annotations.json")) as file:
            data = json.load(file)
        names = {c["id"]: c["name"] for c in data["categories"]}
        per_class = {name: 0 for name in names.values()}
        per_image: dict[int, int] = {}
        for ann in data["annotations"]:
            per_class[names[ann["category_id"]]] += 1
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        sides = np.array([max(ann["bbox"][2:]) for ann in data["annotations"]] or [0])
        long_sides = [max(image["width"], image["height"]) for image in data["images"]] or [0]
        stats[split] = dict(
            images=len(data["images"]),
            image_long_side=dict(min=min(long_sides), max=max(long_sides)),
            instances=per_class,
            most_instances_per_image=max(per_image.values(), default=0),
            object_side=dict(min=int(sides.min()), median=float(np.median(sides)), max=int(sides.max())),
        )
    return stats


def _write_stats(root: str) -> dict:
    stats = dataset_stats(root)
    with open(os.path.join(root, "stats.json"), "w") as file:
        json.dump(stats, file, indent=2)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sets = parser.add_subparsers(dest="set", required=True)
    photos = sets.add_parser("photos", help="mosaics of scikit-image's photographs: coins, galaxies, nuclei")
    small = sets.add_parser("small-objects", help=f"small synthetic shapes ({', '.join(SHAPE_CLASSES)}) on big images")
    mixed = sets.add_parser("mixed-aspect", help="synthetic shapes on strips, 16:9 frames and 4:3 photos in one folder")
    for sub, train, val in ((photos, 48, 16), (small, 64, 16), (mixed, 48, 16)):
        sub.add_argument("root", help="folder to write ROOT/{train,val}/images and annotations.json in")
        sub.add_argument("--train-images", type=int, default=train)
        sub.add_argument("--val-images", type=int, default=val)
        sub.add_argument("--seed", type=int, default=0)
    small.add_argument("--height", type=int, default=512, help="image height in pixels")
    small.add_argument("--min-size", type=float, default=10, help="smallest object diameter in pixels")
    small.add_argument("--max-size", type=float, default=30, help="largest object diameter in pixels")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = dict(train_images=args.train_images, val_images=args.val_images, seed=args.seed)
    if args.set == "photos":
        stats = write_photo_instances(args.root, **counts)
    elif args.set == "mixed-aspect":
        stats = write_mixed_aspect(args.root, **counts)
    else:
        stats = write_small_objects(
            args.root, height=args.height, min_size=args.min_size, max_size=args.max_size, **counts
        )
    print(json.dumps(stats, indent=2))
    print(f"wrote {args.root} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
