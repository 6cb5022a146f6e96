"""Training recipes: named presets of optimiser, schedule and regularisation."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "RECIPES",
    "Recipe",
    "check_field_types",
    "check_model_overrides",
    "check_time_budget",
    "check_workers",
    "fill_from_recipe",
]


def check_workers(workers: int) -> None:
    """Data-loading processes: 0 (load in the main process) up to four per CPU core (at least 32)."""
    limit = max(32, 4 * (os.cpu_count() or 1))
    if not 0 <= workers <= limit:
        raise ConfigError(f"--workers must be between 0 and {limit} on this machine ({os.cpu_count()} cores), got {workers}")


def check_time_budget(minutes: float | None, epochs: int | None = None) -> None:
    """--time-budget: positive minutes (up to a year), and not together with --epochs (it plans them)."""
    if minutes is None:
        return
    if not 0 < minutes <= 60 * 24 * 365:
        raise ConfigError(f"--time-budget is in minutes and must be positive, got {minutes}")
    if epochs is not None:
        raise ConfigError("--time-budget plans the number of epochs; give it or --epochs, not both")


def check_model_overrides(model: str, overrides: Any):
    """The ModelConfig of ``model`` with ``overrides`` (create_model settings) applied; ConfigError names
    a bad setting."""
    from ..models import get_model_entry

    entry = get_model_entry(model)  # unknown names fail here, with suggestions
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"model_overrides must be a mapping of model settings, got {overrides!r}")
    try:
        return entry.config.with_overrides(**(overrides or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model_overrides {overrides}: {error}") from None


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    return True


def check_field_types(config: Any) -> None:
    """ConfigError unless every field of the config dataclass holds a value of its annotated type
    (floats finite, strings not empty; a value read from a damaged file or passed from Python may be
    anything)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"--{field.name.replace('_', '-')} is empty; give a value or leave the flag out")
        if not _matches(value, hints[field.name]):
            expected = str(hints[field.name]).replace("typing.", "").replace("NoneType", "None")
            raise ConfigError(f"--{field.name.replace('_', '-')} is {value!r}; it must be {expected} (finite)")


def fill_from_recipe(config: Any, recipe: Any) -> dict[str, Any]:
    """The fields of a config dataclass as a dict, each unset (None) one taken from the recipe dataclass."""
    values = dataclasses.asdict(config)
    for field in dataclasses.fields(recipe):
        if field.name in values and values[field.name] is None:
            values[field.name] = getattr(recipe, field.name)
    return values


@dataclass(frozen=True)
class Recipe:
    """Settings a run takes unless a flag overrides them.

    ``lr_reference_batch``: when set, ``lr`` is for that global batch and is
    scaled linearly to the run's global batch (Goyal et al. 2017).
    """

    optimizer: str  # "sgd" or "adamw"
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int  # per process
    warmup_epochs: float
    label_smoothing: float
    randaugment: bool
    ema_decay: float | None
    crop_scale_min: float  # RandomResizedCrop's smallest area fraction (photos only)
    momentum: float = 0.9
    lr_reference_batch: int | None = None
    head_epochs: int = 0  # epochs at the start in which only the classifier trains (fine-tuning)


RECIPES: dict[str, Recipe] = {
    # Small data on a CPU: AdamW converges in a few epochs on a few thousand images.
    "small": Recipe(
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.05,
        epochs=15,
        batch_size=64,
        warmup_epochs=1,
        label_smoothing=0.1,
        randaugment=False,
        ema_decay=None,
        crop_scale_min=0.35,
    ),
    # Fine-tuning pretrained weights (--pretrained) on a small folder: a tenth of the small recipe's
    # learning rate, a short schedule, and one epoch in which only the new classifier trains, so its
    # random start does not send large gradients into the pretrained layers.
    "finetune": Recipe(
        optimizer="adamw",
        lr=3e-4,
        weight_decay=0.05,
        epochs=8,
        batch_size=32,
        warmup_epochs=1,
        label_smoothing=0.1,
        randaugment=False,
        ema_decay=None,
        crop_scale_min=0.35,
        head_epochs=1,
    ),
    # The paper's ImageNet recipe (Sec. 4.1 and appendix): SGD with momentum 0.9, cosine schedule with
    # warm-up, label smoothing 0.1, RandAugment(2, 10), weight decay 8e-5, EMA of the weights.
    "paper": Recipe(
        optimizer="sgd",
        lr=0.1,
        lr_reference_batch=256,
        weight_decay=8e-5,
        epochs=200,
        batch_size=128,
        warmup_epochs=5,
        label_smoothing=0.1,
        randaugment=True,
        ema_decay=0.9999,
        crop_scale_min=0.08,
    ),
}
