"""Detections drawn onto images: masks, boxes, class names and scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["PALETTE", "draw_detections", "tile_images"]

# Distinct colours, one per class (cycled when there are more classes).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
           "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075")  # fmt: skip


def draw_detections(
    image: torch.Tensor,
    output: dict[str, torch.Tensor],
    class_names: Sequence[str],
    score_threshold: float = 0.5,
    scale: int = 1,
) -> torch.Tensor:
    """``image`` (3, H, W) float in [0, 1] or uint8 with the detections of ``output``
    (torchvision format) scoring at least ``score_threshold``. ``scale`` enlarges the
    image first (small images get readable labels). Returns uint8 (3, H*scale, W*scale)."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    keep = output["scores"] >= score_threshold
    boxes = output["boxes"][keep].float()
    labels = output["labels"][keep].tolist()
    scores = output["scores"][keep].tolist()
    masks = output["masks"][keep][:, 0] if "masks" in output else None
    if scale != 1:
        image = F.interpolate(image[None].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)
        boxes = boxes * scale
        if masks is not None and len(masks):
            masks = F.interpolate(masks[None].float(), scale_factor=scale, mode="bilinear")[0]
    colours = [PALETTE[(label - 1) % len(PALETTE)] for label in labels]
    if masks is not None and len(masks):
        image = draw_segmentation_masks(image, masks > 0.5, alpha=0.45, colors=colours)
    if len(boxes):
        names = [f"{class_names[label - 1]} {score:.2f}" for label, score in zip(labels, scores)]
        image = draw_bounding_boxes(image, boxes, labels=names, colors=colours, width=max(1, scale // 2 + 1))
    return image


def tile_images(images: Sequence[torch.Tensor], columns: int = 4, gap: int = 4) -> torch.Tensor:
    """Uint8 (3, H, W) images of any sizes in a grid on a white background."""
    if not images:
        raise ValueError("tile_images needs at least one image")
    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    cell_h = max(im.shape[1] for im in images)
    cell_w = max(im.shape[2] for im in images)
    canvas = torch.full((3, len(rows) * (cell_h + gap) - gap, columns * (cell_w + gap) - gap), 255, dtype=torch.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            canvas[:, y : y + im.shape[1], x : x + im.shape[2]] = im
    return canvas
