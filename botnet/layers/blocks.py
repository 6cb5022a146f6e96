"""Residual blocks: torchvision's ResNet bottleneck and the BoT block.

Parameter names follow torchvision's ``Bottleneck`` (conv1, bn1, conv2, bn2,
conv3, bn3, downsample.0, downsample.1) so that a torchvision ResNet state dict
loads into every ResNet block; the BoT block keeps the same names around the
MHSA that replaces conv2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from ..errors import ConfigError
from .attention import MHSA

__all__ = ["Bottleneck", "BoTBlock", "ECA", "ACTIVATIONS", "SE_POSITIONS", "get_activation", "se_channels"]

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


SE_POSITIONS = ("output", "mid")


def se_channels(channels: int, ratio: float, divisor: int = 1) -> int:
    """The squeezed width of a squeeze-excitation over ``channels``: ``channels * ratio`` rounded to
    the nearest multiple of ``divisor`` and at least ``divisor`` (timm rounds to multiples of 8)."""
    if divisor == 1:
        return max(1, round(channels * ratio))
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class ECA(nn.Module):
    """Efficient channel attention (Wang et al., "ECA-Net", CVPR 2020): global average pool, a 1-D
    convolution across channels, a sigmoid gate. The kernel size grows with log2(channels)
    (the paper's adaptive rule, gamma 2 and b 1: 3 for 64 channels, 5 for 128 to 2047)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        size = int(abs(math.log2(channels) + 1) / 2)
        size = max(size if size % 2 else size + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel_size=size, padding=size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv(x.mean((2, 3))[:, None, :]).sigmoid()  # (B, 1, C)
        return x * gate.view(x.shape[0], -1, 1, 1)


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
    with optional grouped 3x3 conv (ResNeXt), channel attention and stochastic depth.

    Squeeze-excitation (Hu et al. 2018) squeezes ``se_channels(C, se_ratio,
    se_divisor)`` of the C channels it gates: with ``se_position="output"`` the
    block output before the residual add (the T-models), with "mid" the 3x3
    conv's output (timm's byobnet blocks). ``eca`` gates the 3x3 conv's output
    with ECA instead.

    Args:
        out_channels: default ``4 * width``.
        group_width: channels per group of the 3x3 conv; 0 for one group.
        se_act: the squeeze's activation; default ``act_layer``.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        act_layer: Callable[[], nn.Module] = ACTIVATIONS["relu"],
        se_ratio: float = 0.0,
        drop_path: float = 0.0,
        *,
        out_channels: int | None = None,
        group_width: int = 0,
        se_position: str = "output",
        se_act: Callable[[], nn.Module] | None = None,
        se_divisor: int = 1,
        eca: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or width * EXPANSION
        if group_width and width % group_width:
            raise ConfigError(f"group_width={group_width} does not divide the bottleneck width {width}")
        if se_position not in SE_POSITIONS:
            raise ConfigError(f"unknown se_position {se_position!r}; choose one of {', '.join(SE_POSITIONS)}")
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        groups = width // group_width if group_width else 1
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se_position = se_position
        self.se: nn.Module | None = None
        if se_ratio > 0:
            gated = out_channels if se_position == "output" else width
            squeezed = se_channels(gated, se_ratio, se_divisor)
            self.se = SqueezeExcitation(gated, squeezed, activation=se_act or act_layer)
        self.eca = ECA(width) if eca else None
        self.act = act_layer()
        self.downsample = _shortcut(in_channels, out_channels, stride)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        if self.se is not None and self.se_position == "mid":
            out = self.se(out)
        if self.eca is not None:
            out = self.eca(out)
        out = self.bn3(self.conv3(out))
        if self.se is not None and self.se_position == "output":
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
        out_channels: default ``4 * width``.
        qk_head_dim: the MHSA's query/key head dim (default: the value head dim).
        attn_impl: the MHSA's ``impl`` (how attention is computed).
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
        *,
        out_channels: int | None = None,
        qk_head_dim: int | None = None,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"a BoT block downsamples by 1 or 2, got stride={stride}")
        out_channels = out_channels or width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.mhsa = MHSA(width, feat_size, heads, position_encoding, scale_position, qk_head_dim, attn_impl)
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
