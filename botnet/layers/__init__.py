"""Building blocks: the MHSA layer and the residual blocks."""

from .attention import MHSA, POSITION_ENCODINGS, relative_logits, resize_position_table
from .blocks import ACTIVATIONS, BoTBlock, Bottleneck, get_activation

__all__ = [
    "ACTIVATIONS",
    "MHSA",
    "POSITION_ENCODINGS",
    "BoTBlock",
    "Bottleneck",
    "get_activation",
    "relative_logits",
    "resize_position_table",
]
