"""Image pipelines (torchvision.transforms.v2) for training and evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "train_transform", "eval_transform", "eval_transform_for"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # resize to img_size / 0.875, then centre-crop: the standard ImageNet evaluation
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def _to_normalized(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def train_transform(
    img_size: int,
    mean,
    std,
    *,
    crop: bool,
    crop_scale_min: float = 0.08,
    randaugment: bool = False,
    hflip: bool | None = None,
) -> v2.Compose:
    """``crop``: random resized crop (photos); otherwise a resize and a small random affine jitter
    (digits). ``hflip``: random horizontal flips; default with ``crop`` only (a flip changes a digit,
    a letter or any orientation-sensitive class). ``randaugment``: RandAugment(2, 10) as in the paper."""
    if crop:
        steps = [v2.ToImage(), v2.RandomResizedCrop(img_size, scale=(crop_scale_min, 1.0), antialias=True)]
    else:  # small shifts, turns and zooms keep a digit's class
        steps = [
            v2.ToImage(),
            v2.Resize((img_size, img_size), antialias=True),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
    if crop if hflip is None else hflip:
        steps.append(v2.RandomHorizontalFlip())
    if randaugment:
        steps.append(v2.RandAugment(num_ops=2, magnitude=10))
    return v2.Compose(steps + _to_normalized(mean, std))


def eval_transform(
    img_size: int,
    mean,
    std,
    *,
    crop: bool,
    crop_fraction: float = EVAL_CROP_FRACTION,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """``crop``: resize the short side to img_size / crop_fraction (rounded down, as timm does), then
    centre-crop img_size; otherwise resize the whole image to img_size x img_size."""
    mode = INTERPOLATIONS[interpolation]
    if crop:
        resize = v2.Resize(math.floor(img_size / crop_fraction), interpolation=mode, antialias=True)
        steps = [v2.ToImage(), resize, v2.CenterCrop(img_size)]
    else:
        steps = [v2.ToImage(), v2.Resize((img_size, img_size), interpolation=mode, antialias=True)]
    return v2.Compose(steps + _to_normalized(mean, std))


def eval_transform_for(meta: Mapping[str, Any]) -> v2.Compose:
    """The evaluation pipeline a saved model's metadata describes (its size, normalisation, crop,
    and for published weights their crop fraction and interpolation)."""
    return eval_transform(
        meta["img_size"],
        meta["mean"],
        meta["std"],
        crop=meta["crop"],
        crop_fraction=meta.get("crop_fraction", EVAL_CROP_FRACTION),
        interpolation=meta.get("interpolation", "bilinear"),
    )
