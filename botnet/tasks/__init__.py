"""Jobs built on the models: image classification (train, evaluate, predict)."""

from .classification import EvalResult, TrainConfig, TrainingDiverged, evaluate, evaluate_checkpoint, predict, train
from .recipes import RECIPES, Recipe

__all__ = [
    "RECIPES",
    "EvalResult",
    "Recipe",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "evaluate_checkpoint",
    "predict",
    "train",
]
