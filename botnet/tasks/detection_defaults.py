"""Detection defaults fitted to the data: what ``botnet detect train --data DIR`` chooses for the
settings a user leaves out (a setting given is never changed).

The choice reads a :class:`~botnet.data.detection_profile.DetectionProfile` of the annotations and
fills only unset settings; each choice carries the reason that is printed and kept in the run's
summary and weights. The generated shapes (no ``--data``) keep the ``small`` recipe unchanged, and a
``--recipe`` given by name is taken as it is (only the detector still follows the masks). The rules
(docs/detection.md, "Defaults fitted to the data", has the table):

- **Detector.** Mask R-CNN when every object has a mask, Faster R-CNN when the labels are boxes only.
- **Input size.** The smallest ``min_size`` (a multiple of 32, at least 128) at which the objects are
  large enough on the feature maps that see them after torchvision's resize: the 5th percentile of box
  sides at least 12 px and their median at least 32 px (COCO's small / medium border), enlarging the
  images at most 2x; ``max_size`` from the images' 95th-percentile aspect ratio. Capped so the long
  side stays within 1,024 px on a CPU (1,333, torchvision's, on a GPU) and, on a CPU, so the planned
  time trains at least 20 epochs (or 2,000 images) at the cost per pixel measured on a 2-core CPU.
- **Anchors.** One size per FPN level (P2-P6), spread geometrically from the 5th to the 95th
  percentile of the resized box sides (at least a 4x range), so every level has objects to match.
- **Widths and backbone** by the number of training images: the small recipe's narrow heads
  (FPN 64, box 512, mask 64) below 2,000 images, 128 / 1,024 / 128 below 20,000, torchvision's
  256 / 1,024 / 256 from there; ``botnet_mini``, or ``botnet50`` from 20,000 images on a GPU.
- **Batch and proposals.** 4 images a step up to 0.3 megapixels after the resize, 2 above; RoIs
  sampled per image at least 4x the 95th percentile of objects per image (a quarter of them are
  positives), proposals kept in proportion.
- **Schedule.** Enough epochs for about 2,000 optimizer steps (the bundled demo's 1,920), 10 to
  300, with about 50 warm-up steps; and a time budget of 15 minutes that plans how many of them fit
  on this machine (printed before the first step), unless ``--epochs`` or ``--time-budget`` is given.
- **Precision.** float32: with bfloat16 autocast a detector on the real photos set (about 100 masks an
  image, 384-768 px) stopped with a NaN box loss. (The generated shapes' demo is not fitted: its
  precision is timed, as every run's is where unset, and bfloat16 held its AP there.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from ..data.detection_profile import DetectionProfile, resized_sides
from .defaults import Choice

__all__ = ["fitted_detection_settings", "fit_detection_defaults"]

SMALLEST_OBJECT = 12  # px after the resize: the 5th percentile of box sides at least this ...
TYPICAL_OBJECT = 32  # ... and the median at least this
SIZE_STEP = 32
MIN_INPUT = 128  # the bundled demo's short side
MAX_UPSCALE = 2.0  # enlarging further adds pixels, not detail
MAX_LONG_SIDE = {"cpu": 1024, "cuda": 1333}
# Training cost per image measured on a 2-core AMD EPYC (AVX-512, no AMX) (botnet_mini Mask R-CNN, narrow heads,
# batch 4, fp32): about 0.02 s plus 1 s per 1.1 megapixels. Only the size cap reads it.
SECONDS_PER_IMAGE, PIXELS_PER_SECOND = 0.02, 1.1e6
MIN_EPOCHS_IN_BUDGET, MIN_IMAGES_IN_BUDGET = 20, 2000
BUDGET_SHARE = 0.85  # of the time budget, for training steps (the engine plans in 90%, evaluation included)
TIME_BUDGET_MINUTES = 15.0
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 2000, 10, 300
WARMUP_STEPS = 50
LARGE_BATCH_PIXELS = 300_000  # up to this many pixels an image, 4 images a step; above, 2
WIDTHS = ((2000, (64, 512, 64)), (20_000, (128, 1024, 128)), (math.inf, (256, 1024, 256)))
LARGE_BACKBONE_FROM_IMAGES = 20_000


def fit_detection_defaults(config, profile: DetectionProfile, world_size: int = 1, device: str | None = None):
    """``config`` (a DetectConfig) with its unset settings chosen from ``profile``, and the choices made."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    choices = fitted_detection_settings(config, profile, world_size, device)
    return dataclasses.replace(config, **{c.setting: c.value for c in choices}), choices


def fitted_detection_settings(config, profile: DetectionProfile, world_size: int, device: str) -> list[Choice]:
    """The choices for ``config``'s unset settings given ``profile`` (see the module's rules)."""
    choices: list[Choice] = []
    if config.detector is None:
        kind = "maskrcnn" if profile.masks else "fasterrcnn"
        why = "every object has a mask" if profile.masks else "the labels are boxes only (no masks)"
        choices.append(Choice("detector", kind, why))
    if config.recipe is not None or profile.instances == 0:
        return choices
    choose = _chooser(config, choices)
    min_size, max_size = _input_size(config, profile, device, choose)
    pixels = _pixels(profile, min_size, max_size)
    batch = choose("batch_size", 4 if pixels <= LARGE_BATCH_PIXELS else 2,
                   f"{pixels / 1e6:.2f} megapixels an image after the resize")  # fmt: skip
    _anchors(profile, min_size, max_size, choose)
    _widths(profile, device, choose)
    _proposals(profile, choose)
    _schedule(config, profile, batch * world_size, choose)
    choose("amp", False, "float32: under bfloat16 a fitted detector on real photos (100 masks an image) diverged; "
           "--amp to choose it")  # fmt: skip
    return choices


def _chooser(config, choices: list[Choice]):
    """``choose(setting, value, why)``: records the choice when the setting is unset; returns the value in use."""

    def choose(setting: str, value: Any, why: str) -> Any:
        given = getattr(config, setting)
        if given is not None:
            return given
        choices.append(Choice(setting, value, why))
        return value

    return choose


def _round_up(value: float, step: int = SIZE_STEP) -> int:
    return int(math.ceil(value / step - 1e-9) * step)


def _aspect(profile: DetectionProfile) -> float:
    """The 95th percentile of the training images' long / short side over their boxes' images."""
    if not profile.box_image_sides:
        return profile.long_side / max(profile.short_side, 1)
    short, long = np.asarray(profile.box_image_sides, dtype=np.float64).T
    return float(np.percentile(long / short, 95))


def _pixels(profile: DetectionProfile, min_size: int, max_size: int) -> float:
    """Pixels of a typical image after the resize."""
    scale = min(min_size / max(profile.short_side, 1), max_size / max(profile.long_side, 1))
    return profile.short_side * scale * profile.long_side * scale


def _sizes_for(min_size: int, aspect: float) -> tuple[int, int]:
    return min_size, max(min_size, _round_up(min_size * aspect))


def _objects_fit(profile: DetectionProfile, min_size: int, aspect: float) -> bool:
    sides = resized_sides(profile, *_sizes_for(min_size, aspect))
    return np.percentile(sides, 5) >= SMALLEST_OBJECT and np.median(sides) >= TYPICAL_OBJECT


def _time_cap(profile: DetectionProfile, aspect: float) -> int:
    """The largest min_size at which the planned time trains the run's least: MIN_EPOCHS_IN_BUDGET epochs
    or MIN_IMAGES_IN_BUDGET images, whichever is fewer."""
    images = min(MIN_EPOCHS_IN_BUDGET * profile.train_images, MIN_IMAGES_IN_BUDGET)
    seconds_per_image = TIME_BUDGET_MINUTES * 60 * BUDGET_SHARE / images
    pixels = max(seconds_per_image - SECONDS_PER_IMAGE, 0.0) * PIXELS_PER_SECOND
    return int(math.sqrt(pixels / max(aspect, 1.0)) // SIZE_STEP * SIZE_STEP)


def _input_size(config, profile: DetectionProfile, device: str, choose) -> tuple[int, int]:
    aspect = _aspect(profile)
    if config.min_size is not None:
        min_size = config.min_size
        return min_size, choose("max_size", _sizes_for(min_size, aspect)[1], f"{min_size} px times the images' aspect ratio")
    caps = {
        f"{MAX_UPSCALE:g}x the images' short side": _round_up(profile.short_side * MAX_UPSCALE),
        f"a {MAX_LONG_SIDE[device]}-px long side, the most a {device} run takes": int(MAX_LONG_SIDE[device] / aspect)
        // SIZE_STEP * SIZE_STEP,
    }  # fmt: skip
    if config.time_budget is None and config.epochs is None and device == "cpu":  # measured on a CPU only
        caps[f"what this cpu trains in {TIME_BUDGET_MINUTES:g} minutes"] = _time_cap(profile, aspect)
    if config.max_size is not None:
        caps[f"the {config.max_size}-px --max-size given"] = config.max_size
    cap, largest = min(caps.items(), key=lambda item: item[1])
    largest = max(largest, MIN_INPUT)
    min_size = next((size for size in range(MIN_INPUT, largest + 1, SIZE_STEP) if _objects_fit(profile, size, aspect)),
                    largest)  # fmt: skip
    sides = resized_sides(profile, *_sizes_for(min_size, aspect))
    p5, median = np.percentile(sides, 5), np.median(sides)
    why = f"objects then {p5:.0f} px (5th percentile) and {median:.0f} px (median) across"
    if not _objects_fit(profile, min_size, aspect) and min_size == largest:
        lift = "--min-size, or --epochs or --time-budget" if "minutes" in cap else "--min-size"
        why += f", below the {SMALLEST_OBJECT} and {TYPICAL_OBJECT} px they want: capped at {cap} (give {lift} to go further)"
    min_size = choose("min_size", min_size, why)
    max_size = choose("max_size", _sizes_for(min_size, aspect)[1], f"{min_size} px times the images' aspect ratio ({aspect:.2f})")
    return min_size, max_size


def _anchors(profile: DetectionProfile, min_size: int, max_size: int, choose) -> None:
    sides = resized_sides(profile, min_size, max_size)
    low = max(float(np.percentile(sides, 5)), 4.0)
    high = max(float(np.percentile(sides, 95)), 4 * low)
    sizes = tuple(int(round(size)) for size in np.geomspace(low, high, 5))
    choose("anchor_sizes", sizes, f"the resized objects' 5th to 95th percentile ({low:.0f}-{high:.0f} px) over P2-P6")


def _widths(profile: DetectionProfile, device: str, choose) -> None:
    images = profile.train_images
    limit, (fpn, box, mask) = next(entry for entry in WIDTHS if images < entry[0])
    why = f"{images} training images" + (f" (below {limit:,})" if math.isfinite(limit) else "")
    choose("fpn_channels", fpn, why)
    choose("box_head_width", box, why)
    choose("mask_head_width", mask, why)
    large = images >= LARGE_BACKBONE_FROM_IMAGES and device == "cuda"
    choose("backbone", "botnet50" if large else "botnet_mini",
           f"{images} training images on a {device}: " + ("the paper's BoT50" if large else "a backbone that trains in minutes"))  # fmt: skip


def _proposals(profile: DetectionProfile, choose) -> None:
    typical = max(1, math.ceil(profile.boxes_per_image_percentile(95)))
    most = max(profile.boxes_per_image, default=1)
    rois = int(min(max(2 ** math.ceil(math.log2(4 * typical)), 64), 512))
    why = f"up to {typical} objects an image (95th percentile), {most} at most"
    choose("box_batch_size_per_image", rois, why)
    post_train = max(300, 2 * rois)
    post_test = min(max(150, 3 * most), 1000)
    choose("proposals", (2 * post_train, post_train, 2 * post_test, post_test), why)


def _schedule(config, profile: DetectionProfile, global_batch: int, choose) -> None:
    steps = max(1, math.ceil(profile.train_images / global_batch))
    if config.epochs is None and config.time_budget is None:
        epochs = min(max(math.ceil(TARGET_STEPS / steps), MIN_EPOCHS), MAX_EPOCHS)
        choose("epochs", epochs, f"{steps} steps an epoch: about {TARGET_STEPS} steps ({MIN_EPOCHS} to {MAX_EPOCHS} epochs)")
        choose("time_budget", TIME_BUDGET_MINUTES, "at most this many minutes: the epochs that fit on this machine are planned")
    else:
        epochs = config.epochs
    horizon = epochs if epochs is not None else MIN_EPOCHS
    choose("warmup_epochs", round(min(WARMUP_STEPS / steps, 0.1 * horizon), 2), f"about {WARMUP_STEPS} warm-up steps")
