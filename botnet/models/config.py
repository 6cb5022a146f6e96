"""The architecture as data: one small config per stage, one per model.

A BoTNet is a ResNet in which the last ``bot_blocks`` blocks of some stages are
BoT blocks (paper Sec. 3). Everything the paper ablates (where the BoT blocks
go, heads, position encoding, c5 stride) and the T-model additions (SE, SiLU,
dropout, stochastic depth) are fields here, so variants are data, not classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..layers.attention import POSITION_ENCODINGS
from ..layers.blocks import ACTIVATIONS

__all__ = ["ALL_BLOCKS", "StageConfig", "ModelConfig"]

ALL_BLOCKS = -1
"""``bot_blocks`` value meaning every block of the stage (stays true when depths change)."""


@dataclass(frozen=True)
class StageConfig:
    """One ResNet stage (c2..c5).

    Attributes:
        depth: number of blocks.
        width: bottleneck width; the stage outputs ``4 * width`` channels.
        stride: stride of the stage's first block (1 or 2).
        bot_blocks: how many of the stage's last blocks are BoT blocks;
            ``ALL_BLOCKS`` (-1) for all of them.
    """

    depth: int
    width: int
    stride: int
    bot_blocks: int = 0

    @property
    def num_bot_blocks(self) -> int:
        return self.depth if self.bot_blocks == ALL_BLOCKS else self.bot_blocks

    def is_bot(self, block_index: int) -> bool:
        return block_index >= self.depth - self.num_bot_blocks


@dataclass(frozen=True)
class ModelConfig:
    """A whole network: stem, four stages c2..c5 and the head.

    Attributes:
        stages: the four stages c2..c5.
        heads, position_encoding, scale_position: the MHSA of every BoT block.
        small_stem: a 3x3 stride-1 conv and no max-pool instead of the 7x7
            stride-2 conv and max-pool, for 32-pixel data (CIFAR-style).
        stem_width: channels of the stem.
        se_ratio: squeeze-excitation in the ResNet blocks (not the BoT
            blocks), squeezing ``se_ratio`` of the block's output channels;
            0 disables it (T-models: 0.0625).
        act_layer: "relu" or "silu" (T-models) or "gelu".
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over the blocks to
            this rate at the last block.
        zero_init_last: start each block's last BN at zero so a block starts
            as its shortcut (the TPU ResNet reference code BoTNet builds on).
    """

    stages: tuple[StageConfig, StageConfig, StageConfig, StageConfig]
    heads: int = 4
    position_encoding: str = "relative"
    scale_position: bool = True
    small_stem: bool = False
    stem_width: int = 64
    se_ratio: float = 0.0
    act_layer: str = "relu"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    zero_init_last: bool = True

    def reduction(self, stages: int = 4) -> int:
        """The downsampling after the stem and the first ``stages`` stages; with all four, the smallest input
        size the network accepts (its last feature map then has one pixel)."""
        reduction = 1 if self.small_stem else 4
        for stage in self.stages[:stages]:
            reduction *= stage.stride
        return reduction

    def __post_init__(self) -> None:
        if len(self.stages) != 4:
            raise ConfigError(f"a BoTNet has four stages (c2..c5), got {len(self.stages)}")
        for name, stage in zip(("c2", "c3", "c4", "c5"), self.stages):
            if stage.depth < 1:
                raise ConfigError(f"stage {name} needs at least one block, got depth={stage.depth}")
            if stage.width < 1:
                raise ConfigError(f"stage {name} needs a positive width, got {stage.width}")
            if stage.stride not in (1, 2):
                raise ConfigError(f"stage {name} stride must be 1 or 2, got {stage.stride}")
            if not (stage.bot_blocks == ALL_BLOCKS or 0 <= stage.bot_blocks <= stage.depth):
                raise ConfigError(
                    f"stage {name} has {stage.depth} blocks, so bot_blocks must be in 0..{stage.depth} "
                    f"or -1 (all), got {stage.bot_blocks}"
                )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ConfigError(
                f"unknown position_encoding {self.position_encoding!r}; choose one of {', '.join(POSITION_ENCODINGS)}"
            )
        if self.act_layer not in ACTIVATIONS:
            raise ConfigError(f"unknown act_layer {self.act_layer!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not isinstance(self.heads, int) or self.heads < 1:
            raise ConfigError(f"heads must be a positive int, got {self.heads!r}")
        for stage in self.stages:
            if stage.num_bot_blocks and stage.width % self.heads:
                raise ConfigError(
                    f"heads={self.heads} does not divide the attention width {stage.width} of a BoT stage; "
                    f"pick heads from its divisors"
                )
        for name in ("se_ratio", "drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def with_overrides(self, **overrides) -> ModelConfig:
        """A copy with some settings changed. Besides every field above:

        - ``bot_blocks``: four ints, BoT blocks at the end of c2..c5 (-1 = all);
          e.g. (0, 0, 0, -1) c5 only, (0, 0, 1, -1) also the last block of c4,
          (0, 0, -1, -1) all of c4 and c5.
        - ``depths``: four ints, blocks per stage.
        - ``c5_stride``: 1 (BoT-S1 models) or 2.
        - ``width_multiplier``: scales the stem and every stage width.
        """
        stage_keys = {"bot_blocks", "depths", "c5_stride", "width_multiplier"}
        field_names = {f.name for f in dataclasses.fields(self)} - {"stages"}
        unknown = set(overrides) - field_names - stage_keys
        if unknown:
            raise TypeError(
                f"unknown model setting(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(field_names | stage_keys))}"
            )
        stages = list(self.stages)
        stem_width = overrides.pop("stem_width", self.stem_width)
        for key, per_stage in (("bot_blocks", "bot_blocks"), ("depths", "depth")):
            if key in overrides:
                values = tuple(overrides.pop(key))
                if len(values) != 4:
                    raise ConfigError(f"{key} needs one value per stage c2..c5 (four), got {values!r}")
                stages = [dataclasses.replace(s, **{per_stage: int(v)}) for s, v in zip(stages, values)]
        if "c5_stride" in overrides:
            stages[3] = dataclasses.replace(stages[3], stride=int(overrides.pop("c5_stride")))
        if "width_multiplier" in overrides:
            mult = float(overrides.pop("width_multiplier"))
            if mult <= 0:
                raise ConfigError(f"width_multiplier must be positive, got {mult}")
            stages = [dataclasses.replace(s, width=max(1, round(s.width * mult))) for s in stages]
            stem_width = max(1, round(stem_width * mult))
        return dataclasses.replace(self, stages=tuple(stages), stem_width=stem_width, **overrides)
