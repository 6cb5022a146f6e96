"""botnet's box IoU: torchvision's numbers, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torchvision

from botnet.detection.matching import box_iou
from botnet.detection.models import create_detector


def _boxes(count: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    corner = torch.rand((count, 2), generator=generator, dtype=torch.float64) * 500 - 50
    size = torch.rand((count, 2), generator=generator, dtype=torch.float64) * 120
    size[::7] = 0  # zero-area boxes (a union of 0 gives nan in both)
    return torch.cat([corner, corner + size], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_box_iou_equals_torchvision_s_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(0)
    gt, anchors = _boxes(37, generator, dtype), _boxes(5000, generator, dtype)
    anchors[:37] = gt  # identical pairs: IoU 1
    expected = torchvision.ops.box_iou(gt, anchors)
    got = box_iou(gt, anchors)
    assert got.dtype == expected.dtype and got.shape == (37, 5000)
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert (got > 0).float().mean() < 0.2  # mostly disjoint, as anchors are
    assert box_iou(gt[:0], anchors).shape == (0, 5000)


def test_integer_boxes_take_torchvision_s_path():
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15]])
    torch.testing.assert_close(box_iou(boxes, boxes), torchvision.ops.box_iou(boxes, boxes))


def test_detectors_match_with_it():
    for kind in ("fasterrcnn", "maskrcnn"):
        model = create_detector(kind, "botnet_mini", 3, fpn_channels=16)
        assert model.rpn.box_similarity is box_iou and model.roi_heads.box_similarity is box_iou
