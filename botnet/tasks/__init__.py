"""Jobs built on the models: image classification and detection (train, evaluate, predict), and
``TASKS``: each task's spec by the name its checkpoints record, for the commands that take any checkpoint."""

from .classification import (
    Classification,
    EvalResult,
    TrainConfig,
    TrainingDiverged,
    evaluate,
    evaluate_checkpoint,
    predict,
    train,
)
from .detection import Detection
from .recipes import RECIPES, Recipe

TASKS = {task.name: task for task in (Classification, Detection)}

__all__ = [
    "Classification",
    "Detection",
    "RECIPES",
    "TASKS",
    "EvalResult",
    "Recipe",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "evaluate_checkpoint",
    "predict",
    "train",
]
