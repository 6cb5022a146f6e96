"""Multi-scale RoI-Align (Mask R-CNN, He et al. 2017; FPN level assignment, Lin et al. 2017, Eq. 1) as
gathers that autograd differentiates: what ``torchvision.ops.MultiScaleRoIAlign`` computes (``aligned=False``,
a fixed sampling ratio), forward and backward, for every pyramid level in one pass.

Why: torchvision's CPU kernels visit the RoIs one at a time, and its backward, a scatter of every sample's
gradient into a full-size zero map per level, was the largest cost of a small detector's CPU step after
the convolutions. Here each sample's four bilinear neighbours are rows of one table (every level's
features, channels last), summed with their weights as one embedding bag; its backward adds each sample's
gradient to those rows, over all channels at once.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

__all__ = ["MultiScaleRoIAlign", "fpn_levels", "roi_align_levels"]

def fpn_levels(boxes: Tensor, first: int, last: int, canonical_size: int = 224, canonical_level: int = 4) -> Tensor:
    """Each box's pyramid level (0 for P``first``) by FPN's Eq. 1, floor(4 + log2(sqrt(area) / 224)): a
    224 x 224 box is pooled from P4; clamped to the levels there are (the same small epsilon as
    torchvision's, so ties fall alike)."""
    side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    level = torch.floor(canonical_level + torch.log2(side / canonical_size) + 1e-6)
    return (level.clamp(first, last) - first).to(torch.int64)


def _samples(start: Tensor, length: Tensor, bins: int, ratio: int, size: Tensor) -> tuple[Tensor, Tensor]:
    """Along one axis, for each RoI (``start``, ``length`` in feature pixels, on a map ``size`` pixels long),
    the ``bins * ratio`` sample points' two neighbouring indices and their bilinear weights, (R, points, 2):
    RoI-Align's rule, a point clamped at 0 and at the last pixel, and weighing nothing more than a pixel
    outside the map."""
    points = (torch.arange(bins * ratio, dtype=start.dtype, device=start.device) + 0.5) / ratio
    coord = start[:, None] + points * (length / bins)[:, None]
    size = size[:, None]
    inside = ((coord >= -1.0) & (coord <= size)).to(coord.dtype)
    coord = coord.clamp(min=0.0)
    low = coord.floor().to(torch.int64)
    last = low >= size - 1
    low = torch.minimum(low, size - 1)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(coord), coord - low.to(coord.dtype))
    return torch.stack([low, high], -1), torch.stack([1.0 - frac, frac], -1) * inside[..., None]


def roi_align_levels(features: list[Tensor], rois: Tensor, levels: Tensor, scales: list[float],
                     output_size: tuple[int, int], sampling_ratio: int) -> Tensor:  # fmt: skip
    """RoI-Align of each RoI (``rois``: rows of image index, x0, y0, x1, y1 in image pixels) on its level of
    ``features`` (each (B, C, H, W), ``scales`` its size over the image's): (R, C, *output_size), each bin
    the mean of ``sampling_ratio`` x ``sampling_ratio`` bilinear samples (``aligned=False``: a RoI at least
    one feature pixel a side)."""
    channels = features[0].shape[1]
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, channels) for f in features])  # every level's pixels
    # bfloat16 features sampled in float32, as torchvision's
    table = table.to(torch.promote_types(table.dtype, rois.dtype))
    offsets = torch.tensor([0] + [f.numel() // channels for f in features[:-1]], device=rois.device).cumsum(0)
    heights = torch.tensor([f.shape[2] for f in features], device=rois.device)[levels]
    widths = torch.tensor([f.shape[3] for f in features], device=rois.device)[levels]
    scale = torch.tensor(scales, dtype=rois.dtype, device=rois.device)[levels]
    x0, y0, x1, y1 = (rois[:, 1:] * scale[:, None]).unbind(1)
    ph, pw = output_size
    rows, row_weights = _samples(y0, (y1 - y0).clamp(min=1.0), ph, sampling_ratio, heights)
    cols, col_weights = _samples(x0, (x1 - x0).clamp(min=1.0), pw, sampling_ratio, widths)
    start = offsets[levels] + rois[:, 0].to(torch.int64) * heights * widths
    # (R, points down, points across, 2, 2): each sample's four neighbours and their weights
    index = start[:, None, None, None, None] + rows[:, :, None, :, None] * widths[:, None, None, None, None]
    index = index + cols[:, None, :, None, :]
    weight = row_weights[:, :, None, :, None] * col_weights[:, None, :, None, :]
    # each sample the weighted sum of its four neighbours' rows, as an embedding bag (its backward adds each
    # sample's gradient to those rows)
    pooled = torch.nn.functional.embedding_bag(
        index.reshape(-1, 4), table, per_sample_weights=weight.reshape(-1, 4).to(table.dtype), mode="sum"
    )
    pooled = pooled.view(len(rois), ph, sampling_ratio, pw, sampling_ratio, channels).mean((2, 4))
    return pooled.permute(0, 3, 1, 2)


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """``torchvision.ops.MultiScaleRoIAlign`` with a fixed ``sampling_ratio`` (>= 1), computed on a CPU by
    :func:`roi_align_levels`: the same levels, scales and values, every level in one gather. On a GPU,
    torchvision's kernels, which are fast there."""

    def __init__(self, featmap_names: list[str], output_size: int | tuple[int, int], sampling_ratio: int) -> None:
        if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
            raise ValueError(f"sampling_ratio must be a positive int, got {sampling_ratio!r}")
        super().__init__(featmap_names, output_size, sampling_ratio)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = [x[name] for name in self.featmap_names]
        if features[0].device.type != "cpu":
            return super().forward(x, boxes, image_shapes)
        largest = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        # each level's scale, a power of two: its size over the largest image's (the batch is padded to it)
        scales = [2.0 ** round(math.log2(f.shape[-2] / largest[0])) for f in features]
        first, last = -math.log2(scales[0]), -math.log2(scales[-1])
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
        if len(features) == 1:
            levels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
        else:
            levels = fpn_levels(rois[:, 1:], int(first), int(last), self.canonical_scale, self.canonical_level)
        return roi_align_levels(features, rois, levels, scales, self.output_size, self.sampling_ratio)
