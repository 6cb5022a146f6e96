"""Named models: the paper's family as registry entries, and ``create_model``."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .botnet import BoTNet
from .config import ALL_BLOCKS, ModelConfig, StageConfig

__all__ = ["ModelEntry", "create_model", "get_model_entry", "list_models"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its architecture, the resolution it is built for and
    what the paper reports for it (for comparison tables; None where it gives nothing)."""

    config: ModelConfig
    img_size: int
    description: str
    paper_params_m: float | None = None
    paper_compute: str | None = None


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


def get_model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (botnet.list_models() lists all {len(_MODELS)})")
    return _MODELS[name]


def create_model(
    name: str,
    *,
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
        num_classes, in_chans: classifier outputs and input channels.
        img_size: the resolution the position tables are built for; default the
            model's own (224, or the paper's resolution for the T-model aliases).
            The model runs at any size regardless.
        features_only, out_indices: return feature maps instead of logits, see ``BoTNet``.
        **overrides: any ``ModelConfig`` setting (heads, position_encoding,
            scale_position, bot_blocks, depths, c5_stride, small_stem, se_ratio,
            act_layer, drop_rate, drop_path_rate, width_multiplier, stem_width,
            zero_init_last), e.g. ``create_model("botnet50", bot_blocks=(0, 0, 1, -1))``.
    """
    entry = get_model_entry(name)
    config = entry.config.with_overrides(**overrides) if overrides else entry.config
    return BoTNet(
        config,
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=entry.img_size if img_size is None else img_size,
        features_only=features_only,
        out_indices=out_indices,
        name=name,
    )
