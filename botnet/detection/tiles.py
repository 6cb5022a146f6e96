"""Large images with small objects: train on tiles cut from the images at their own scale, and predict by
slicing each image into overlapping tiles and joining their detections (slicing-aided inference, Akyon et
al. 2022, "SAHI").

A detector's resize shrinks a large image to its input size, and with it objects that are small already;
enlarging the whole image costs pixels a CPU cannot train. With ``tiles`` (SIZE, OVERLAP) the detector
sees SIZE x SIZE windows of the original image instead, each resized by its transform as a whole image
would be (so min_size / SIZE is the scale the objects of images larger than a tile get):

- **Where tiles start.** Along each side, every SIZE - OVERLAP pixels, the last one moved back to end at
  the border (as SAHI's slicing does), so every tile is whole; a side no longer than SIZE is one tile.
- **Which tile an object belongs to.** Neighbouring tiles split their shared strip at its middle; the
  parts (a tile's *core*) cover the image once. An object belongs to the tile whose core holds its box's
  centre. In training a tile keeps the objects whose centre it holds, clipped to it (torchvision's
  detection reference keeps a crop's objects the same way); at prediction a tile keeps the detections
  whose centre lies in its core. An object no wider than OVERLAP lies whole in the tile it belongs to, so
  it is detected once, uncut, with no duplicate to merge; a class-wise NMS at the detector's own threshold
  then removes most of what larger objects leave twice (pieces of one that overlap by less than that
  threshold stay).
- **Training** goes through the tiles whose core holds an object (an epoch sees each once), each moved by
  up to half the overlap at random (but for those at the image's border) and flipped at random; tiles
  without objects are left out, as their background is in the neighbouring tiles' margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import batched_nms

from ..data.box_masks import BoxMasks

__all__ = [
    "TileDataset", "check_tiles", "crop_target", "detect_tiled", "tile_cores", "tile_count", "tile_starts", "tile_windows",
]

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels


def check_tiles(size: int, overlap: int) -> str | None:
    """Why (SIZE, OVERLAP) cannot tile, or None."""
    if size < 32:
        return f"a tile of {size} px is smaller than the 32 px a detector's backbone reduces"
    if not 0 <= overlap <= size // 2:
        return f"the overlap must be between 0 and half the tile ({size // 2} px), got {overlap}"
    return None


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Where the tiles along a side of ``length`` px start: every ``size - overlap`` px, the last tile ending
    at the border; one tile from 0 where the side is no longer than ``size``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size - overlap))
    return starts + [length - size]


def tile_cores(length: int, size: int, starts: Sequence[int]) -> list[float]:
    """The borders between the tiles' cores along a side: the middle of each pair of neighbouring tiles'
    shared strip (len(starts) - 1 values; core k runs from border k - 1 to border k)."""
    return [(following + previous + min(size, length)) / 2 for previous, following in zip(starts, starts[1:])]


def tile_windows(height: int, width: int, size: int, overlap: int) -> list[Window]:
    """Every tile of a ``height`` x ``width`` image, row by row."""
    xs, ys = tile_starts(width, size, overlap), tile_starts(height, size, overlap)
    return [(x, y, x + min(size, width), y + min(size, height)) for y in ys for x in xs]


def _owners(centres: Tensor, length: int, size: int, starts: list[int]) -> Tensor:
    """Along one side: the index of the tile whose core holds each centre coordinate."""
    borders = torch.tensor(tile_cores(length, size, starts), dtype=centres.dtype)
    return torch.bucketize(centres, borders, right=True)


def _core_keep(boxes: Tensor, window: Window, height: int, width: int, size: int, overlap: int) -> Tensor:
    """Which ``boxes`` (in image pixels) have their centre in ``window``'s core."""
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for axis, (length, start) in enumerate(((width, window[0]), (height, window[1]))):
        starts = tile_starts(length, size, overlap)
        centres = (boxes[:, axis] + boxes[:, axis + 2]) / 2
        keep &= _owners(centres, length, size, starts) == starts.index(start)
    return keep


def crop_target(target: dict[str, Any], window: Window) -> dict[str, Any]:
    """The objects of ``target`` whose box centre lies in ``window``, clipped to it, in its pixels."""
    x0, y0, x1, y1 = window
    boxes = target["boxes"].as_subclass(Tensor)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
    shifted = boxes[keep] - boxes.new_tensor([x0, y0, x0, y0])
    shifted[:, 0::2] = shifted[:, 0::2].clamp(0, x1 - x0)
    shifted[:, 1::2] = shifted[:, 1::2].clamp(0, y1 - y0)
    cropped = dict(target)
    cropped["boxes"] = tv_tensors.BoundingBoxes(shifted, format="XYXY", canvas_size=(y1 - y0, x1 - x0))
    for key in ("labels", "area", "iscrowd"):
        if key in target:
            cropped[key] = target[key][keep]
    if "masks" in target:
        masks = target["masks"]
        if not isinstance(masks, BoxMasks):
            raise TypeError("tiles need the masks as BoxMasks crops")
        cropped["masks"] = masks.select(keep).crop(window)
    return cropped


class TileDataset(Dataset):
    """The training tiles of a detection dataset (:class:`~botnet.data.coco.CocoDetection` read without
    transforms, its masks as BoxMasks crops): one item per tile whose core holds an object, moved by up to
    half the overlap at random, then given to ``transforms`` (the flips)."""

    def __init__(self, dataset, size: int, overlap: int, transforms=None) -> None:
        self.dataset, self.size, self.overlap, self.transforms = dataset, size, overlap, transforms
        self.items: list[tuple[int, Window]] = []
        for index, (width, height, boxes) in enumerate(dataset.image_boxes()):
            boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            for window in tile_windows(height, width, size, overlap):
                if _core_keep(boxes, window, height, width, size, overlap).any():
                    self.items.append((index, window))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def category_ids(self) -> list[int]:
        return self.dataset.category_ids

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def skipped(self):
        return self.dataset.skipped

    def groups(self) -> list[int]:
        """0 for landscape or square tiles, 1 for portrait ones (batches keep to one group)."""
        return [int(y1 - y0 > x1 - x0) for _, (x0, y0, x1, y1) in self.items]

    def _moved(self, window: Window, height: int, width: int) -> Window:
        """``window`` moved by up to half the overlap, so its core stays inside it; a tile at the image's
        border stays at it (moved away, it would cut off objects its core holds)."""
        x0, y0, x1, y1 = window
        reach = self.overlap // 2
        dx, dy = (torch.randint(-reach, reach + 1, (2,)).tolist() if reach else (0, 0))
        dx = 0 if x0 == 0 or x1 == width else max(-x0, min(dx, width - x1))
        dy = 0 if y0 == 0 or y1 == height else max(-y0, min(dy, height - y1))
        return x0 + dx, y0 + dy, x1 + dx, y1 + dy

    def __getitem__(self, index: int):
        image_index, window = self.items[index]
        image, target = self.dataset[image_index]
        window = self._moved(window, *image.shape[-2:])
        x0, y0, x1, y1 = window
        tile = tv_tensors.Image(image.as_subclass(Tensor)[:, y0:y1, x0:x1].clone())  # not the whole image's memory
        target = crop_target(target, window)
        return self.transforms(tile, target) if self.transforms is not None else (tile, target)


def _paste(masks: Tensor, window: Window, height: int, width: int) -> Tensor:
    """(N, 1, h, w) tile masks as (N, 1, H, W) uint8 image masks (thresholded at 0.5)."""
    x0, y0, x1, y1 = window
    out = torch.zeros((len(masks), 1, height, width), dtype=torch.uint8, device=masks.device)
    out[:, :, y0:y1, x0:x1] = masks > 0.5
    return out


@torch.no_grad()
def detect_tiled(model: nn.Module, image: Tensor, size: int, overlap: int, batch_size: int = 4) -> dict[str, Tensor]:
    """A torchvision detector's output for one (3, H, W) image, detected tile by tile (see the module): boxes
    in the image's pixels, masks (N, 1, H, W) uint8 0 / 1, at most the detector's detections an image."""
    height, width = image.shape[-2:]
    windows = tile_windows(height, width, size, overlap)
    kept: list[dict[str, Tensor]] = []
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        outputs = model([image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in batch])
        for window, output in zip(batch, outputs):
            x0, y0 = window[:2]
            boxes = output["boxes"] + output["boxes"].new_tensor([x0, y0, x0, y0])
            keep = _core_keep(boxes.cpu(), window, height, width, size, overlap).to(boxes.device)
            part = {"boxes": boxes[keep], "scores": output["scores"][keep], "labels": output["labels"][keep]}
            if "masks" in output:
                part["masks"] = [(window, mask) for mask in output["masks"][keep]]
            kept.append(part)
    return _join(kept, model, height, width)


def _join(parts: list[dict[str, Any]], model: nn.Module, height: int, width: int) -> dict[str, Tensor]:
    """The tiles' detections as one image's: a class-wise NMS at the detector's threshold, then the
    highest-scoring ones up to its count an image; masks pasted only for those."""
    boxes = torch.cat([p["boxes"] for p in parts])
    scores = torch.cat([p["scores"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    heads = model.roi_heads
    order = batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
    output = {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}
    if "masks" in parts[0]:
        pieces = [piece for p in parts for piece in p["masks"]]  # (window, (1, h, w) mask), as the boxes
        pasted = [_paste(pieces[i][1][None], pieces[i][0], height, width) for i in order.tolist()]
        empty = torch.zeros((0, 1, height, width), dtype=torch.uint8, device=boxes.device)
        output["masks"] = torch.cat(pasted) if pasted else empty
    return output


def tile_count(height: int, width: int, size: int, overlap: int) -> int:
    """How many tiles a ``height`` x ``width`` image is cut into."""
    return len(tile_starts(width, size, overlap)) * len(tile_starts(height, size, overlap))

