"""Image pipelines (torchvision.transforms.v2) for training and evaluation."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "train_transform", "eval_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # resize to img_size / 0.875, then centre-crop: the standard ImageNet evaluation


def _to_normalized(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def train_transform(
    img_size: int, mean, std, *, crop: bool, crop_scale_min: float = 0.08, randaugment: bool = False
) -> v2.Compose:
    """``crop``: random resized crop and horizontal flip (photos); otherwise a resize and a small
    random affine jitter (digits, where a flip changes the class). ``randaugment``: RandAugment(2, 10)
    as in the paper."""
    if crop:
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(img_size, scale=(crop_scale_min, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:  # small shifts, turns and zooms keep a digit's class
        steps = [
            v2.ToImage(),
            v2.Resize((img_size, img_size), antialias=True),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
    if randaugment:
        steps.append(v2.RandAugment(num_ops=2, magnitude=10))
    return v2.Compose(steps + _to_normalized(mean, std))


def eval_transform(img_size: int, mean, std, *, crop: bool) -> v2.Compose:
    if crop:
        steps = [v2.ToImage(), v2.Resize(round(img_size / EVAL_CROP_FRACTION), antialias=True), v2.CenterCrop(img_size)]
    else:
        steps = [v2.ToImage(), v2.Resize((img_size, img_size), antialias=True)]
    return v2.Compose(steps + _to_normalized(mean, std))
