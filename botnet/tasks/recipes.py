"""Training recipes: named presets of optimiser, schedule and regularisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPES", "Recipe", "fill_from_recipe"]


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
