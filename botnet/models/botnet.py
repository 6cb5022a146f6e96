"""The network: a torchvision-layout ResNet whose configured blocks are BoT blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.attention import MHSA, to_pair
from ..layers.blocks import BoTBlock, Bottleneck, _Residual, get_activation
from .config import ModelConfig

__all__ = ["BoTNet"]

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


class BoTNet(nn.Module):
    """ResNet / BoTNet image classifier or feature extractor.

    Module and parameter names are torchvision's ResNet names (conv1, bn1,
    layer1..layer4, fc), so a torchvision ResNet-50 state dict loads into the
    ResNet parts. Every BoT block's MHSA is built for the feature size it sees
    at ``img_size``; any other input size works too (see ``botnet.layers.MHSA``).

    Args:
        config: the architecture.
        num_classes: classifier outputs; 0 leaves the head as pooled features.
        in_chans: input image channels.
        img_size: the (H, W) (or one int) the position tables are built for.
        features_only: return the feature maps of ``out_indices`` instead of
            logits; the classifier and any stage after the last index are dropped.
        out_indices: feature levels for ``features_only``: 0 the stem (stride 2),
            1..4 the stages c2..c5. Default (1, 2, 3, 4).
        name: shown in error messages.
    """

    def __init__(
        self,
        config: ModelConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        name: str = "BoTNet",
    ) -> None:
        super().__init__()
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ConfigError(f"in_chans must be a positive int, got {in_chans!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be a non-negative int, got {num_classes!r}")
        self.config = config
        self.name = name
        self.in_chans = in_chans
        self.img_size = to_pair(img_size, "img_size")
        self.features_only = features_only
        act_layer = get_activation(config.act_layer)

        # c1, the stem. Registered in the order they run: torchvision's IntermediateLayerGetter (the FPN
        # backbone) calls the children in registration order.
        self.conv1, stem_stride, reduction = self._stem_convs(config, in_chans, act_layer)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        self.act1 = act_layer()
        pooled = config.stem in ("resnet", "tiered")
        self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pooled else nn.Identity()
        self.feature_info = [dict(num_chs=config.stem_width, reduction=stem_stride, module="act1")]

        # c2..c5. Track the feature size so each MHSA is built for the size it sees at img_size.
        height, width = (math.ceil(s / reduction) for s in self.img_size)
        channels = config.stem_width
        block_index, num_blocks = 0, config.num_blocks
        for stage_name, stage in zip(STAGE_NAMES, config.stages):
            blocks: list[nn.Module] = []
            for i in range(stage.depth):
                stride = stage.stride if i == 0 else 1
                drop_path = config.drop_path_rate * block_index / max(1, num_blocks - 1)
                blocks.append(self._block(config, stage, i, channels, (height, width), stride, act_layer, drop_path))
                channels = stage.out_channels
                height, width = math.ceil(height / stride), math.ceil(width / stride)
                block_index += 1
            reduction *= stage.stride
            setattr(self, stage_name, nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=stage_name))
        if config.num_features:  # a 1x1 conv to the head's width, part of c5's feature map
            self.final_conv = nn.Sequential(
                nn.Conv2d(channels, config.num_features, kernel_size=1, bias=False),
                nn.BatchNorm2d(config.num_features),
                act_layer(),
            )
            channels = config.num_features
            self.feature_info[-1] = dict(num_chs=channels, reduction=reduction, module="final_conv")
        self.num_features = channels

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.fc: nn.Module = nn.Linear(channels, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self._init_weights()

        self.out_indices = tuple(range(1, 5)) if out_indices is None else tuple(out_indices)
        if features_only:
            self._to_feature_extractor()
        elif out_indices is not None:
            raise ConfigError("out_indices only applies with features_only=True")
        # Convolution weights in channels_last: oneDNN (CPU) and cuDNN (GPU) then run every convolution
        # in their faster NHWC layout, whatever the input's layout (about 20% faster on CPU at 224 px).
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _stem_convs(config: ModelConfig, in_chans: int, act_layer) -> tuple[nn.Module, int, int]:
        """The stem's convolutions before its last BN and activation, the stride of their output
        and the stem's whole reduction (after any max-pool)."""
        width = config.stem_width
        if config.stem == "small":
            return nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False), 1, 1
        if config.stem == "resnet":
            return nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False), 2, 4
        # Tiered (timm's "tiered" stem): 3x3 convs of 3/8, 1/2 and all of the width; the first strides 2,
        # the last also strides 2 when there is no max-pool.
        first, second = 3 * width // 8, width // 2
        last_stride = 1 if config.stem == "tiered" else 2
        convs = nn.Sequential(
            nn.Conv2d(in_chans, first, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(first),
            act_layer(),
            nn.Conv2d(first, second, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(second),
            act_layer(),
            nn.Conv2d(second, width, kernel_size=3, stride=last_stride, padding=1, bias=False),
        )
        return convs, 2 * last_stride, 4

    @staticmethod
    def _block(config: ModelConfig, stage, index: int, channels: int, feat_size, stride: int, act_layer, drop_path):
        if stage.is_bot(index):
            return BoTBlock(
                channels,
                stage.width,
                feat_size=feat_size,
                stride=stride,
                act_layer=act_layer,
                heads=config.heads,
                position_encoding=config.position_encoding,
                scale_position=config.scale_position,
                drop_path=drop_path,
                out_channels=stage.out_channels,
                qk_head_dim=config.qk_head_dim or None,
                attn_impl=config.attn_impl,
            )
        return Bottleneck(
            channels,
            stage.width,
            stride,
            act_layer,
            se_ratio=config.se_ratio,
            drop_path=drop_path,
            out_channels=stage.out_channels,
            group_width=config.group_width,
            se_position=config.se_position,
            se_act=get_activation(config.se_act) if config.se_act else None,
            se_divisor=config.se_divisor,
            eca=config.eca,
        )

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation for the convolutions and norms ...
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # ... then the attention layers' own.
        for module in self.modules():
            if isinstance(module, MHSA):
                module.reset_parameters()
            if self.config.zero_init_last and isinstance(module, _Residual):
                module.zero_init_last()

    def _to_feature_extractor(self) -> None:
        if not self.out_indices or any(i not in range(5) for i in self.out_indices):
            raise ConfigError(f"out_indices must be drawn from 0 (stem) .. 4 (c5), got {self.out_indices}")
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ConfigError(f"out_indices must be increasing without repeats, got {self.out_indices}")
        last = self.out_indices[-1]
        for stage_name in STAGE_NAMES[last:]:
            delattr(self, stage_name)
        if last < 4 and hasattr(self, "final_conv"):
            del self.final_conv
        del self.avgpool, self.head_drop, self.fc
        self.feature_info = [self.feature_info[i] for i in self.out_indices]

    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, n) for n in STAGE_NAMES if hasattr(self, n)]

    @property
    def min_input_size(self) -> int:
        """The smallest height and width accepted: the network's total
        downsampling, so the last feature map has at least one pixel of image."""
        return self.config.reduction(len(self.stages))

    def _check_input(self, x: Tensor) -> None:
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: the checks go into the graph
            torch._assert(x.dim() == 4, f"{self.name} expects a 4-D (batch, channels, height, width) tensor")
            torch._assert(x.shape[1] == self.in_chans, f"{self.name} was built for {self.in_chans} input channels")
            smallest = self.min_input_size
            torch._assert(x.shape[2] >= smallest, f"{self.name} needs images of at least {smallest}x{smallest}")
            torch._assert(x.shape[3] >= smallest, f"{self.name} needs images of at least {smallest}x{smallest}")
            return
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name} expects a torch.Tensor of images, got {type(x).__name__}")
        if x.dim() != 4:
            hint = "; add the batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""
            raise ValueError(
                f"{self.name} expects a 4-D (batch, channels, height, width) tensor, got shape {tuple(x.shape)}{hint}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{self.name} expects floating-point images, got {x.dtype}; convert with "
                f"torchvision.transforms.v2.ToDtype(torch.float32, scale=True) or x.float() / 255"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.name} was built for {self.in_chans} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); convert the images or build the model with in_chans={x.shape[1]}"
            )
        smallest = self.min_input_size
        if x.shape[2] < smallest or x.shape[3] < smallest:
            raise ValueError(
                f"input of {x.shape[2]}x{x.shape[3]} pixels is too small for {self.name}: the smallest is "
                f"{smallest}x{smallest} (the network downsamples by {smallest})"
            )

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (B, in_chans, H, W) to the last feature map (B, num_features, H/32, W/32)."""
        self._check_input(x)
        x = self.maxpool(self.forward_stem(x))
        for stage in self.stages:
            x = stage(x)
        return self._final_conv(x)

    def _final_conv(self, x: Tensor) -> Tensor:
        return self.final_conv(x) if hasattr(self, "final_conv") else x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map to logits; ``pre_logits`` stops at the pooled features."""
        x = self.head_drop(self.avgpool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """The feature maps of ``out_indices`` (stem, c2..c5), shallow to deep."""
        self._check_input(x)
        x = self.forward_stem(x)
        features = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if index == 4:
                x = self._final_conv(x)
            if index in self.out_indices:
                features.append(x)
        return features

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one of ``num_classes`` outputs (0: none)."""
        if self.features_only:
            raise ConfigError("a features_only model has no classifier")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be a non-negative int, got {num_classes!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
