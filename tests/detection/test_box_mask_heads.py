"""Mask R-CNN trained on BoxMasks crops and matched with botnet's box IoU: the losses and gradients of
torchvision's Mask R-CNN on the dense masks, and dense masks still train as torchvision's."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from botnet.data.box_masks import BoxMasks
from botnet.detection.box_mask_heads import BoxMaskRoIHeads
from botnet.detection.models import create_detector

H, W = 96, 128


def _targets(count: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand((count, 2), generator=generator) * torch.tensor([W - 30, H - 30])
    boxes = torch.cat([corner, corner + 8 + torch.rand((count, 2), generator=generator) * 22], 1).floor()
    masks = torch.zeros((count, H, W), dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):  # a triangle in each box
        rows = torch.arange(y1, y2)[:, None]
        masks[k, y1:y2, x1:x2] = (torch.arange(x1, x2)[None] - x1) * (y2 - y1) <= (rows - y1 + 1) * (x2 - x1)
    return {"boxes": boxes.double(), "labels": torch.randint(1, 3, (count,), generator=generator), "masks": masks}


def _torchvision_twin(model):
    """The same modules and weights as torchvision's own Mask R-CNN classes and box IoU."""
    twin = copy.deepcopy(model)
    twin.transform.__class__, twin.roi_heads.__class__ = GeneralizedRCNNTransform, RoIHeads
    twin.rpn.box_similarity = twin.roi_heads.box_similarity = torchvision.ops.box_iou
    return twin


@pytest.mark.parametrize("min_size, max_size", [(H, W), (144, 192)])
def test_losses_and_gradients_on_crops_equal_torchvision_s_on_dense_masks(min_size, max_size):
    """At the images' own size the two are equal; resized 1.5x, every loss but the mask loss is equal and
    the mask loss differs by what sampling the crops instead of nearest-resized masks changes."""
    torch.manual_seed(0)
    ours = create_detector("maskrcnn", "botnet_mini", 3, min_size=min_size, max_size=max_size, fpn_channels=16,
                           box_head_width=32, mask_head_width=8).double().train()  # fmt: skip
    assert isinstance(ours.roi_heads, BoxMaskRoIHeads)
    reference = _torchvision_twin(ours)
    images = [torch.rand(3, H, W, dtype=torch.float64) for _ in range(2)]
    targets = [_targets(6, 1), _targets(11, 2)]
    crops = [dict(t, masks=BoxMasks.from_dense(t["masks"])) for t in targets]
    torch.manual_seed(1)
    expected = reference(images, [dict(t) for t in targets])
    torch.manual_seed(1)
    got = ours(images, crops)
    assert list(got) == list(expected)
    for name in expected:
        if name == "loss_mask" and min_size != H:
            assert got[name].item() == pytest.approx(expected[name].item(), rel=0.05)
        else:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12)
    if min_size == H:
        sum(got.values()).backward()
        sum(expected.values()).backward()
        for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-10, msg=name)


def test_dense_masks_still_train_as_torchvision_s():
    torch.manual_seed(0)
    ours = create_detector("maskrcnn", "botnet_mini", 3, min_size=144, max_size=192, fpn_channels=16).double().train()
    reference = _torchvision_twin(ours)
    images = [torch.rand(3, H, W, dtype=torch.float64)]
    torch.manual_seed(1)
    expected = reference(images, [_targets(5, 3)])
    torch.manual_seed(1)
    got = ours(images, [_targets(5, 3)])
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)


def test_an_image_without_objects_trains_on_crops():
    model = create_detector("maskrcnn", "botnet_mini", 3, min_size=H, max_size=W, fpn_channels=16).train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": BoxMasks.from_dense(torch.zeros((0, H, W), dtype=torch.uint8))}  # fmt: skip
    losses = model([torch.rand(3, H, W)], [empty])
    assert losses["loss_mask"].item() == 0 and torch.isfinite(sum(losses.values()))
