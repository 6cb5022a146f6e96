"""Defaults fitted to the data: what ``botnet train`` chooses for the settings a user leaves out.

The choice reads a :class:`~botnet.data.profile.FolderProfile` (image count, classes, typical size,
grey or colour) and fills only unset settings; each choice carries the reason that is printed and
kept in the run's summary. The rules (the README's "Defaults that fit the data" has the table):

- **Channels and augmentation.** Grey folders (scans, digits, documents) train on one channel with
  the whole image resized and jittered (small shifts, turns, zooms) and no flips: a mirrored digit or
  letter is another class, and a crop can cut off what tells two classes apart. Colour folders
  (photos) get random-resized crops and horizontal flips.
- **Model.** Small images (short side up to 64 px) get ``botnet_tiny`` (3x3 stem, no max-pool,
  stride 8), at half width from 20,000 training images on; up to 160 px, or fewer than 20,000
  larger images, ``botnet_mini``; larger and more, the paper's ``botnet50``.
- **Input size.** The median short side, rounded to the nearest multiple of 8 (32 for the stride-32 models),
  within the model's range: at least three final-map pixels across, and not above the size the
  model is made for (with ``--pretrained``, the size its weights were trained at).
- **Loading.** Images that fit in memory decoded (384 MB for both splits) are decoded once and
  loaded in the training process (``workers`` 0): the per-image part of the augmentation is a crop
  or a resize, the rest runs per batch (``botnet.data.transforms.TrainAugment``). Larger folders are
  decoded each epoch by up to four worker processes.
- **Schedule** (the ``small`` recipe only). Enough epochs for about 30 optimizer steps per class
  with jitter, 300 with random-resized crops (which show every image differently each time and
  take longer to fit), and at least 15 epochs or 1,000 steps, whichever is fewer; at most 60 epochs.
  Then a time budget of 8 minutes: before the run a few steps are timed, and if those epochs take
  longer here, as many as fit are planned instead (the cosine then ends on time). The precision is
  chosen by the same timed steps (``botnet.training.plan.plan_epochs``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ..data import DIGITS, IN_MEMORY_BYTES
from ..data.profile import DIGITS_PROFILE, FolderProfile, profile_folder
from ..data.transforms import default_augment, default_hflip
from ..models import get_model_entry
from .recipes import RECIPES

__all__ = ["Choice", "fit_defaults", "fitted_settings"]

WIDE_FROM_IMAGES = 20_000  # small-image folders this large get botnet_tiny at half width
LARGE_MODEL_FROM_IMAGES = 20_000  # large-image folders this large get botnet50
SMALL_IMAGE_SIDE = 64  # up to this short side: botnet_tiny
MEDIUM_IMAGE_SIDE = 160  # up to this: botnet_mini
# the input sizes each default model takes (the smallest leaves a 3x3 final map)
SIZE_RANGE = {"botnet_tiny": (24, SMALL_IMAGE_SIDE), "botnet_mini": (96, MEDIUM_IMAGE_SIDE), "botnet50": (96, 224)}
STEPS_PER_CLASS = {"jitter": 30, "crop": 300}
MIN_EPOCHS, MIN_STEPS, MAX_EPOCHS = 15, 1000, 60  # at least MIN_EPOCHS or MIN_STEPS, whichever is fewer
DEFAULT_MINUTES = 8.0  # a fitted schedule trains at most this long on the machine it runs on


@dataclass(frozen=True)
class Choice:
    """One fitted setting and the reason for it."""

    setting: str
    value: Any
    why: str


def fit_defaults(config, world_size: int = 1, *, budget: bool = True):
    """``config`` (a TrainConfig) with its unset data-dependent settings chosen from its data, the
    choices made (none when every such setting was given) and the data's profile. Resumed runs keep
    their saved settings and are not fitted again. ``budget=False``: no fitted time budget (a study's
    length is its user's)."""
    profile = DIGITS_PROFILE if config.data in (None, DIGITS) else profile_folder(config.data)
    choices = [c for c in fitted_settings(config, profile, world_size) if budget or c.setting != "time_budget"]
    return dataclasses.replace(config, **{c.setting: c.value for c in choices}), choices, profile


def fitted_settings(config, profile: FolderProfile, world_size: int = 1) -> list[Choice]:
    """The choices for ``config``'s unset settings given ``profile`` (see the module's rules)."""
    choices: list[Choice] = []
    kind = "grey" if profile.grey else "colour"
    if config.in_chans is None:
        choices.append(Choice("in_chans", 1 if profile.grey else 3, f"the sampled images are {kind}"))
    augment = config.augment
    if augment is None:
        augment = default_augment(profile.grey)
        why = (
            "grey images (scans, digits, documents): the whole image, shifted, turned and zoomed a little"
            if profile.grey
            else "colour photos: random-resized crops"
        )
        choices.append(Choice("augment", augment, why))
    if config.hflip is None:
        why = "mirroring may change the class of scans (digits, letters)" if augment == "jitter" else "photos keep their class when mirrored"
        choices.append(Choice("hflip", default_hflip(augment), why))
    model, overrides = config.model, config.model_overrides
    if model is None and config.pretrained is None:
        model, overrides, why = _model_for(profile, overrides)
        choices.append(Choice("model", model, why))
        if overrides != config.model_overrides:
            choices.append(Choice("model_overrides", overrides, f"{profile.train_images} training images: more capacity"))
    model = model or "botnet_tiny"
    if config.img_size is None:
        choices.append(_size_for(model, config.pretrained is not None, profile))
    if config.workers is None:
        choices.append(_workers_for(profile, 1 if profile.grey and config.in_chans != 3 else 3))
    if config.recipe in (None, "small") and config.pretrained is None and config.epochs is None and config.time_budget is None:
        epochs = _epochs_for(config, profile, augment, world_size)
        why = f"at most the {epochs.value} epochs above; fewer if they take longer on this machine (timed before the run)"
        choices += [epochs, Choice("time_budget", DEFAULT_MINUTES, why)]
    return choices


def disk_workers() -> int:
    """Worker processes for images decoded from disk each epoch: up to four, at most one per core."""
    return min(4, os.cpu_count() or 1)


def _workers_for(profile: FolderProfile, channels: int) -> Choice:
    images = profile.train_images + profile.val_images
    megabytes = images * profile.short_side * profile.long_side * channels / 2**20
    if megabytes <= IN_MEMORY_BYTES / 2**20:
        why = (f"the {images} images fit in memory decoded ({megabytes:.3g} MB): loading a batch from there "
               f"costs little next to a step, and worker processes would compete with it for the cores")  # fmt: skip
        return Choice("workers", 0, why)
    workers = disk_workers()
    return Choice("workers", workers, f"about {megabytes:.0f} MB of pixels, decoded from disk each epoch: {workers} worker processes")


def _model_for(profile: FolderProfile, overrides: dict | None) -> tuple[str, dict | None, str]:
    side, images = profile.short_side, profile.train_images
    if side <= SMALL_IMAGE_SIDE:
        if images >= WIDE_FROM_IMAGES and overrides is None:
            overrides = dict(width_multiplier=0.5)
        return "botnet_tiny", overrides, f"small images ({side} px): a 3x3 stem without max-pool keeps detail"
    if side <= MEDIUM_IMAGE_SIDE or images < LARGE_MODEL_FROM_IMAGES:
        return "botnet_mini", overrides, f"{side} px images, {images} of them: a model a CPU trains in minutes"
    return "botnet50", overrides, f"{side} px images, {images} of them: the paper's BoT50"


def _size_for(model: str, pretrained: bool, profile: FolderProfile) -> Choice:
    entry = get_model_entry(model)
    if pretrained:
        return Choice("img_size", entry.img_size, "the size the pretrained weights were trained at")
    step = min(32, entry.config.reduction())
    low, high = SIZE_RANGE.get(model, (3 * entry.config.reduction(), entry.img_size))
    size = min(max(math.floor(profile.short_side / step + 0.5) * step, low), high)  # the nearest multiple (ties up)
    if size > profile.short_side:
        why = f"the images' typical short side ({profile.short_side} px) enlarged to {model}'s smallest size"
    elif size < profile.short_side - step:
        why = f"the images' typical short side ({profile.short_side} px) reduced to {model}'s largest size"
    else:
        why = f"the images' typical short side ({profile.short_side} px), a multiple of {step}"
    return Choice("img_size", size, why)


def _epochs_for(config, profile: FolderProfile, augment: str, world_size: int) -> Choice:
    batch = (config.batch_size or RECIPES["small"].settings["batch_size"]) * world_size
    steps_per_epoch = max(1, math.ceil(profile.train_images / batch))
    target = max(STEPS_PER_CLASS[augment] * profile.classes, min(MIN_EPOCHS * steps_per_epoch, MIN_STEPS))
    epochs = min(math.ceil(target / steps_per_epoch), MAX_EPOCHS)
    why = (
        f"{profile.train_images} images in {profile.classes} classes: {steps_per_epoch} steps an epoch, about "
        f"{STEPS_PER_CLASS[augment]} steps per class with {augment} (at least {MIN_EPOCHS} epochs or {MIN_STEPS} "
        f"steps, at most {MAX_EPOCHS} epochs)"
    )
    return Choice("epochs", epochs, why)
