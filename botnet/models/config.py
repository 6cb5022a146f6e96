"""The architecture as data: one small config per stage, one per model.

A BoTNet is a ResNet in which some blocks of some stages are BoT blocks
(paper Sec. 3). Everything the paper ablates (where the BoT blocks go, heads,
position encoding, c5 stride), the T-model additions (SE, SiLU, dropout,
stochastic depth) and what timm's BoTNets add (tiered stems, grouped
convolutions, ECA, SE inside the block, narrower queries and keys, a final
1x1 conv) are fields here, so variants are data, not classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..layers.attention import IMPLS, POSITION_ENCODINGS
from ..layers.blocks import ACTIVATIONS, SE_POSITIONS

__all__ = ["ALL_BLOCKS", "STEMS", "StageConfig", "ModelConfig"]

ALL_BLOCKS = -1
"""``bot_blocks`` value meaning every block of the stage (stays true when depths change)."""

STEMS = {
    "resnet": "7x7 stride-2 conv, BN, act, 3x3 stride-2 max-pool (ResNet)",
    "small": "3x3 stride-1 conv, BN, act, no max-pool (for 32-pixel data)",
    "tiered": "3x3 convs of 3/8, 1/2 and all of stem_width channels, the first stride 2, then a max-pool (timm)",
    "tiered_nopool": "the tiered stem with its last conv stride 2 instead of the max-pool (timm)",
}


@dataclass(frozen=True)
class StageConfig:
    """One ResNet stage (c2..c5).

    Attributes:
        depth: number of blocks.
        width: bottleneck width; the stage outputs ``expansion * width`` channels.
        stride: stride of the stage's first block (1 or 2).
        bot_blocks: an int, how many of the stage's last blocks are BoT blocks
            (``ALL_BLOCKS``, -1, for all of them); or a tuple of the indices
            of the BoT blocks, for attention interleaved with convolutions
            (timm's botnet50ts: (1, 3, 5) of six).
        expansion: output channels per bottleneck channel (ResNet: 4).
    """

    depth: int
    width: int
    stride: int
    bot_blocks: int | tuple[int, ...] = 0
    expansion: int = 4

    @property
    def out_channels(self) -> int:
        return self.width * self.expansion

    @property
    def num_bot_blocks(self) -> int:
        if isinstance(self.bot_blocks, tuple):
            return len(self.bot_blocks)
        return self.depth if self.bot_blocks == ALL_BLOCKS else self.bot_blocks

    def is_bot(self, block_index: int) -> bool:
        if isinstance(self.bot_blocks, tuple):
            return block_index in self.bot_blocks
        return block_index >= self.depth - self.num_bot_blocks


@dataclass(frozen=True)
class ModelConfig:
    """A whole network: stem, four stages c2..c5 and the head.

    Attributes:
        stages: the four stages c2..c5.
        heads, position_encoding, scale_position: the MHSA of every BoT block.
        qk_head_dim: the MHSA's per-head query/key dim; 0: the value head
            dim, width / heads (the paper). timm's eca_botnext26ts: 16.
        stem: one of ``STEMS``: "resnet" (7x7 conv and max-pool), "small"
            (3x3 stride-1 conv, no max-pool, for 32-pixel data), "tiered" and
            "tiered_nopool" (timm's three 3x3 convs).
        stem_width: channels of the stem.
        group_width: channels per group of the ResNet blocks' 3x3 convs
            (ResNeXt); 0 for ordinary convs.
        se_ratio: squeeze-excitation in the ResNet blocks (not the BoT
            blocks), squeezing ``se_ratio`` of the gated channels; 0
            disables it (T-models: 0.0625).
        se_position: "output" (the block output, T-models) or "mid" (the
            3x3 conv's output, timm's sebotnet33ts).
        se_act: the activation inside SE; "" uses ``act_layer``.
        se_divisor: round the squeezed channels to multiples of this (timm: 8).
        eca: ECA on the ResNet blocks' 3x3 conv output (timm's eca_botnext26ts).
        num_features: a final 1x1 conv, BN and act to this many channels
            before pooling (timm's sebotnet33ts: 1280); 0 for none.
        act_layer: "relu" or "silu" (T-models) or "gelu".
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over the blocks to
            this rate at the last block.
        zero_init_last: start each block's last BN at zero so a block starts
            as its shortcut (the TPU ResNet reference code BoTNet builds on).
        attn_impl: how every MHSA computes attention: "auto", "fused",
            "probs", "one_call" or "reference" (same function, different speed,
            memory and visibility; see ``botnet.layers.attention``).
    """

    stages: tuple[StageConfig, StageConfig, StageConfig, StageConfig]
    heads: int = 4
    position_encoding: str = "relative"
    scale_position: bool = True
    qk_head_dim: int = 0
    stem: str = "resnet"
    stem_width: int = 64
    group_width: int = 0
    se_ratio: float = 0.0
    se_position: str = "output"
    se_act: str = ""
    se_divisor: int = 1
    eca: bool = False
    num_features: int = 0
    act_layer: str = "relu"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    zero_init_last: bool = True
    attn_impl: str = "auto"

    def reduction(self, stages: int = 4) -> int:
        """The downsampling after the stem and the first ``stages`` stages; with all four, the smallest input
        size the network accepts (its last feature map then has one pixel)."""
        reduction = 1 if self.stem == "small" else 4
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
            if stage.expansion < 1:
                raise ConfigError(f"stage {name} needs a positive expansion, got {stage.expansion}")
            if isinstance(stage.bot_blocks, tuple):
                if list(stage.bot_blocks) != sorted(set(stage.bot_blocks)) or not all(
                    0 <= i < stage.depth for i in stage.bot_blocks
                ):
                    raise ConfigError(
                        f"stage {name} has {stage.depth} blocks, so its BoT block indices must be increasing "
                        f"and in 0..{stage.depth - 1}, got {stage.bot_blocks}"
                    )
            elif not (stage.bot_blocks == ALL_BLOCKS or 0 <= stage.bot_blocks <= stage.depth):
                raise ConfigError(
                    f"stage {name} has {stage.depth} blocks, so bot_blocks must be in 0..{stage.depth} "
                    f"or -1 (all), got {stage.bot_blocks}"
                )
            if self.group_width and stage.num_bot_blocks < stage.depth and stage.width % self.group_width:
                raise ConfigError(
                    f"group_width={self.group_width} does not divide the width {stage.width} of stage {name}"
                )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ConfigError(
                f"unknown position_encoding {self.position_encoding!r}; choose one of {', '.join(POSITION_ENCODINGS)}"
            )
        for name, value in (("act_layer", self.act_layer), ("se_act", self.se_act or self.act_layer)):
            if value not in ACTIVATIONS:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.stem not in STEMS:
            raise ConfigError(f"unknown stem {self.stem!r}; choose one of {', '.join(STEMS)}")
        if self.attn_impl not in IMPLS:
            raise ConfigError(f"unknown attn_impl {self.attn_impl!r}; choose one of {', '.join(IMPLS)}")
        if self.se_position not in SE_POSITIONS:
            raise ConfigError(f"unknown se_position {self.se_position!r}; choose one of {', '.join(SE_POSITIONS)}")
        for name in ("qk_head_dim", "group_width", "num_features"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a non-negative int (0: off), got {getattr(self, name)!r}")
        if not isinstance(self.se_divisor, int) or self.se_divisor < 1:
            raise ConfigError(f"se_divisor must be a positive int, got {self.se_divisor!r}")
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
        """A copy with some settings changed: any field above except ``stages``, and:

        - ``bot_blocks``: one value per stage c2..c5, each an int (BoT blocks at
          the end of the stage, -1 = all) or a tuple of block indices; e.g.
          (0, 0, 0, -1) c5 only, (0, 0, 1, -1) also the last block of c4,
          (0, 0, -1, -1) all of c4 and c5, (0, (3,), (1, 3, 5), (1,)) interleaved.
        - ``depths``: four ints, blocks per stage.
        - ``c5_stride``: 1 (BoT-S1 models) or 2.
        - ``width_multiplier``: scales the stem and every stage width.
        - ``small_stem``: True is short for ``stem="small"``.
        """
        stage_keys = {"bot_blocks", "depths", "c5_stride", "width_multiplier", "small_stem"}
        field_names = {f.name for f in dataclasses.fields(self)} - {"stages"}
        unknown = set(overrides) - field_names - stage_keys
        if unknown:
            raise TypeError(
                f"unknown model setting(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(field_names | stage_keys))}"
            )
        stages = list(self.stages)
        stem_width = overrides.pop("stem_width", self.stem_width)
        if overrides.pop("small_stem", False):
            overrides["stem"] = "small"
        for key, per_stage in (("bot_blocks", "bot_blocks"), ("depths", "depth")):
            if key in overrides:
                values = tuple(overrides.pop(key))
                if len(values) != 4:
                    raise ConfigError(f"{key} needs one value per stage c2..c5 (four), got {values!r}")
                values = tuple(
                    tuple(int(i) for i in v) if key == "bot_blocks" and isinstance(v, (tuple, list)) else int(v)
                    for v in values
                )
                stages = [dataclasses.replace(s, **{per_stage: v}) for s, v in zip(stages, values)]
        if "c5_stride" in overrides:
            stages[3] = dataclasses.replace(stages[3], stride=int(overrides.pop("c5_stride")))
        if "width_multiplier" in overrides:
            mult = float(overrides.pop("width_multiplier"))
            if mult <= 0:
                raise ConfigError(f"width_multiplier must be positive, got {mult}")
            stages = [dataclasses.replace(s, width=max(1, round(s.width * mult))) for s in stages]
            stem_width = max(1, round(stem_width * mult))
        return dataclasses.replace(self, stages=tuple(stages), stem_width=stem_width, **overrides)
