"""Building blocks: the MHSA layer and the residual blocks."""

from .attention import (
    IMPLS,
    MHSA,
    POSITION_ENCODINGS,
    relative_logits,
    resize_position_table,
    restore_attention_impl,
    set_attention_impl,
)
from .blocks import ACTIVATIONS, ECA, SE_POSITIONS, BoTBlock, Bottleneck, get_activation, se_channels

__all__ = [
    "ACTIVATIONS",
    "IMPLS",
    "MHSA",
    "POSITION_ENCODINGS",
    "SE_POSITIONS",
    "BoTBlock",
    "Bottleneck",
    "ECA",
    "get_activation",
    "se_channels",
    "relative_logits",
    "resize_position_table",
    "restore_attention_impl",
    "set_attention_impl",
]
