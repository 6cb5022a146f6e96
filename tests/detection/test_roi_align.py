"""botnet's multi-scale RoI-Align computes torchvision's, forward and backward, and the detectors use it."""

import pytest
import torch
import torchvision

from botnet.detection import create_detector
from botnet.detection.roi_align import MultiScaleRoIAlign, fpn_levels


def _inputs(images: int, channels: int, height: int, width: int, levels: int, rois: int, seed: int):
    """Features of an FPN over a padded batch, and boxes of every size: tiny, large, partly or wholly
    outside the image (RoI-Align's edge rules), in images of different sizes."""
    generator = torch.Generator().manual_seed(seed)
    features = {
        str(k): torch.randn(images, channels, -(-height // 2 ** (k + 2)), -(-width // 2 ** (k + 2)),
                            generator=generator, dtype=torch.float64, requires_grad=True)
        for k in range(levels)
    }  # fmt: skip
    shapes = [(height - 9 * i, width - 13 * i) for i in range(images)]
    boxes = []
    for _ in range(images):
        corner = torch.rand(rois, 2, generator=generator, dtype=torch.float64) * torch.tensor([width * 1.2, height * 1.2]) - 20
        size = torch.rand(rois, 2, generator=generator, dtype=torch.float64) ** 3 * torch.tensor([width, height]) + 0.1
        boxes.append(torch.cat([corner, corner + size], 1))
    return features, boxes, shapes


@pytest.mark.parametrize(
    "images, channels, height, width, levels, rois, output, ratio",
    [
        (4, 16, 128, 176, 4, 64, 7, 1),  # the demo's box pooling
        (4, 16, 128, 176, 4, 16, 14, 1),  # ... and its mask pooling
        (2, 8, 800, 1216, 4, 100, 7, 2),  # torchvision's sampling ratio, COCO-sized images
        (2, 8, 96, 64, 1, 30, 14, 2),  # one level
        (3, 8, 160, 224, 3, 0, 7, 1),  # no boxes
    ],
)
def test_equals_torchvision_forward_and_backward(images, channels, height, width, levels, rois, output, ratio):
    features, boxes, shapes = _inputs(images, channels, height, width, levels, rois, seed=rois + levels)
    names = list(features)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, output, ratio)(features, boxes, shapes)
    ours = MultiScaleRoIAlign(names, output, ratio)(features, boxes, shapes)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    if rois:
        grad = torch.randn_like(theirs)
        expected = torch.autograd.grad(theirs, list(features.values()), grad, allow_unused=True)
        got = torch.autograd.grad(ours, list(features.values()), grad, allow_unused=True)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g if g is not None else torch.zeros(()), e if e is not None else torch.zeros(()),
                                       rtol=0, atol=1e-12)  # fmt: skip


def test_bfloat16_features_are_sampled_in_float32_as_torchvision_s():
    features, boxes, shapes = _inputs(2, 8, 128, 176, 4, 20, seed=1)
    low = {name: f.detach().to(torch.bfloat16) for name, f in features.items()}
    boxes = [b.float() for b in boxes]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a detector's RoI heads run under --amp
        ours = MultiScaleRoIAlign(list(low), 7, 1)(low, boxes, shapes)
    # torchvision samples bfloat16 features in float32 too (then rounds the result back to bfloat16)
    theirs = torchvision.ops.MultiScaleRoIAlign(list(low), 7, 1)({k: f.float() for k, f in low.items()}, boxes, shapes)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)  # float32 sample coordinates, rounded differently


def test_levels_follow_fpn_equation_1():
    """A 224-px box is pooled from P4; each halving of its side goes one level down, within the levels there are."""
    boxes = torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 56, 56], [0, 0, 8, 8], [0, 0, 448, 448], [0, 0, 2000, 2000]])
    assert fpn_levels(boxes, 2, 5).tolist() == [2, 1, 0, 0, 3, 3]


def test_refuses_a_sampling_ratio_it_does_not_compute():
    with pytest.raises(ValueError, match="sampling_ratio must be a positive int, got 0"):
        MultiScaleRoIAlign(["0"], 7, 0)


@pytest.mark.parametrize("ratio", [1, 2])
def test_detectors_pool_with_it(ratio):
    model = create_detector("maskrcnn", "botnet_mini", 3, fpn_channels=16, roi_sampling_ratio=ratio)
    for pooler, size in ((model.roi_heads.box_roi_pool, 7), (model.roi_heads.mask_roi_pool, 14)):
        assert isinstance(pooler, MultiScaleRoIAlign)
        assert (pooler.output_size, pooler.sampling_ratio, pooler.featmap_names) == ((size, size), ratio, ["0", "1", "2", "3"])
