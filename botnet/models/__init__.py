"""The model family: stage configs, the network, the registry of named variants."""

from .botnet import BoTNet
from .config import ALL_BLOCKS, ModelConfig, StageConfig
from .registry import ModelEntry, create_model, get_model_entry, list_models
from .summary import ModelSummary, summarize
from .weights import load_resnet_weights, read_state_dict

__all__ = [
    "ALL_BLOCKS",
    "BoTNet",
    "ModelConfig",
    "ModelEntry",
    "ModelSummary",
    "StageConfig",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_resnet_weights",
    "read_state_dict",
    "summarize",
]
