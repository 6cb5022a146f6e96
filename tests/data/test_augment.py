"""The training augmentation's two halves: parameters drawn per image, the warp applied per batch, checked
against torchvision's own per-image affine."""

import pytest
import torch
from torchvision.transforms import InterpolationMode, v2

from botnet.data.transforms import TrainAugment

MEAN, STD = (0.3,), (0.6,)


def _normalised(images):
    return (images.float() / 255 - MEAN[0]) / STD[0]


@pytest.mark.parametrize("turn, shift_x, shift_y, zoom", [(0, 0, 0, 1), (7.5, 0.1, -0.05, 1.08), (-10, -0.1, 0.1, 0.9)])
def test_the_batch_warp_is_torchvisions_affine(turn, shift_x, shift_y, zoom):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    augment = TrainAugment(32, MEAN, STD, crop=False)
    params = torch.tensor([[turn, shift_x, shift_y, zoom, 0.0]] * 3)
    ours = augment.batch(images, params)
    reference = v2.functional.affine(
        images.float() / 255, angle=turn, translate=[shift_x * 32, shift_y * 32], scale=zoom, shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
    )  # fmt: skip
    inside = reference.abs().sum(1) > 0  # torchvision's edge pixels differ by where "outside" starts
    expected = (reference - MEAN[0]) / STD[0]
    assert (ours - expected).abs().amax(1)[inside].max() < 1e-4
    assert ours.is_contiguous(memory_format=torch.channels_last)


def test_flips_mirror_only_the_images_drawn_for_them():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    augment = TrainAugment(8, MEAN * 3, STD * 3, crop=True)
    out = augment.batch(images, torch.tensor([[0, 0, 0, 1, 1.0], [0, 0, 0, 1, 0.0]]))
    assert torch.allclose(out[0], _normalised(images[0]).flip(-1)) and torch.allclose(out[1], _normalised(images[1]))


def test_per_image_parameters_follow_the_generator_and_the_settings():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    crop = TrainAugment(24, MEAN * 3, STD * 3, crop=True, crop_scale_min=0.5)
    torch.manual_seed(1)
    first = crop(image)
    torch.manual_seed(1)
    again = crop(image)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # the sample's seed decides
    assert first[0].shape == (3, 24, 24) and first[0].dtype == torch.uint8
    jitter = TrainAugment(24, MEAN, STD, crop=False)
    draws = torch.stack([jitter(image[:1])[1] for _ in range(200)])
    assert draws[:, 0].abs().max() <= 10 and draws[:, 1:3].abs().max() <= 0.1
    assert 0.9 <= draws[:, 3].min() and draws[:, 3].max() <= 1.1 and draws[:, 4].eq(0).all()  # no flips by default
    assert draws[:, 0].std() > 3  # spread over the range, not fixed
    flips = torch.stack([crop(image)[1][4] for _ in range(200)])
    assert 60 < int(flips.sum()) < 140
    whole = TrainAugment(16, MEAN, STD, crop=False)(image[:1])[0]
    assert torch.equal(whole, v2.functional.resize(image[:1], [16, 16], antialias=True))  # the whole image resized
