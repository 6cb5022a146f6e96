"""The model family: stage configs, the network, the registry of named variants."""

from ..checkpoints import read_metadata, save_weights
from .botnet import BoTNet
from .config import ALL_BLOCKS, ModelConfig, StageConfig
from .pretrained import convert_timm_state_dict, imagenet_classes
from .registry import ModelEntry, PretrainedInfo, create_model, get_model_entry, list_models, list_pretrained
from .summary import ModelSummary, summarize
from .weights import load_resnet_weights, read_state_dict

__all__ = [
    "ALL_BLOCKS",
    "BoTNet",
    "ModelConfig",
    "ModelEntry",
    "ModelSummary",
    "PretrainedInfo",
    "StageConfig",
    "convert_timm_state_dict",
    "create_model",
    "get_model_entry",
    "imagenet_classes",
    "list_models",
    "list_pretrained",
    "load_resnet_weights",
    "read_metadata",
    "read_state_dict",
    "save_weights",
    "summarize",
]
