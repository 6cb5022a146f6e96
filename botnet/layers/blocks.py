"""Residual blocks: torchvision's ResNet bottleneck and the BoT block.

Parameter names follow torchvision's ``Bottleneck`` (conv1, bn1, conv2, bn2,
conv3, bn3, downsample.0, downsample.1) so that a torchvision ResNet state dict
loads into every ResNet block; the BoT block keeps the same names around the
MHSA that replaces conv2.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from ..errors import ConfigError
from .attention import MHSA

__all__ = ["Bottleneck", "BoTBlock", "ACTIVATIONS", "get_activation"]

EXPANSION = 4

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
}


def get_activation(name: str) -> Callable[[], nn.Module]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """torchvision's projection shortcut (1x1 conv with the block's stride, then BN),
    or None where the identity fits. A stride-2 1x1 conv gives ceil(H/2) rows."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class _Residual(nn.Module):
    """Shared tail of both blocks: drop path on the residual branch, add the shortcut, activation."""

    bn3: nn.BatchNorm2d
    downsample: nn.Module | None
    drop_path: nn.Module
    act: nn.Module

    def _finish(self, x: Tensor, branch: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.drop_path(branch)
        out += shortcut  # in place, as torchvision: a fresh activation-sized tensor costs page faults
        return self.act(out)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero (the block starts as its shortcut),
        as the TPU ResNet reference code that BoTNet builds on does."""
        nn.init.zeros_(self.bn3.weight)


class Bottleneck(_Residual):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as torchvision builds it,
    with optional squeeze-excitation (T-models) and stochastic depth.

    SE (Hu et al. 2018) acts on the block output before the residual add and
    squeezes ``out_channels * se_ratio`` channels.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        act_layer: Callable[[], nn.Module] = ACTIVATIONS["relu"],
        se_ratio: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se = (
            SqueezeExcitation(out_channels, max(1, round(out_channels * se_ratio)), activation=act_layer)
            if se_ratio > 0
            else None
        )
        self.act = act_layer()
        self.downsample = _shortcut(in_channels, out_channels, stride)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self._finish(x, out)


class BoTBlock(_Residual):
    """Bottleneck Transformer block (paper Fig. 3 and 4): 1x1 conv, BN, act,
    MHSA, [2x2 average pool, stride 2], BN, act, 1x1 conv, BN, plus the
    shortcut, then act.

    Attention is not strided: where the block downsamples, a 2x2 average pool
    with stride 2 follows the MHSA. Its ``ceil_mode`` gives ceil(H/2) rows,
    the same as the strided 1x1 shortcut, so odd sizes line up (the last
    window averages the rows that exist).

    Args:
        feat_size: the (H, W) of this block's input map at the model's built
            resolution; the MHSA tables are made for it.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        feat_size: int | tuple[int, int],
        stride: int = 1,
        act_layer: Callable[[], nn.Module] = ACTIVATIONS["relu"],
        heads: int = 4,
        position_encoding: str = "relative",
        scale_position: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"a BoT block downsamples by 1 or 2, got stride={stride}")
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.mhsa = MHSA(width, feat_size, heads, position_encoding, scale_position)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = act_layer()
        self.downsample = _shortcut(in_channels, out_channels, stride)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.pool(self.mhsa(out))))
        out = self.bn3(self.conv3(out))
        return self._finish(x, out)
