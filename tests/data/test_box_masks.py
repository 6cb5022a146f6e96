"""Instance masks as crops: the same pixels as the dense masks, and the same Mask R-CNN targets as
torchvision samples from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from botnet.data.box_masks import BoxMasks
from botnet.data.coco import _mask_crop, _to_rle

H, W = 48, 64


def random_masks(count: int, seed: int = 0) -> torch.Tensor:
    """Blobs of random extent, some touching the image's borders, one empty."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros((count, H, W), dtype=torch.uint8)
    for k in range(count - 1):
        top, left = torch.randint(-4, H - 2, (1,), generator=generator).item(), torch.randint(-4, W - 2, (1,), generator=generator).item()
        height, width = torch.randint(1, 30, (2,), generator=generator).tolist()
        region = masks[k, max(top, 0) : top + height, max(left, 0) : left + width]
        region.copy_(torch.rand(region.shape, generator=generator) < 0.7)
    return masks


def test_crops_give_back_the_dense_masks():
    masks = random_masks(12)
    box_masks = BoxMasks.from_dense(masks)
    assert torch.equal(box_masks.dense(), masks)
    assert sum(crop.numel() for crop in box_masks.crops) < masks[0].numel() * len(masks) / 3
    assert torch.equal(box_masks.hflip().dense(), masks.flip(-1))


@pytest.mark.parametrize("seed", range(3))
def test_mask_targets_equal_torchvision_s_from_dense_masks(seed):
    """Boxes anywhere, inside, across and outside the image's borders, several on one mask: the crops
    give RoI-Align exactly the samples the dense masks give it."""
    masks = random_masks(10, seed)
    generator = torch.Generator().manual_seed(100 + seed)
    corner = torch.rand((200, 2), generator=generator) * torch.tensor([W + 20, H + 20]) - 10
    boxes = torch.cat([corner, corner + 1 + torch.rand((200, 2), generator=generator) * 40], 1)
    matched = torch.randint(0, 10, (200,), generator=generator)
    expected = project_masks_on_boxes(masks, boxes, matched, 28)
    got = BoxMasks.from_dense(masks).roi_targets(boxes, matched, (H, W), 28)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # the crops move the boxes by whole pixels: float rounding only


def test_mask_targets_of_a_resized_image_sample_the_masks_at_the_same_place():
    """Boxes in an image resized by 1.5 map back to the masks' own pixels: the targets agree with
    torchvision's from nearest-resized dense masks up to the resize's rounding."""
    masks = random_masks(10, 3).clamp(max=1)
    masks = (torch.nn.functional.max_pool2d(masks[:, None].float(), 5, 1, 2)[:, 0] > 0).byte()  # solid blobs
    size = (72, 96)
    resized = torch.nn.functional.interpolate(masks[:, None].float(), size=size)[:, 0].byte()
    boxes = BoxMasks.from_dense(masks)
    corners = torch.tensor([[x, y] for x in range(0, 80, 16) for y in range(0, 60, 16)], dtype=torch.float32)
    rois = torch.cat([corners, corners + 24], 1)
    matched = torch.arange(len(rois)) % 9
    expected = project_masks_on_boxes(resized, rois, matched, 28)
    got = boxes.roi_targets(rois, matched, size, 28)
    assert (got - expected).abs().mean() < 0.02
    wrong_scale = boxes.roi_targets(rois, matched, (H, W), 28)  # read as if the image were not resized
    assert (wrong_scale - expected).abs().mean() > 5 * (got - expected).abs().mean()


def test_polygons_drawn_in_their_crops_equal_pycocotools_drawing_in_the_image_but_at_edge_pixels():
    """Drawn in its own region, a polygon covers the pixels pycocotools covers in the whole image, but for a
    few pixels at its edges (pycocotools rounds the moved coordinates at 1/5 pixel): never inside or
    outside the object (within 1.5 pixels of its outline), at most 2% of its area and 2 pixels."""
    rng = np.random.default_rng(0)
    height, width = 300, 400
    for _ in range(200):
        centre, radius = rng.uniform([-20, -20], [width + 20, height + 20]), rng.uniform(2, 60)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 12)))
        points = centre + (radius * rng.uniform(0.5, 1, len(angles)))[:, None] * np.c_[np.cos(angles), np.sin(angles)]
        polygon = [np.round(points, 2).ravel().tolist()]
        dense = torch.from_numpy(mask_utils.decode(_to_rle(polygon, height, width)))
        differing = BoxMasks.from_crops([_mask_crop(polygon, height, width)], (height, width)).dense()[0] != dense
        assert differing.sum() <= 0.02 * dense.sum() + 2
        ys, xs = torch.nonzero(differing, as_tuple=True)
        assert all(_distance_to_outline(points, x + 0.5, y + 0.5) < 1.5 for x, y in zip(xs.tolist(), ys.tolist()))


def _distance_to_outline(points: np.ndarray, x: float, y: float) -> float:
    """The distance of (x, y) to the closed polygon's edges."""
    start, end = points, np.roll(points, -1, axis=0)
    along = end - start
    t = np.clip(((np.array([x, y]) - start) * along).sum(1) / np.maximum((along**2).sum(1), 1e-12), 0, 1)
    return float(np.min(np.hypot(*(start + t[:, None] * along - np.array([x, y])).T)))
