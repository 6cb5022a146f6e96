"""Classification recipes: named presets of optimiser, schedule and regularisation.

Each is a mapping from :class:`~botnet.tasks.classification.TrainConfig` field names to values
(``botnet.training.settings.Recipe``), taken where the user gives none. The detection recipes are
in ``botnet.tasks.detection``.
"""

from __future__ import annotations

from ..data.transforms import CROP_SCALE_MIN
from ..training.settings import Recipe

__all__ = ["RECIPES"]

RECIPES: dict[str, Recipe] = {
    # Small data on a CPU: AdamW converges in a few epochs on a few thousand images.
    "small": Recipe(dict(
        optimizer="adamw", lr=3e-3, weight_decay=0.05, momentum=0.9, epochs=15, batch_size=64, warmup_epochs=1,
        label_smoothing=0.1, randaugment=False, crop_scale_min=CROP_SCALE_MIN, head_epochs=0,
    )),
    # Fine-tuning pretrained weights (--pretrained) on a small folder: a tenth of the small recipe's
    # learning rate, a short schedule, and one epoch in which only the new classifier trains, so its
    # random start does not send large gradients into the pretrained layers.
    "finetune": Recipe(dict(
        optimizer="adamw", lr=3e-4, weight_decay=0.05, momentum=0.9, epochs=8, batch_size=32, warmup_epochs=1,
        label_smoothing=0.1, randaugment=False, crop_scale_min=CROP_SCALE_MIN, head_epochs=1,
    )),
    # The paper's ImageNet recipe (Sec. 4.1 and appendix): SGD with momentum 0.9 at 0.1 per 256 images, cosine
    # schedule with warm-up, label smoothing 0.1, RandAugment(2, 10), weight decay 8e-5, EMA of the weights.
    "paper": Recipe(dict(
        optimizer="sgd", lr=0.1, weight_decay=8e-5, momentum=0.9, epochs=200, batch_size=128, warmup_epochs=5,
        label_smoothing=0.1, randaugment=True, ema_decay=0.9999, crop_scale_min=0.08, head_epochs=0,
    ), lr_reference_batch=256),
}  # fmt: skip
