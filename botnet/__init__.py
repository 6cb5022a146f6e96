"""BoTNet: Bottleneck Transformers (Srinivas et al., CVPR 2021) for PyTorch."""

from . import layers
from .errors import BotnetError, CheckpointError, ConfigError, DatasetError, RunFailed, RunInterrupted, TrainingDiverged
from .layers import MHSA
from .models import (
    BoTNet,
    ModelConfig,
    StageConfig,
    create_model,
    list_models,
    list_pretrained,
    load_resnet_weights,
    summarize,
)

__version__ = "0.1.0"

__all__ = [
    "MHSA",
    "BoTNet",
    "BotnetError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "RunFailed",
    "RunInterrupted",
    "TrainingDiverged",
    "ModelConfig",
    "StageConfig",
    "create_model",
    "layers",
    "list_models",
    "list_pretrained",
    "load_resnet_weights",
    "summarize",
]
