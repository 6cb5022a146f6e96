"""Instance masks kept as crops around their objects, so a training step's cost does not grow with
objects x image pixels.

A dense (N, H, W) target is what torchvision's Mask R-CNN takes, and its training path makes float
copies of it twice a step: the detection resize interpolates every mask at the input's size, and the
mask loss converts every resized mask to float before RoI-Align samples a 28 x 28 grid from it. With
100 objects in a 1,024-px image that is about 400 MB of copies a step, and the step takes twice the
time of the same image with 10 objects. :class:`BoxMasks` keeps each mask as the crop of its region
(its box, and its pixels where they stray outside it, plus one pixel) and samples the mask targets
from the crops directly (:meth:`BoxMasks.roi_targets`), at the image's own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as F

__all__ = ["BoxMasks", "RandomHorizontalFlip", "crop_mask"]


def crop_mask(mask: Tensor, margin: int = 1) -> tuple[Tensor, tuple[int, int]]:
    """The crop of an (H, W) mask around its pixels, ``margin`` more on each side within the image, and
    its (x, y) origin; an empty mask gives an empty crop."""
    rows, cols = torch.where(mask.any(1))[0], torch.where(mask.any(0))[0]
    if len(rows) == 0:
        return mask.new_zeros((0, 0)), (0, 0)
    height, width = mask.shape
    top, left = max(int(rows[0]) - margin, 0), max(int(cols[0]) - margin, 0)
    bottom, right = min(int(rows[-1]) + 1 + margin, height), min(int(cols[-1]) + 1 + margin, width)
    return mask[top:bottom, left:right].clone(), (left, top)


@dataclass(frozen=True)
class BoxMasks:
    """N instance masks of a ``canvas`` (H, W) image, each as a uint8 crop placed at ``origins[i]`` (x, y).

    Outside its crop a mask is 0. Every crop reaches one pixel past the mask's pixels on each side
    (clipped to the image), so RoI-Align sampling a crop reads what it would read from the dense mask.
    """

    crops: tuple[Tensor, ...]
    origins: Tensor  # (N, 2) int64: the crops' left and top columns in the image
    canvas: tuple[int, int]

    def __post_init__(self) -> None:
        if self.origins.shape != (len(self.crops), 2):
            count = len(self.crops)
            raise ValueError(f"origins must be ({count}, 2) for {count} crops, got {tuple(self.origins.shape)}")

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def from_dense(cls, masks: Tensor) -> BoxMasks:
        """The crops of (N, H, W) masks."""
        return cls.from_crops([crop_mask(mask) for mask in masks], tuple(masks.shape[-2:]))

    @classmethod
    def from_crops(cls, pieces, canvas) -> BoxMasks:
        """From (crop, (x, y) origin) pairs in a ``canvas`` (H, W) image."""
        origins = torch.tensor([origin for _, origin in pieces], dtype=torch.int64).reshape(-1, 2)
        return cls(tuple(crop for crop, _ in pieces), origins, (int(canvas[0]), int(canvas[1])))

    def dense(self) -> Tensor:
        """The (N, H, W) uint8 masks."""
        out = torch.zeros((len(self), *self.canvas), dtype=torch.uint8)
        for k, (crop, (left, top)) in enumerate(zip(self.crops, self.origins.tolist())):
            out[k, top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        return out

    def hflip(self) -> BoxMasks:
        """The masks of the image mirrored left to right."""
        width = self.canvas[1]
        widths = torch.tensor([crop.shape[1] for crop in self.crops], dtype=torch.int64)
        origins = self.origins.clone()
        origins[:, 0] = width - self.origins[:, 0] - widths
        return BoxMasks(tuple(crop.flip(-1) for crop in self.crops), origins, self.canvas)

    def select(self, keep: Tensor) -> BoxMasks:
        """The masks where the boolean ``keep`` is true."""
        rows = torch.where(keep)[0].tolist()
        return BoxMasks(tuple(self.crops[k] for k in rows), self.origins[rows], self.canvas)

    def crop(self, window: tuple[int, int, int, int]) -> BoxMasks:
        """The masks of the image cut to ``window`` (x0, y0, x1, y1): each crop cut to the window, placed in
        its pixels (a mask wholly outside it becomes empty)."""
        x0, y0, x1, y1 = window
        pieces = []
        for crop, (left, top) in zip(self.crops, self.origins.tolist()):
            right, bottom = min(left + crop.shape[1], x1), min(top + crop.shape[0], y1)
            new_left, new_top = max(left, x0), max(top, y0)
            if right <= new_left or bottom <= new_top:
                pieces.append((crop.new_zeros((0, 0)), (0, 0)))
                continue
            piece = crop[new_top - top : bottom - top, new_left - left : right - left]
            pieces.append((piece, (new_left - x0, new_top - y0)))
        return BoxMasks.from_crops(pieces, (y1 - y0, x1 - x0))

    def to(self, device: torch.device | str) -> BoxMasks:
        return BoxMasks(tuple(crop.to(device) for crop in self.crops), self.origins.to(device), self.canvas)

    def roi_targets(self, boxes: Tensor, matched: Tensor, image_size: tuple[int, int], size: int) -> Tensor:
        """The (P, size, size) float mask targets of P boxes given in the image resized to ``image_size``
        (H, W), box p on mask ``matched[p]``: what torchvision's Mask R-CNN loss samples from a dense mask
        (RoI-Align, ``size`` x ``size``, adaptive sampling, unaligned), sampled at the image's own scale
        rather than from a nearest-neighbour resize of it."""
        scale = boxes.new_tensor([self.canvas[1] / image_size[1], self.canvas[0] / image_size[0]]).repeat(2)
        boxes = boxes * scale
        out = boxes.new_zeros((len(boxes), size, size))
        for index in torch.unique(matched).tolist():
            which = torch.where(matched == index)[0]
            crop = self.crops[index]
            if crop.numel() == 0:
                continue
            shifted = boxes[which] - self.origins[index].to(boxes).repeat(2)
            out[which] = roi_align(crop[None, None].to(boxes), [shifted], (size, size), 1.0)[:, 0]
        return out


class RandomHorizontalFlip:
    """torchvision.transforms.v2's horizontal flip of a detection sample, ``(image, target)``, that also flips
    a target's :class:`BoxMasks` (a v2 transform passes objects it does not know through unflipped)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if torch.rand(1).item() >= self.p:
            return image, target
        target = {
            key: value.hflip() if isinstance(value, BoxMasks)
            else F.horizontal_flip(value) if key in ("boxes", "masks") else value
            for key, value in target.items()
        }  # fmt: skip
        return F.horizontal_flip(image), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"
