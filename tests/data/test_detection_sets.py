"""The benchmark detection sets of benchmarks/detection_sets.py: real-photo mosaics and small synthetic objects."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from benchmarks.detection_sets import (
    MAX_OBJECTS,
    PHOTO_CLASSES,
    dataset_stats,
    segment_coins,
    source_regions,
    write_photo_instances,
    write_small_objects,
)
from botnet.data.coco import CocoDetection


def _read(root, split):
    with open(os.path.join(root, split, "annotations.json")) as file:
        return json.load(file)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    return root, write_photo_instances(root, train_images=6, val_images=4, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("small"))
    return root, write_small_objects(root, train_images=4, val_images=2, height=384, seed=0, workers=1)


@pytest.mark.parametrize("which", ["photos", "small"])
def test_both_splits_load_with_masks(which, request):
    root, _ = request.getfixturevalue(which)
    for split in ("train", "val"):
        data = _read(root, split)
        dataset = CocoDetection(os.path.join(root, split, "images"), os.path.join(root, split, "annotations.json"))
        assert len(dataset) == len(data["images"]) and not dataset.skipped.total()
        image, target = dataset[0]
        assert target["masks"].shape[1:] == image.shape[1:] and len(target["masks"]) == len(target["boxes"]) > 0


@pytest.mark.parametrize("which", ["photos", "small"])
def test_boxes_and_areas_are_those_of_the_masks(which, request):
    root, _ = request.getfixturevalue(which)
    for split in ("train", "val"):
        data = _read(root, split)
        sizes = {image["id"]: [image["height"], image["width"]] for image in data["images"]}
        for ann in data["annotations"]:
            rle = ann["segmentation"]
            assert rle["size"] == sizes[ann["image_id"]] and isinstance(rle["counts"], str)
            assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
            assert ann["area"] == int(mask_utils.area(rle)) > 0 and ann["iscrowd"] == 0


def test_stats_count_what_was_written(photos):
    root, stats = photos
    with open(os.path.join(root, "stats.json")) as file:
        assert json.load(file) == stats == dataset_stats(root)
    for split, images in (("train", 6), ("val", 4)):
        data = _read(root, split)
        assert stats[split]["images"] == images
        assert sum(stats[split]["instances"].values()) == len(data["annotations"])


def test_photo_set_has_every_class_in_both_splits_and_few_enough_per_image(photos):
    root, stats = photos
    assert [c["name"] for c in _read(root, "train")["categories"]] == list(PHOTO_CLASSES)
    for split in ("train", "val"):
        assert all(stats[split]["instances"][name] > 0 for name in PHOTO_CLASSES), stats[split]
        assert 0 < stats[split]["most_instances_per_image"] <= MAX_OBJECTS


def test_photo_images_are_large_with_small_objects(photos):
    root, stats = photos
    for split in ("train", "val"):
        for image in _read(root, split)["images"]:
            assert 600 <= max(image["width"], image["height"]) <= 1500
        assert 8 <= stats[split]["object_side"]["median"] <= 80


def test_held_out_tiles_come_from_regions_no_training_tile_shows(photos):
    root, _ = photos
    regions = source_regions()
    boxes = {split: [] for split in ("train", "val")}
    for split in boxes:
        for image in _read(root, split)["images"]:
            covered = np.zeros((image["height"], image["width"]), int)
            for tile in image["tiles"]:
                x0, y0, x1, y1 = tile["box"]
                rx0, ry0, rx1, ry1 = regions[tile["source"]][split]
                assert rx0 <= x0 < x1 <= rx1 and ry0 <= y0 < y1 <= ry1, (split, tile)
                boxes[split].append((tile["source"], tile["box"]))
                ax0, ay0, ax1, ay1 = tile["at"]
                covered[ay0:ay1, ax0:ax1] += 1
            assert (covered == 1).all()  # the tiles cover the image, without overlapping
    for name, (x0, y0, x1, y1) in boxes["train"]:
        for other, (u0, v0, u1, v1) in boxes["val"]:
            assert other != name or min(x1, u1) <= max(x0, u0) or min(y1, v1) <= max(y0, v0)


def _contrast(feature: np.ndarray, mask: np.ndarray, others: np.ndarray) -> float | None:
    """Mean of ``feature`` inside ``mask`` less its mean in a 3-pixel ring around it (``others`` left out)."""
    ring = ndi.binary_dilation(mask, iterations=3) & ~mask & ~others
    return None if mask.sum() < 50 or ring.sum() < 10 else feature[mask].mean() - feature[ring].mean()


def test_photo_objects_stand_out_from_their_surroundings(photos):
    """Coins and galaxies are brighter than a ring just outside their masks, nuclei bluer (their tissue is brown),
    and most so where the masks are: a mask moved by 3 pixels stands out less. Masks shifted, flipped or resized
    differently from the pixels fail this."""
    root, _ = photos
    shifts = [(dy, dx) for dy in (-3, 0, 3) for dx in (-3, 0, 3)]
    contrast = {name: {shift: [] for shift in shifts} for name in PHOTO_CLASSES}
    for split in ("train", "val"):
        data = _read(root, split)
        for image in data["images"]:
            pixels = np.asarray(Image.open(os.path.join(root, split, "images", image["file_name"])), dtype=float)
            anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
            objects = np.any(masks, axis=0)
            for ann, mask in zip(anns, masks):
                x, y, w, h = ann["bbox"]
                near = np.s_[max(0, y - 8) : y + h + 8, max(0, x - 8) : x + w + 8]  # the box and 8 pixels around
                name = PHOTO_CLASSES[ann["category_id"] - 1]
                window = pixels[near]
                feature = window[..., 2] - window[..., 0] if name == "nucleus" else window.mean(axis=2)
                for dy, dx in shifts:
                    moved = np.roll(mask[near], (dy, dx), axis=(0, 1))
                    value = _contrast(feature, moved, objects[near] & ~mask[near])
                    if value is not None:
                        contrast[name][dy, dx].append(value)
    for name, least in (("coin", 40), ("galaxy", 25), ("nucleus", 5)):
        values = np.array(contrast[name][0, 0])
        assert len(values) >= 10 and (values > 0).mean() >= 0.85 and np.median(values) > least, (name, values)
        moved = {shift: np.mean(v) for shift, v in contrast[name].items() if shift != (0, 0)}
        assert max(moved.values()) < values.mean(), (name, values.mean(), moved)


def test_coins_are_segmented_one_by_one():
    from skimage import data

    labels = segment_coins(data.coins())
    areas = np.bincount(labels.ravel())[1:]
    assert len(areas) == 24 and areas.min() > 800  # 24 coins, none merged or broken


def test_photo_set_is_deterministic_in_its_seed(photos, tmp_path):
    root, _ = photos
    write_photo_instances(str(tmp_path / "same"), train_images=2, val_images=1, seed=0)
    write_photo_instances(str(tmp_path / "other"), train_images=2, val_images=1, seed=1)
    for split, count in (("train", 2), ("val", 1)):
        full, same, other = _read(root, split), _read(tmp_path / "same", split), _read(tmp_path / "other", split)
        # each image has its own seed, so a smaller set is the start of the larger one
        assert same["images"] == full["images"][:count]
        assert same["annotations"] == [a for a in full["annotations"] if a["image_id"] <= count]
        for image in same["images"]:
            names = [os.path.join(r, split, "images", image["file_name"]) for r in (root, tmp_path / "same")]
            assert open(names[0], "rb").read() == open(names[1], "rb").read()
        assert other["images"] != same["images"] and other["annotations"] != same["annotations"]


def test_small_objects_are_small_on_large_images(small):
    root, stats = small
    height, min_size, max_size = 384, 10, 30
    for split in ("train", "val"):
        data = _read(root, split)
        for image in data["images"]:
            assert image["height"] == height and int(height * 1.1) <= image["width"] <= int(height * 1.5)
        sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
        areas = np.array([a["area"] for a in data["annotations"]])
        # A shape is min_size..max_size across (a cross's arm ends reach 5% past that); one partly hidden
        # keeps at least 12 pixels and shapes.MIN_VISIBLE of its area, so its box can be smaller.
        assert areas.min() >= 12 and sides.max() <= max_size * 1.05 + 2
        assert (sides >= min_size * 0.6).mean() >= 0.9 and min_size <= np.median(sides) <= max_size
        assert stats[split]["images"] == len(data["images"]) and stats[split]["most_instances_per_image"] <= 12
