"""Any registered model as a torchvision FPN backbone.

The paper (Sec. 4.1, Table 3) evaluates BoTNet as the backbone of Mask R-CNN
with FPN: c2..c5 feed the pyramid, c1..c4 start from an ImageNet-trained
ResNet-50 and the BoT blocks (c5) from scratch. torchvision's
``BackboneWithFPN`` does the rest; attention runs at whatever size the
detector's transform produces (see ``botnet.layers.MHSA``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import ConfigError
from ..layers.blocks import BoTBlock
from ..models import BoTNet, create_model, load_resnet_weights

__all__ = ["DETECTION_IMG_SIZE", "botnet_fpn_backbone", "replace_batch_norm"]

DETECTION_IMG_SIZE = 1024  # the paper trains and evaluates BoT50 detectors at 1024 x 1024
TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


def replace_batch_norm(
    module: nn.Module, norm_layer: Callable[[int], nn.Module], skip: tuple[type[nn.Module], ...] = ()
) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` in ``module`` for ``norm_layer(num_features)``,
    keeping the affine parameters and running statistics where the new layer has them
    (FrozenBatchNorm2d does), except inside submodules of the ``skip`` types.
    Returns ``module``, changed in place."""
    for name, child in module.named_children():
        if isinstance(child, skip):
            continue
        if isinstance(child, nn.BatchNorm2d):
            new = norm_layer(child.num_features)
            own = new.state_dict()
            state = {k: v for k, v in child.state_dict().items() if k in own and own[k].shape == v.shape}
            new.load_state_dict(state, strict=False)
            setattr(module, name, new)
        else:
            replace_batch_norm(child, norm_layer, skip)
    return module


def _frozen_bot_stages(model: BoTNet, trainable: Sequence[str]) -> list[str]:
    stages = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if name not in trainable and hasattr(model, name):
            if any(isinstance(m, BoTBlock) for m in getattr(model, name).modules()):
                stages.append(name)
    return stages


def botnet_fpn_backbone(
    name: str,
    *,
    trainable_layers: int | None = None,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    norm_layer: Callable[[int], nn.Module] | None = None,
    backbone_weights: Mapping[str, Tensor] | str | os.PathLike | None = None,
    out_channels: int = 256,
    img_size: int | tuple[int, int] = DETECTION_IMG_SIZE,
    **model_overrides,
) -> BackboneWithFPN:
    """A registered model (``botnet list``) as a torchvision ``BackboneWithFPN``.

    The result also has ``feature_strides``: the stride of each pyramid level
    (the returned stages' ``feature_info`` reductions, then the extra level's).

    Args:
        name: the model, e.g. "botnet50" or "resnet50".
        trainable_layers: how many stages, counted from c5 back to the stem, get
            gradients (0..5, torchvision's convention). Default 3 with
            ``backbone_weights`` and 5 (everything) without. Stages holding BoT
            blocks cannot be frozen: those start from scratch.
        returned_layers: stages feeding the FPN, 1 (c2) .. 4 (c5). A max-pooled
            extra level (P6) is added after the last, as in torchvision.
        norm_layer: replaces the model's BatchNorm2d layers. Default
            ``FrozenBatchNorm2d`` with ``backbone_weights`` (torchvision's choice for
            pretrained backbones at small per-device batches), else ``nn.BatchNorm2d``.
            Frozen norms go only where pretrained weights are: BoT blocks, which
            start from scratch, keep trainable BatchNorm2d.
        backbone_weights: a torchvision ResNet state dict, or a path to one (torch
            or safetensors, read without unpickling code). It initialises the stem
            and every non-BoT block; nothing is downloaded.
        out_channels: FPN channels.
        img_size: the size the attention's position tables are built for; other
            sizes interpolate them. Default 1024 (the paper's detection size).
        **model_overrides: model settings, as for ``botnet.create_model``
            (e.g. ``width_multiplier=0.25``, ``bot_blocks=(0, 0, 1, -1)``).
    """
    returned = tuple(returned_layers)
    if not returned or any(i not in (1, 2, 3, 4) for i in returned) or list(returned) != sorted(set(returned)):
        raise ConfigError(f"returned_layers must be increasing stage numbers from 1 (c2) to 4 (c5), got {returned}")
    if trainable_layers is not None and (not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= 5):
        raise ConfigError(f"trainable_layers must be an int in 0..5, got {trainable_layers!r}")
    if trainable_layers is None:
        trainable_layers = 3 if backbone_weights is not None else 5
    elif backbone_weights is None and trainable_layers != 5:
        raise ConfigError(
            f"trainable_layers={trainable_layers} freezes randomly initialised stages; it only applies with "
            f"backbone_weights (without them every stage trains, trainable_layers=5)"
        )
    if not isinstance(out_channels, int) or out_channels < 1:
        raise ConfigError(f"out_channels must be a positive int, got {out_channels!r}")

    model = create_model(name, num_classes=0, img_size=img_size, **model_overrides)
    if backbone_weights is not None:
        load_resnet_weights(model, backbone_weights)
    trainable = list(TRAINABLE_ORDER[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    if "layer4" in trainable:
        trainable.append("final_conv")  # part of c5 in the models that have one
    frozen_bot = _frozen_bot_stages(model, trainable)
    if frozen_bot:
        raise ConfigError(
            f"trainable_layers={trainable_layers} would freeze {', '.join(frozen_bot)} of {name}, which holds BoT "
            f"blocks that start from scratch; raise trainable_layers to at least "
            f"{TRAINABLE_ORDER.index(frozen_bot[0]) + 1}"
        )
    if norm_layer is None:
        norm_layer = FrozenBatchNorm2d if backbone_weights is not None else nn.BatchNorm2d
    if norm_layer is not nn.BatchNorm2d:
        replace_batch_norm(model, norm_layer, skip=(BoTBlock,) if norm_layer is FrozenBatchNorm2d else ())
    for param_name, param in model.named_parameters():
        if not param_name.startswith(tuple(trainable)):
            param.requires_grad_(False)

    levels = [model.feature_info[i] for i in returned]  # c5's module is final_conv in the models that have one
    return_layers = {level["module"]: str(k) for k, level in enumerate(levels)}
    in_channels = [level["num_chs"] for level in levels]
    fpn = BackboneWithFPN(model, return_layers, in_channels, out_channels, extra_blocks=LastLevelMaxPool())
    # The pyramid's strides, for anchor sizes: the returned stages' reductions, then the max-pooled extra level.
    strides = [level["reduction"] for level in levels]
    fpn.feature_strides = (*strides, 2 * strides[-1])
    return fpn
