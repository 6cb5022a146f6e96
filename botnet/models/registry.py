"""Named models: the paper's family as registry entries, and ``create_model``."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from .botnet import BoTNet
from .config import ALL_BLOCKS, ModelConfig, StageConfig
from .pretrained import check_weights_meta, hub_weights_file, imagenet_classes, load_pretrained, read_pretrained

__all__ = ["ModelEntry", "PretrainedInfo", "create_model", "get_model_entry", "list_models", "list_pretrained"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedInfo:
    """Published ImageNet-1k weights of a registered model and how their images were prepared.

    Attributes:
        hub_id: the Hugging Face Hub repository ("timm/NAME.TAG"); its model.safetensors holds them.
        top1: ImageNet-1k top-1 reported for them at ``img_size`` (percent).
        crop_fraction: evaluation resizes to img_size / crop_fraction (rounded down), then centre-crops.
    """

    hub_id: str
    top1: float
    crop_fraction: float = 0.95
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.hub_id}/resolve/main/model.safetensors"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its architecture, the resolution it is built for,
    what the paper reports for it (for comparison tables; None where it gives
    nothing) and its published weights, if any."""

    config: ModelConfig
    img_size: int
    description: str
    paper_params_m: float | None = None
    paper_compute: str | None = None
    pretrained: PretrainedInfo | None = None


def _resnet(depths: tuple[int, int, int, int], bot_c5: bool = False, c5_stride: int = 2, **kwargs) -> ModelConfig:
    widths, strides = (64, 128, 256, 512), (1, 2, 2, c5_stride)
    bot = (0, 0, 0, ALL_BLOCKS if bot_c5 else 0)
    stages = tuple(StageConfig(d, w, s, b) for d, w, s, b in zip(depths, widths, strides, bot))
    return ModelConfig(stages=stages, **kwargs)  # type: ignore[arg-type]


# T-models (paper Sec. 4.8, Table 7): BoT blocks in all of a stride-1 c5, SE in the
# ResNet blocks, SiLU, dropout before the logits and stochastic depth. The paper gives
# no per-model dropout or drop-path rates; these are ResNet-RS-style defaults, overridable.
_T_MODEL = dict(bot_c5=True, c5_stride=1, se_ratio=0.0625, act_layer="silu", drop_rate=0.25, drop_path_rate=0.1)

_MODELS: dict[str, ModelEntry] = {
    "resnet50": ModelEntry(_resnet((3, 4, 6, 3)), 224, "torchvision ResNet-50 (v1.5), the baseline", 25.5, "3.86G M.Adds @224"),
    "botnet50": ModelEntry(
        _resnet((3, 4, 6, 3), bot_c5=True), 224, "BoT50: ResNet-50 with BoT blocks in c5", 20.8, "3.79G M.Adds @224"
    ),
    "botnet50_s1": ModelEntry(
        _resnet((3, 4, 6, 3), bot_c5=True, c5_stride=1), 224, "BoT-S1-50: BoT50 with a stride-1 c5", 20.8,
        "4.27G M.Adds @224",
    ),
    "botnet101": ModelEntry(_resnet((3, 4, 23, 3), bot_c5=True), 224, "BoT101, detection backbone"),
    "botnet152": ModelEntry(_resnet((3, 8, 36, 3), bot_c5=True), 224, "BoT152, detection backbone"),
    "botnet200": ModelEntry(_resnet((3, 24, 36, 3), bot_c5=True), 224, "BoT200, detection backbone"),
    # Not in the paper: a CPU-sized BoTNet for small data (the `botnet train` default). 3x3 stem, a
    # quarter of the widths, BoT blocks in the last block of c4 and all of c5 (6x6 and 3x3 maps at 24 px).
    "botnet_tiny": ModelEntry(
        _resnet((1, 1, 2, 2), bot_c5=True).with_overrides(small_stem=True, width_multiplier=0.25, bot_blocks=(0, 0, 1, -1)),
        24,
        "tiny BoTNet for small images on a CPU (not in the paper)",
    ),
    # Not in the paper: a CPU-sized detection backbone (the `botnet detect train` default). ResNet stem,
    # half the widths, depths 1-1-2-1, BoT blocks in c5.
    "botnet_mini": ModelEntry(
        _resnet((1, 1, 2, 1), bot_c5=True).with_overrides(width_multiplier=0.5),
        128,
        "mini BoTNet: a detection backbone for a CPU (not in the paper)",
    ),
    "botnet_s1_59": ModelEntry(_resnet((3, 4, 6, 6), **_T_MODEL), 224, "BoT-S1-59 (T3 at 224)", 33.5, "7.3 GFLOPs @224"),
    "botnet_s1_77": ModelEntry(_resnet((3, 4, 6, 12), **_T_MODEL), 224, "BoT-S1-77 (T6 at 320)", 53.9),
    "botnet_s1_110": ModelEntry(_resnet((3, 4, 23, 6), **_T_MODEL), 224, "BoT-S1-110 (T4 at 224)", 54.7, "10.9 GFLOPs @224"),
    "botnet_s1_128": ModelEntry(_resnet((3, 4, 23, 12), **_T_MODEL), 224, "BoT-S1-128 (T5 at 256, T7 at 384)", 75.1),
}

# timm's BoTNets (Wightman, pytorch-image-models), under timm's names so that their ImageNet weights load
# exactly. Not the paper's models: a tiered 3-conv stem, the position term unscaled (timm's default), and
# attention blocks interleaved with bottlenecks. Built for 256 px (timm only runs them at that size).
def _timm_stages(depths, bot_blocks, expansion_c5: int = 4) -> tuple[StageConfig, ...]:
    widths, expansions = (64, 128, 256, 512), (4, 4, 4, expansion_c5)
    return tuple(StageConfig(d, w, 1 if i == 0 else 2, b, e) for i, (d, w, b, e) in enumerate(zip(depths, widths, bot_blocks, expansions)))  # fmt: skip


_TIMM = dict(stem="tiered", scale_position=False)
_26T = _timm_stages((2, 2, 2, 2), (0, 0, 1, ALL_BLOCKS))
_MODELS.update(
    botnet26t_256=ModelEntry(
        ModelConfig(_26T, **_TIMM), 256, "timm's BoTNet-26T: ResNet-26 with BoT blocks in c4 (last) and c5",
        pretrained=PretrainedInfo("timm/botnet26t_256.c1_in1k", 79.26),
    ),
    sebotnet33ts_256=ModelEntry(
        ModelConfig(
            _timm_stages((2, 3, 3, 2), (0, (2,), (2,), ALL_BLOCKS), expansion_c5=3), **{**_TIMM, "stem": "tiered_nopool"},
            act_layer="silu", se_ratio=1 / 16, se_position="mid", se_act="relu", se_divisor=8, num_features=1280,
        ),
        256, "timm's SE-BoTNet-33TS: SE, SiLU, BoT blocks every third in c3 and c4, all of c5, a final 1x1 conv",
        pretrained=PretrainedInfo("timm/sebotnet33ts_256.a1h_in1k", 81.16, crop_fraction=0.94),
    ),
    eca_botnext26ts_256=ModelEntry(
        ModelConfig(_26T, **_TIMM, act_layer="silu", group_width=16, eca=True, qk_head_dim=16), 256,
        "timm's ECA-BoTNeXt-26TS: grouped 3x3 convs (16 per group), ECA, SiLU, 16-dim queries and keys",
        pretrained=PretrainedInfo("timm/eca_botnext26ts_256.c1_in1k", 79.26),
    ),
    botnet50ts_256=ModelEntry(
        ModelConfig(_timm_stages((3, 4, 6, 3), (0, (3,), (1, 3, 5), (1,))), **_TIMM, act_layer="silu"), 256,
        "timm's BoTNet-50TS: ResNet-50 depths, BoT blocks interleaved in c3..c5 (no published weights)",
    ),
)  # fmt: skip

# The paper's T-models: a network and the resolution it was trained at.
_ALIASES: dict[str, tuple[str, int, str | None]] = {
    "botnet_t3": ("botnet_s1_59", 224, "7.3 GFLOPs @224"),
    "botnet_t4": ("botnet_s1_110", 224, "10.9 GFLOPs @224"),
    "botnet_t5": ("botnet_s1_128", 256, None),
    "botnet_t6": ("botnet_s1_77", 320, None),
    "botnet_t7_320": ("botnet_s1_128", 320, None),
    "botnet_t7": ("botnet_s1_128", 384, "45.8 GFLOPs @384"),
}
for _alias, (_target, _size, _compute) in _ALIASES.items():
    _base = _MODELS[_target]
    _MODELS[_alias] = ModelEntry(
        _base.config, _size, f"{_alias[7:].upper()}: {_target} at {_size}", _base.paper_params_m, _compute
    )


def list_models(pattern: str = "") -> list[str]:
    """Names of every registered model (aliases included) containing ``pattern``."""
    return [name for name in _MODELS if pattern in name]


def list_pretrained() -> list[str]:
    """Names of the registered models with published ImageNet weights."""
    return [name for name, entry in _MODELS.items() if entry.pretrained is not None]


def get_model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (botnet.list_models() lists all {len(_MODELS)})")
    return _MODELS[name]


def create_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | tuple[int, int] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides,
) -> BoTNet:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        pretrained: True for the model's published ImageNet weights
            (``list_pretrained()``; from the Hugging Face Hub through
            huggingface_hub, its cache used offline), or the path of a weights
            file: timm's checkpoint of this model (``.safetensors``, ``.pth`` or
            ``.bin``) or one of ours (``botnet convert`` or ``botnet train``
            output). Every tensor is loaded except the classifier when
            ``num_classes`` differs (it starts fresh, for fine-tuning).
            ``model.pretrained_cfg`` then says what was loaded and how the
            weights' images were prepared (mean, std, interpolation, crop
            fraction, class names).
        num_classes, in_chans: classifier outputs and input channels (a
            one-channel model takes the sum of pretrained RGB stem filters).
        img_size: the resolution the position tables are built for; default the
            weights' or the model's own (224, or the paper's resolution for the
            T-model aliases). The model runs at any size regardless.
        features_only, out_indices: return feature maps instead of logits, see ``BoTNet``.
        **overrides: changes to the entry's ``ModelConfig``, e.g.
            ``create_model("botnet50", bot_blocks=(0, 0, 1, -1))``; another
            name raises TypeError. Every one (``ModelConfig.with_overrides``):

            - heads: attention heads of every MHSA (paper: 4).
            - position_encoding: "relative" (paper), "relative_only",
              "absolute" or "none", the paper's position-encoding ablation.
            - scale_position: scale q by d^-0.5 in the position term as well
              (the authors' code; timm's BoTNets: False).
            - qk_head_dim: per-head query/key dim; 0 for the value head dim
              width / heads (paper; timm's eca_botnext26ts: 16).
            - attn_impl: how every MHSA computes attention ("auto", "fused",
              "probs", "one_call", "reference"): speed and memory, same function.
            - bot_blocks: per stage c2..c5, how many last blocks are BoT blocks
              (-1: all) or a tuple of their indices.
            - depths: four ints, blocks per stage.
            - c5_stride: 1 (the paper's BoT-S1 models, Sec. 4) or 2.
            - width_multiplier: scales the stem and every stage width.
            - stem: "resnet", "small", "tiered" or "tiered_nopool" (``STEMS``).
            - small_stem: True is short for ``stem="small"``.
            - stem_width: channels of the stem.
            - group_width: channels per group of the ResNet blocks' 3x3 convs
              (ResNeXt); 0 for ordinary convs.
            - se_ratio: squeeze-excitation in the ResNet blocks, squeezing to
              this fraction of the channels; 0 for none (T-models, Sec. 4.8: 0.0625).
            - se_position: "output" (the block's output, T-models) or "mid"
              (the 3x3 conv's output, timm's sebotnet33ts).
            - se_act: the activation inside SE; "" for ``act_layer``.
            - se_divisor: round the squeezed channels to multiples of this.
            - eca: ECA on the ResNet blocks' 3x3 conv output (timm's eca_botnext26ts).
            - num_features: a final 1x1 conv, BN and act to this many channels
              before pooling; 0 for none (timm's sebotnet33ts: 1280).
            - act_layer: "relu", "silu" (T-models) or "gelu".
            - drop_rate: dropout before the classifier (T-models).
            - drop_path_rate: stochastic depth, rising linearly over the blocks
              to this rate (T-models).
            - zero_init_last: start each block's last BN at zero, so a block
              starts as its shortcut.
    """
    entry = get_model_entry(name)
    config = entry.config.with_overrides(**overrides) if overrides else entry.config
    state = meta = None
    if pretrained is not False:
        path = _pretrained_path(name, entry, pretrained)
        state, meta = read_pretrained(path)
        if meta is not None:
            check_weights_meta(meta, name, path)
    if img_size is None:
        img_size = meta["img_size"] if meta is not None and "img_size" in meta else entry.img_size
    model = BoTNet(
        config,
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        features_only=features_only,
        out_indices=out_indices,
        name=name,
    )
    if state is not None:
        try:
            record = load_pretrained(model, state, path)
        except CheckpointError as error:
            raise CheckpointError(f"{error}{_which_model(state, name)}") from None
        model.pretrained_cfg = {**_preprocessing(entry, meta), **record}
    return model


def _which_model(state: dict[str, Tensor], tried: str) -> str:
    """'; it holds NAME weights: ...' when another model with published weights fits ``state``."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("fc.")}
    for name in list_pretrained():
        if name != tried:
            with torch.device("meta"):  # no memory, no initialisation work
                candidate = create_model(name, num_classes=0)
            if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
                return f"; it holds {name} weights: create_model({name!r}, pretrained=PATH)"
    return ""


def _pretrained_path(name: str, entry: ModelEntry, pretrained: bool | str | os.PathLike) -> str:
    if pretrained is True:
        if entry.pretrained is None:
            raise ConfigError(
                f"{name} has no published weights (models with them: {', '.join(list_pretrained())}); "
                f"pass pretrained=PATH for a weights file of your own"
            )
        return hub_weights_file(name, entry.pretrained.hub_id, entry.pretrained.url)
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(f"pretrained must be True, False or a path, got {pretrained!r}")
    return os.fspath(pretrained)


def _preprocessing(entry: ModelEntry, meta: dict[str, Any] | None) -> dict[str, Any]:
    """How the weights' training images were prepared: from the file's metadata, else (a timm file)
    from the published weights' record."""
    if meta is not None:
        keys = ("img_size", "classes", "mean", "std", "crop", "interpolation", "crop_fraction", "dataset")
        return {k: meta[k] for k in keys if k in meta}
    if entry.pretrained is None:
        return {}
    info = entry.pretrained
    return dict(
        img_size=entry.img_size, classes=imagenet_classes(), mean=list(info.mean), std=list(info.std), crop=True,
        interpolation=info.interpolation, crop_fraction=info.crop_fraction, dataset="imagenet-1k", hub_id=info.hub_id,
    )  # fmt: skip
