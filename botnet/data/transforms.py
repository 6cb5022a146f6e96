"""Image pipelines (torchvision.transforms.v2) for training and evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import transforms as transforms_v1
from torchvision.transforms import InterpolationMode, v2

__all__ = [
    "CROP_SCALE_MIN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "TrainAugment",
    "default_augment",
    "default_hflip",
    "eval_transform",
    "eval_transform_for",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # resize to img_size / 0.875, then centre-crop: the standard ImageNet evaluation
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
# The smallest area a random-resized crop keeps, for training from scratch or fine-tuning on small data (the
# small and finetune recipes'): ImageNet's 0.08 (the paper recipe's) leaves too little of a small image.
CROP_SCALE_MIN = 0.35


def default_augment(grey: bool) -> str:
    """The augmentation of images the user did not choose one for: "jitter" (the whole image, turned, shifted
    and zoomed a little) for grey scans, digits and documents, whose content fills the frame; "crop"
    (random-resized crops) for colour photos."""
    return "jitter" if grey else "crop"


def default_hflip(augment: str) -> bool:
    """Random horizontal flips where the user did not choose: with crops (photos keep their class when
    mirrored), not with jitter (mirroring may change the class of a digit or a letter)."""
    return augment == "crop"


def _to_normalized(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


class TrainAugment:
    """The training augmentation, in two halves, so that the per-image half is cheap.

    Per image (in the loader, under the sample's own seeded generator), :meth:`__call__`: the image as a
    uint8 ``img_size`` square and its random parameters. With ``crop``, a random-resized crop (area
    ``crop_scale_min``..1, aspect 3/4..4/3) resized to the square; otherwise the whole image resized,
    with a random turn (+-10 degrees), shift (+-10%) and zoom (0.9-1.1) drawn for later. A horizontal flip
    is drawn where ``hflip`` (default: :func:`default_hflip`); RandAugment(2, 10) (the paper's) runs here too.

    Per batch (on the training device), :meth:`batch`: the turns, shifts and zooms as one ``grid_sample``
    (bilinear, black outside, as torchvision's RandomAffine fills), the flips, and the conversion to
    normalised float32, channels-last. Per image in torchvision these cost about ten times more."""

    def __init__(self, img_size: int, mean, std, *, crop: bool, crop_scale_min: float = CROP_SCALE_MIN,
                 randaugment: bool = False, hflip: bool | None = None) -> None:  # fmt: skip
        self.img_size, self.crop, self.crop_scale_min = img_size, crop, crop_scale_min
        self.hflip = default_hflip("crop" if crop else "jitter") if hflip is None else hflip
        self.randaugment = v2.RandAugment(num_ops=2, magnitude=10) if randaugment else None
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 (C, img_size, img_size), parameters (turn in degrees, shift x, shift y, zoom, flip))."""
        image = v2.functional.to_image(image) if not isinstance(image, torch.Tensor) else image
        size = [self.img_size, self.img_size]
        if self.crop:
            top, left, height, width = transforms_v1.RandomResizedCrop.get_params(
                image, scale=(self.crop_scale_min, 1.0), ratio=(3 / 4, 4 / 3)
            )
            image = v2.functional.resized_crop(image, top, left, height, width, size, antialias=True)
            params = torch.tensor([0.0, 0.0, 0.0, 1.0])
        else:
            image = v2.functional.resize(image, size, antialias=True)
            turn, shift_x, shift_y, zoom = torch.rand(4).tolist()
            params = torch.tensor([20 * turn - 10, 0.2 * shift_x - 0.1, 0.2 * shift_y - 0.1, 0.9 + 0.2 * zoom])
        flip = float(self.hflip and torch.rand(1).item() < 0.5)
        if self.randaugment is not None:
            image = self.randaugment(image)
        return image.as_subclass(torch.Tensor), torch.cat([params, torch.tensor([flip])])

    def batch(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """A loader's batch (uint8 (B, C, S, S), parameters (B, 5)) as the model's normalised float32 input."""
        x = images.float().div_(255)
        params = params.to(x.device, torch.float32)
        if not self.crop:
            x = F.grid_sample(x, F.affine_grid(_inverse_affine(params), list(x.shape), align_corners=False),
                              mode="bilinear", padding_mode="zeros", align_corners=False)  # fmt: skip
        if self.hflip:
            x = torch.where(params[:, 4, None, None, None] > 0, x.flip(-1), x)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous(memory_format=torch.channels_last)


def _inverse_affine(params: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) matrices that map each output pixel (normalised coordinates) to where it is read from:
    the inverse of turning by ``params[:, 0]`` degrees, zooming by ``params[:, 3]`` about the centre, then
    shifting by ``params[:, 1:3]`` of the image's size."""
    angle = torch.deg2rad(params[:, 0])
    cos, sin = torch.cos(angle) / params[:, 3], torch.sin(angle) / params[:, 3]
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle) / zoom
    shift = 2 * params[:, 1:3]  # a fraction of the size is twice that in [-1, 1] coordinates
    return torch.cat([inverse, -(inverse @ shift[:, :, None])], -1)


def train_transform(img_size: int, mean, std, *, crop: bool, crop_scale_min: float = CROP_SCALE_MIN,
                    randaugment: bool = False, hflip: bool | None = None) -> TrainAugment:  # fmt: skip
    """The training augmentation (:class:`TrainAugment`): ``crop``: random-resized crops (photos);
    otherwise the whole image with a small random turn, shift and zoom (scans, digits). ``hflip``: random
    horizontal flips, by default with ``crop`` only (:func:`default_hflip`). ``randaugment``:
    RandAugment(2, 10), as in the paper."""
    return TrainAugment(img_size, mean, std, crop=crop, crop_scale_min=crop_scale_min, randaugment=randaugment, hflip=hflip)


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
