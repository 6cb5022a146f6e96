import pytest
import torch
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from botnet.layers import BoTBlock, Bottleneck


@pytest.mark.parametrize("size", [(7, 7), (5, 8), (9, 3), (1, 1)])
def test_strided_bot_block_matches_shortcut_on_odd_sizes(size):
    block = BoTBlock(32, 16, feat_size=size, stride=2, heads=4).eval()
    out = block(torch.randn(2, 32, *size))
    expected = tuple((s + 1) // 2 for s in size)
    assert out.shape == (2, 64, *expected)
    assert block.downsample(torch.randn(2, 32, *size)).shape == out.shape


def test_pool_averages_only_existing_rows():
    """The ceil-mode window past the edge averages the rows that exist (no zero padding)."""
    block = BoTBlock(8, 8, feat_size=5, stride=2)
    pooled = block.pool(torch.full((1, 8, 5, 5), 3.0))
    assert pooled.shape == (1, 8, 3, 3)
    torch.testing.assert_close(pooled, torch.full_like(pooled, 3.0))


def test_bottleneck_matches_torchvision():
    """Same parameter names and the same function as torchvision's Bottleneck."""
    torch.manual_seed(0)
    downsample = torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1, 2, bias=False), torch.nn.BatchNorm2d(128))
    reference = TorchvisionBottleneck(64, 32, stride=2, downsample=downsample).eval()
    ours = Bottleneck(64, 32, stride=2).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 64, 9, 7)
    torch.testing.assert_close(ours(x), reference(x))


def test_bot_block_keeps_resnet_names_around_mhsa():
    names = set(BoTBlock(64, 32, feat_size=4, stride=2).state_dict())
    assert {"conv1.weight", "bn1.weight", "bn2.weight", "conv3.weight", "bn3.weight", "downsample.0.weight"} <= names
    assert "conv2.weight" not in names and "mhsa.qkv.weight" in names and "mhsa.rel_h" in names


def test_squeeze_excitation_and_drop_path():
    block = Bottleneck(64, 16, se_ratio=0.0625, drop_path=0.2)
    assert block.downsample is None
    assert block.se.fc1.out_channels == 4  # 64 output channels * 0.0625
    block.train()
    x = torch.randn(64, 64, 4, 4)
    with torch.no_grad():
        # With the residual branch dropped for a sample, the block is act(shortcut(x)) = relu(x).
        out = block(x)
        branch_dropped = sum(torch.equal(out[i], torch.relu(x[i])) for i in range(64))
    assert 0 < branch_dropped < 64
    block.eval()
    with torch.no_grad():
        assert not any(torch.equal(o, torch.relu(i)) for o, i in zip(block(x), x))


def test_bad_stride():
    with pytest.raises(ValueError, match="stride=3"):
        BoTBlock(8, 8, feat_size=4, stride=3)
