"""Tiles: where they start, which tile an object belongs to, the training tiles' targets (against dense
crops), and prediction tile by tile joined into one image's detections (against a detector that sees
exactly what a tile shows)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision import tv_tensors

from botnet.data.box_masks import BoxMasks
from botnet.detection.tiles import (
    TileDataset, check_tiles, crop_target, detect_tiled, tile_count, tile_starts, tile_windows,
)  # fmt: skip
from botnet.detection import tiles as tiling


@pytest.mark.parametrize("length,size,overlap", [(1000, 320, 64), (321, 320, 0), (320, 320, 32), (100, 320, 32), (777, 96, 48)])
def test_tiles_cover_each_side_whole_and_overlap_at_least_as_asked(length, size, overlap):
    starts = tile_starts(length, size, overlap)
    ends = [start + min(size, length) for start in starts]
    assert starts[0] == 0 and ends[-1] == length  # the last tile ends at the border, every tile whole
    assert all(0 <= start and end <= length for start, end in zip(starts, ends))
    assert all(following - previous <= size - overlap for previous, following in zip(starts, starts[1:]))  # strips shared
    assert len(set(starts)) == len(starts)


def test_an_object_no_wider_than_the_overlap_lies_whole_in_the_one_tile_it_belongs_to():
    """Brute force over random boxes: the owner (by the box's centre, through the cores' borders) holds the
    whole box, and exactly one tile's core holds each centre."""
    generator = torch.Generator().manual_seed(0)
    height, width, size, overlap = 700, 1100, 256, 40
    windows = tile_windows(height, width, size, overlap)
    assert len(windows) == tile_count(height, width, size, overlap)
    sides = torch.randint(1, overlap + 1, (500, 2), generator=generator)
    corners = torch.rand(500, 2, generator=generator) * (torch.tensor([width, height]) - sides)
    boxes = torch.cat([corners, corners + sides], 1)
    owners = torch.stack([tiling._core_keep(boxes, window, height, width, size, overlap) for window in windows])
    assert (owners.sum(0) == 1).all()
    for k, window in enumerate(windows):
        inside = boxes[owners[k]]
        assert (inside[:, 0] >= window[0]).all() and (inside[:, 1] >= window[1]).all()
        assert (inside[:, 2] <= window[2]).all() and (inside[:, 3] <= window[3]).all()


def test_bad_tiles_are_named():
    assert "smaller than the 32 px" in check_tiles(16, 0)
    assert "between 0 and half the tile (64 px), got 65" in check_tiles(128, 65)
    assert check_tiles(128, 64) is None


def _masks(height, width, boxes):
    dense = torch.zeros((len(boxes), height, width), dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        dense[k, y0:y1, x0:x1] = 1
        dense[k, y0, x0] = 0  # not a plain rectangle
    return dense


def test_box_masks_cut_to_a_window_equal_the_dense_masks_cut():
    dense = _masks(60, 80, [(5, 5, 30, 20), (50, 40, 79, 59), (0, 0, 10, 10)])
    window = (20, 10, 70, 50)
    cut = BoxMasks.from_dense(dense).crop(window)
    assert cut.canvas == (40, 50)
    assert torch.equal(cut.dense(), dense[:, 10:50, 20:70])  # the third mask, outside the window, is empty
    assert torch.equal(BoxMasks.from_dense(dense).select(torch.tensor([False, True, True])).dense(), dense[1:])


def test_a_tile_keeps_the_objects_whose_centre_it_holds_clipped_to_it():
    boxes = [(5, 5, 30, 20), (50, 40, 79, 59), (15, 30, 40, 58)]
    dense = _masks(60, 80, boxes)
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(60, 80)),
        "labels": torch.tensor([1, 2, 3]), "masks": BoxMasks.from_dense(dense), "image_id": 7,
        "area": torch.tensor([1.0, 2.0, 3.0]), "iscrowd": torch.zeros(3, dtype=torch.int64),
    }  # fmt: skip
    window = (10, 0, 45, 50)  # holds the centres of the first (17.5, 12.5) and the third (27.5, 44)
    cut = crop_target(target, window)
    assert cut["labels"].tolist() == [1, 3] and cut["area"].tolist() == [1.0, 3.0] and cut["image_id"] == 7
    assert cut["boxes"].tolist() == [[0, 5, 20, 20], [5, 30, 30, 50]]
    assert cut["boxes"].canvas_size == (50, 35)
    assert torch.equal(cut["masks"].dense(), dense[[0, 2], 0:50, 10:45])


class _Coco:
    """A dataset as CocoDetection reads it (no transforms): one image whose pixels are their own coordinates."""

    category_ids, classes, skipped = [1], ["thing"], None

    def __init__(self, height, width, boxes):
        self.height, self.width, self.boxes = height, width, boxes
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        self.image = torch.stack([xs, ys, torch.zeros_like(xs)]).float()

    def image_boxes(self):
        return [(self.width, self.height, [list(map(float, box)) for box in self.boxes])]

    def __getitem__(self, index):
        canvas = (self.height, self.width)
        return tv_tensors.Image(self.image.clone()), {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(self.boxes, dtype=torch.float32), format="XYXY", canvas_size=canvas),
            "labels": torch.ones(len(self.boxes), dtype=torch.int64),
            "masks": BoxMasks.from_dense(_masks(*canvas, self.boxes)),
        }  # fmt: skip


def test_training_tiles_are_the_tiles_that_hold_objects_cut_from_the_image():
    boxes = [(10, 10, 30, 30), (300, 200, 320, 215)]
    data = TileDataset(_Coco(240, 400, boxes), 128, 1)  # an overlap of 1: tiles are not moved
    assert len(data) == 2 and data.category_ids == [1] and data.groups() == [0, 0]
    for (image, target), (_, window) in zip((data[0], data[1]), data.items):
        x0, y0, x1, y1 = window
        assert torch.equal(image.as_subclass(torch.Tensor), data.dataset.image[:, y0:y1, x0:x1])
        assert len(target["boxes"]) == 1 and target["masks"].canvas == (y1 - y0, x1 - x0)


def test_training_tiles_move_by_at_most_half_the_overlap_and_keep_every_object_they_own():
    """Objects at the image's border and in a middle tile: whatever the move, each tile keeps the objects
    its core holds (a border tile moved inward would cut off those at the border)."""
    boxes = [(2, 2, 12, 12), (150, 100, 160, 110), (288, 188, 298, 198)]
    data = TileDataset(_Coco(300, 400, boxes), 128, 40)
    torch.manual_seed(0)
    for _ in range(30):
        for index, (_, window) in enumerate(data.items):
            image, target = data[index]
            x0, y0 = int(image[0, 0, 0]), int(image[1, 0, 0])  # the pixels hold their coordinates
            assert abs(x0 - window[0]) <= 20 and abs(y0 - window[1]) <= 20 and image.shape[-2:] == (128, 128)
            assert x0 + 128 <= 400 and y0 + 128 <= 300
            owned = tiling._core_keep(torch.tensor(boxes, dtype=torch.float32), window, 300, 400, 128, 40)
            assert len(target["boxes"]) >= int(owned.sum()) >= 1


class _SeeingDetector(nn.Module):
    """Finds exactly what a tile shows of ``boxes`` (an image's objects, in its pixels): each box it overlaps,
    cut to it, with its mask cut too. The tile's place is read from its pixels, which hold their coordinates."""

    def __init__(self, boxes, height, width):
        super().__init__()
        self.boxes, self.dense = torch.tensor(boxes, dtype=torch.float32), _masks(height, width, boxes)
        self.roi_heads = SimpleNamespace(nms_thresh=0.5, detections_per_img=100)

    def forward(self, images):
        outputs = []
        for image in images:
            x0, y0 = int(image[0, 0, 0]), int(image[1, 0, 0])
            h, w = image.shape[-2:]
            cut = torch.stack([self.boxes[:, 0].clamp(x0, x0 + w), self.boxes[:, 1].clamp(y0, y0 + h),
                               self.boxes[:, 2].clamp(x0, x0 + w), self.boxes[:, 3].clamp(y0, y0 + h)], 1)  # fmt: skip
            seen = (cut[:, 2] > cut[:, 0]) & (cut[:, 3] > cut[:, 1])
            outputs.append({
                "boxes": cut[seen] - torch.tensor([x0, y0, x0, y0]), "labels": torch.ones(int(seen.sum()), dtype=torch.int64),
                "scores": torch.linspace(0.9, 0.5, len(self.boxes))[seen],
                "masks": self.dense[seen, None, y0 : y0 + h, x0 : x0 + w].float(),
            })  # fmt: skip
        return outputs


def test_prediction_tile_by_tile_finds_each_object_once_whole_with_its_mask():
    """Objects cut by tiles' borders are seen in pieces by several tiles; joined, each is found once, whole."""
    height, width = 300, 500
    boxes = [(120, 100, 150, 130), (118, 30, 140, 45), (240, 180, 270, 200), (5, 5, 20, 20), (470, 270, 499, 299)]
    model = _SeeingDetector(boxes, height, width)
    image = _Coco(height, width, boxes).image
    assert any(not ((b[0] >= w[0]) & (b[2] <= w[2])) for b in boxes for w in tile_windows(height, width, 128, 32))
    output = detect_tiled(model, image, 128, 32, batch_size=3)
    order = torch.argsort(output["scores"], descending=True)
    assert output["boxes"][order].tolist() == [list(map(float, box)) for box in boxes]
    assert output["masks"].dtype == torch.uint8 and torch.equal(output["masks"][order, 0], model.dense)
    assert output["labels"].tolist() == [1] * len(boxes)
