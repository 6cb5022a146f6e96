"""What a detection dataset holds, read from its annotations alone (no image is opened): image sizes,
object sizes, objects per image, classes and whether every object has a mask. The fitted defaults of
``botnet detect train --data DIR`` are chosen from it (``botnet.tasks.detection_defaults``).

The profile reads the raw COCO dict before the full check of ``botnet.data.coco`` runs, so it passes
over malformed entries instead of failing on them: the check that follows names them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DetectionProfile", "profile_annotations", "resize_scales", "resized_image_pixels", "resized_pixels", "resized_sides",
    "tiled_profile",
]


@dataclass(frozen=True)
class DetectionProfile:
    """The training split's statistics (and the held-out split's image count)."""

    train_images: int
    val_images: int
    classes: int
    instances: int  # objects (not crowd regions) of the training split
    masks: bool  # every object of both splits has a polygon or RLE mask
    short_side: int  # median min(width, height) of the training images, pixels
    long_side: int  # median max(width, height)
    box_sides: tuple[float, ...]  # sqrt(width x height) of each training box, pixels of its image
    box_image_sides: tuple[tuple[int, int], ...]  # (short, long) side of each box's image
    boxes_per_image: tuple[int, ...]  # objects in each training image (0 for images without any)
    image_sides: tuple[tuple[int, int], ...] = ()  # (short, long) side of each training image

    def side_percentile(self, q: float) -> float:
        return float(np.percentile(self.box_sides, q)) if self.box_sides else 0.0

    def boxes_per_image_percentile(self, q: float) -> float:
        return float(np.percentile(self.boxes_per_image, q)) if self.boxes_per_image else 0.0

    def describe(self) -> str:
        masks = "masks" if self.masks else "boxes only"
        return (
            f"{self.train_images} training / {self.val_images} held-out images, {self.classes} classes, "
            f"{self.instances} objects ({masks}); images typically {self.short_side}x{self.long_side} px; "
            f"objects {self.side_percentile(5):.0f}-{self.side_percentile(95):.0f} px across (5th-95th percentile), "
            f"up to {max(self.boxes_per_image, default=0)} an image"
        )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e7  # NaN fails too


def _has_mask(annotation: dict) -> bool:
    return isinstance(annotation.get("segmentation"), (list, dict)) and bool(annotation["segmentation"])


def _entries(coco, key: str) -> list[dict]:
    """The dicts listed under ``key`` (anything else is for the full check to name)."""
    listed = coco.get(key) if isinstance(coco, dict) else None
    return [entry for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []


def _id(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def profile_annotations(train: dict, val: dict) -> DetectionProfile:
    """The profile of two COCO dicts (training and held-out split); see :class:`DetectionProfile`."""
    images = {
        image["id"]: (int(image["width"]), int(image["height"]))
        for image in _entries(train, "images")
        if _id(image.get("id")) is not None and _number(image.get("width")) and _number(image.get("height"))
    }
    counts = dict.fromkeys(images, 0)
    sides, image_sides = [], []
    masks, objects = True, 0
    for split in (train, val):
        for annotation in _entries(split, "annotations"):
            if not annotation.get("iscrowd"):
                masks = masks and _has_mask(annotation)
                objects += 1
    for annotation in _entries(train, "annotations"):
        if annotation.get("iscrowd") or _id(annotation.get("image_id")) not in images:
            continue
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and _number(box[2]) and _number(box[3])):
            continue
        width, height = images[annotation["image_id"]]
        counts[annotation["image_id"]] += 1
        sides.append(math.sqrt(box[2] * box[3]))
        image_sides.append((min(width, height), max(width, height)))
    shorts = [min(size) for size in images.values()]
    longs = [max(size) for size in images.values()]
    return DetectionProfile(
        train_images=len(images),
        val_images=len(_entries(val, "images")),
        classes=len(_entries(train, "categories")),
        instances=len(sides),
        masks=masks and objects > 0,
        short_side=int(np.median(shorts)) if shorts else 0,
        long_side=int(np.median(longs)) if longs else 0,
        box_sides=tuple(sides),
        box_image_sides=tuple(image_sides),
        boxes_per_image=tuple(counts.values()),
        image_sides=tuple(zip(shorts, longs)),
    )


def resize_scales(image_sides, min_size: int, max_size: int) -> np.ndarray:
    """How torchvision's detection resize (``GeneralizedRCNNTransform``) scales images of these (short, long)
    sides: min(min_size / short side, max_size / long side), both bounds applied."""
    if not len(image_sides):
        return np.zeros(0)
    short, long = np.asarray(image_sides, dtype=np.float64).T
    return np.minimum(min_size / short, max_size / long)


def resized_sides(profile: DetectionProfile, min_size: int, max_size: int) -> np.ndarray:
    """The box sides after torchvision's detection resize, each box scaled with its image."""
    if not profile.box_sides:
        return np.zeros(0)
    return np.asarray(profile.box_sides) * resize_scales(profile.box_image_sides, min_size, max_size)


def resized_image_pixels(profile: DetectionProfile, min_size: int, max_size: int) -> np.ndarray:
    """Each training image's number of pixels after torchvision's detection resize (one min_size x max_size
    image where the profile has no image sizes)."""
    if not profile.image_sides:
        return np.array([float(min_size * max_size)])
    short, long = np.asarray(profile.image_sides, dtype=np.float64).T
    return short * long * resize_scales(profile.image_sides, min_size, max_size) ** 2


def resized_pixels(profile: DetectionProfile, min_size: int, max_size: int) -> float:
    """The training images' mean number of pixels after torchvision's detection resize."""
    return float(np.mean(resized_image_pixels(profile, min_size, max_size)))


def tiled_profile(profile: DetectionProfile, tile: int) -> DetectionProfile:
    """The profile as a detector trained on ``tile``-px tiles sees it: every image's sides at most ``tile``
    (the resize functions above then give a tile's scale and pixels)."""

    def cut(sides):
        return tuple((min(short, tile), min(long, tile)) for short, long in sides)

    return dataclasses.replace(
        profile, short_side=min(profile.short_side, tile), long_side=min(profile.long_side, tile),
        box_image_sides=cut(profile.box_image_sides), image_sides=cut(profile.image_sides),
    )  # fmt: skip
