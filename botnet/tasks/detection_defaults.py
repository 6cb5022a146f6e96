"""Detection defaults fitted to the data: what ``botnet detect train --data DIR`` chooses for the
settings a user leaves out (a setting given is never changed).

The choice reads a :class:`~botnet.data.detection_profile.DetectionProfile` of the annotations and
fills only unset settings; each choice carries the reason that is printed and kept in the run's
summary and weights. The generated shapes (no ``--data``) keep the ``small`` recipe, with a time budget
(:func:`demo_schedule`), and a ``--recipe`` given by name is taken as it is (only the detector still follows
the masks). The rules (docs/detection.md, "Defaults fitted to the data", has the table):

- **Detector.** Mask R-CNN when every object has a mask, Faster R-CNN when the labels are boxes only.
- **Input size.** The scale the objects want is the one at which their 5th-percentile side is 12 px and
  their median 32 px (COCO's small / medium border). torchvision's resize scales each image by
  min(min_size / short side, max_size / long side), so ``min_size`` and ``max_size`` (multiples of 32,
  at least 128) are chosen together: the pair that gives the images of 95% of the objects that scale at
  the fewest pixels an image, so a folder of wide strips and 16:9 frames keeps both at the objects' scale
  (a max_size from the widest aspect ratio would shrink the frames). Within limits: min_size at most 2x
  the images' short side, max_size at most 1,024 px on a CPU (1,333, torchvision's, on a GPU) and, on a
  CPU, at most the size at which the planned time trains 20 epochs (or 2,000 images) at the cost an
  image takes on a 2-core CPU by its pixels and its objects (``image_seconds``; attention makes it grow
  faster than the pixels), longer where PyTorch's kernels are held to AVX2. Short of the scale, the pair that comes nearest, and the
  reason names the limit.
- **Tiles.** Where whole images would give the images of 95% of the objects less than 60% of the scale
  they want (large images with small objects: the size limits above shrink what is already small), and
  neither size is given: tiles (``botnet.detection.tiles``) of the side that the scale the objects want
  makes 512 px (1,024 on a GPU), overlapping by the largest objects' side (their 99th percentile, at
  least an eighth of a tile; sides are sqrt(width x height), so a long thin object may be cut), with
  min_size = max_size = that side; not where the objects are too large for such tiles (an overlap above
  half a tile) or ``--scale-jitter`` is given. The anchors, batch size and schedule below then read the
  tiles as the images (the RoIs and proposals still follow the objects an image, at least a tile's).
- **Anchors.** One size per FPN level (P2-P6) from the 5th percentile of the resized box sides,
  doubling from level to level as the strides do (wider steps where the objects' 5th-95th percentile
  spans more than 16x): anchors much narrower than a level's stride leave objects between them
  without a good match (anchors spread only over the objects' range, 16-100 px, lost half the box
  AP on the mixed-aspect set).
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

from ..data.detection_profile import (
    DetectionProfile, resize_scales, resized_image_pixels, resized_pixels, resized_sides, tiled_profile,
)
from ..detection.tiles import check_tiles, tile_count
from .defaults import Choice

__all__ = ["demo_schedule", "fitted_detection_settings", "fit_detection_defaults", "image_seconds"]

SMALLEST_OBJECT = 12  # px after the resize: the 5th percentile of box sides at least this ...
TYPICAL_OBJECT = 32  # ... and the median at least this
SIZE_STEP = 32
MIN_INPUT = 128  # the bundled demo's short side
MAX_UPSCALE = 2.0  # enlarging further adds pixels, not detail
MAX_LONG_SIDE = {"cpu": 1024, "cuda": 1333}
# Seconds a training image costs on a 2-core CPU: a + b P + c P^2 + d K P for P megapixels after the resize and
# K objects (P^2: the BoT block's attention over stride-16 tokens; K P: anchors matched to every object). Fitted by
# benchmarks/detection_step_cost.py (Intel Xeon, AVX-512, fp32; the fitted detector of a crowded set, mask crops).
# Only the size cap reads it, scaled by how much longer a step takes where PyTorch's kernels use narrower vector
# instructions (torch.backends.cpu.get_cpu_capability(); "AVX2" measured on the same CPU with its kernels held to AVX2
# by ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, 1.16-1.34x over the grid, median 1.23,
# benchmarks/detection-step-cost-avx2.json; any other, as AVX2). A CPU that is slower for other reasons is caught by
# the run's plan, which re-times the epochs.
STEP_COST = (0.211, 0.063, 1.02, 0.0047)
SLOWDOWN = {"AVX512": 1.0, "AVX2": 1.2}
MIN_EPOCHS_IN_BUDGET, MIN_IMAGES_IN_BUDGET = 20, 2000
BUDGET_SHARE = 0.85  # of the time budget, for training steps (the engine plans in 90%, evaluation included)
TIME_BUDGET_MINUTES = 15.0
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 2000, 10, 300
WARMUP_STEPS = 50
LARGE_BATCH_PIXELS = 300_000  # up to this many pixels an image, 4 images a step; above, 2
WIDTHS = ((2000, (64, 512, 64)), (20_000, (128, 1024, 128)), (math.inf, (256, 1024, 256)))
LARGE_BACKBONE_FROM_IMAGES = 20_000
TILES_BELOW_REACH = 0.6  # tiles where whole images give 95% of the objects less than this share of their scale ...
TILE_INPUT = {"cpu": 512, "cuda": 1024}  # ... each resized to this many px a side


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
    min_size, max_size, tiles = _input_size(config, profile, device, choose)
    seen = tiled_profile(profile, tiles[0]) if tiles else profile  # what the detector sees: images or tiles
    pixels = resized_pixels(seen, min_size, max_size)
    each = "a tile" if tiles else "an image"
    batch = choose("batch_size", 4 if pixels <= LARGE_BATCH_PIXELS else 2,
                   f"{pixels / 1e6:.2f} megapixels {each} after the resize (on average)")  # fmt: skip
    _anchors(seen, min_size, max_size, choose)
    _widths(profile, device, choose)
    _proposals(profile, choose)
    items = _training_tiles(profile, tiles) if tiles else profile.train_images
    _schedule(config, items, "tiles" if tiles else "images", batch * world_size, choose)
    choose("amp", False, "float32: under bfloat16 a fitted detector on real photos (100 masks an image) diverged; "
           "--amp to choose it")  # fmt: skip
    return choices


DEMO_MINUTES = 9.5  # the bundled demo's 5 epochs, or as many steps as end in 9.5 minutes on a slower machine


def demo_schedule(config, recipe_epochs: int) -> tuple[Any, list[Choice]]:
    """The bundled demo's schedule, unless ``--epochs``, ``--time-budget`` or another recipe is given: the small
    recipe's epochs, cut short where they would not end within DEMO_MINUTES on this machine (so the whole
    demo takes under 10 minutes on any 2-core CPU: a slower one trains fewer steps and says so)."""
    if config.epochs is not None or config.time_budget is not None or config.recipe not in (None, "small"):
        return config, []
    choices = [
        Choice("epochs", recipe_epochs, "the small recipe's, at most"),
        Choice("time_budget", DEMO_MINUTES, "the demo ends within 10 minutes: where its epochs take longer here, "
               "the steps that fit (5 epochs: box AP 53 on a 2-core CPU; 4: 46)"),
    ]  # fmt: skip
    return dataclasses.replace(config, **{c.setting: c.value for c in choices}), choices


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


def _wanted_scale(profile: DetectionProfile) -> float:
    """The scale at which the objects are large enough for the feature maps that see them: their
    5th-percentile side SMALLEST_OBJECT px and their median TYPICAL_OBJECT px."""
    sides = np.asarray(profile.box_sides, dtype=np.float64)
    return float(max(SMALLEST_OBJECT / np.percentile(sides, 5), TYPICAL_OBJECT / np.median(sides)))


def _objects_images(profile: DetectionProfile) -> tuple[np.ndarray, np.ndarray]:
    """The (short, long) sides of the images that hold objects, and how many objects each size holds."""
    sides, counts = np.unique(np.asarray(profile.box_image_sides, dtype=np.float64), axis=0, return_counts=True)
    return sides, counts


def _reach(objects_images, wanted: float, min_size: int, max_size: int) -> tuple[float, float]:
    """How near this pair brings the objects' images to ``wanted`` (1 when they get it): the share reached by
    the images of 95% of the objects, and (while that is short of 1) the mean share over every object."""
    sides, counts = objects_images
    shares = np.minimum(resize_scales(sides, min_size, max_size) / wanted, 1.0)
    order = np.argsort(shares)
    below = np.cumsum(counts[order]) / counts.sum()  # the objects' share at or below each size's share
    most = round(float(shares[order][np.searchsorted(below, 0.05)]), 3)  # rounded: a pixel's gain is no gain
    return most, round(float(np.average(shares, weights=counts)), 3) if most < 1 else 1.0


def image_seconds(profile: DetectionProfile, min_size: int, max_size: int) -> float:
    """The training seconds an image takes on average (STEP_COST), each image at its resized size with its
    objects."""
    a, b, c, d = STEP_COST
    megapixels = resized_image_pixels(profile, min_size, max_size) / 1e6
    objects = np.asarray(profile.boxes_per_image, dtype=np.float64)
    if len(objects) != len(megapixels):
        objects = np.full(len(megapixels), objects.mean() if len(objects) else 0.0)
    return float(np.mean(a + b * megapixels + c * megapixels**2 + d * objects * megapixels))


def cpu_capability() -> str:
    """The vector instructions PyTorch's CPU kernels use here ("AVX512", "AVX2", "DEFAULT", ...)."""
    return torch.backends.cpu.get_cpu_capability()


def _seconds_budget(profile: DetectionProfile) -> float:
    """The most training seconds an image (on average) at which the planned time trains the run's least:
    MIN_EPOCHS_IN_BUDGET epochs or MIN_IMAGES_IN_BUDGET images, whichever is fewer."""
    images = min(MIN_EPOCHS_IN_BUDGET * profile.train_images, MIN_IMAGES_IN_BUDGET)
    return TIME_BUDGET_MINUTES * 60 * BUDGET_SHARE / images


def _size_limits(config, profile: DetectionProfile, device: str) -> dict[str, tuple[str, float]]:
    """What bounds the input size: the largest min_size and max_size, and the mean pixels an image, each
    with the reason a user reads when it stops the objects from getting the size they want."""
    long_side = config.max_size or MAX_LONG_SIDE[device]
    limits = {
        "min_size": (f"{MAX_UPSCALE:g}x the images' short side", max(_round_up(profile.short_side * MAX_UPSCALE), MIN_INPUT)),
        "max_size": (f"the {config.max_size}-px --max-size given" if config.max_size else
                     f"a {long_side}-px long side, the most a {device} run takes", long_side),
        "seconds": ("", math.inf),
    }  # fmt: skip
    if config.time_budget is None and config.epochs is None and device == "cpu":  # measured on a CPU only
        kernels = cpu_capability()
        slowdown = SLOWDOWN.get(kernels, SLOWDOWN["AVX2"])
        limits["seconds"] = (f"what this cpu ({kernels} kernels) trains in {TIME_BUDGET_MINUTES:g} minutes",
                             _seconds_budget(profile) / slowdown)  # fmt: skip
    return limits


def _max_sizes(config, limits, min_size: int) -> range | list[int]:
    """The max_size values to try with ``min_size``, smallest first. A min_size above max_size resizes as
    max_size does, so max_size from min_size up is enough, unless max_size is given."""
    top = int(limits["max_size"][1])
    return [top] if config.max_size else range(min_size, top + 1, SIZE_STEP)


def _fit_size(config, profile: DetectionProfile, limits, wanted: float, objects_images) -> tuple[int, int]:
    """The pair that scales the images of 95% of the objects by ``wanted`` (or the nearest to it) at the
    fewest pixels an image, within the limits. min_size and max_size are chosen together, as torchvision's
    resize applies both: neither a wide strip nor a 16:9 frame sets the other's scale."""
    budget = limits["seconds"][1]
    largest_min = int(min(limits["min_size"][1], max(limits["max_size"][1], MIN_INPUT)))
    best, best_key = (MIN_INPUT, _max_sizes(config, limits, MIN_INPUT)[0]), None
    for min_size in range(MIN_INPUT, largest_min + 1, SIZE_STEP):
        for max_size in _max_sizes(config, limits, min_size):  # a larger max_size only adds scale and pixels
            if image_seconds(profile, min_size, max_size) > budget:
                break
            pixels = resized_pixels(profile, min_size, max_size)
            reach = _reach(objects_images, wanted, min_size, max_size)
            key = (-reach[0], -reach[1], pixels, min_size)
            if best_key is None or key < best_key:
                best, best_key = (min_size, max_size), key
            if reach[0] >= 1:
                break
    return best  # with nothing in the budget, the smallest pair


def _binding_limit(profile: DetectionProfile, limits, wanted: float, objects_images, min_size: int, max_size: int) -> str:
    """The limit that keeps the objects below the size they want at the chosen pair: the first that a
    larger neighbouring pair that reaches further would break."""
    reach = _reach(objects_images, wanted, min_size, max_size)
    for bigger_min, bigger_max in ((min_size + SIZE_STEP, max_size), (min_size, max_size + SIZE_STEP),
                                   (min_size + SIZE_STEP, max_size + SIZE_STEP)):  # fmt: skip
        if _reach(objects_images, wanted, bigger_min, bigger_max) <= reach:
            continue
        if image_seconds(profile, bigger_min, bigger_max) > limits["seconds"][1]:
            return limits["seconds"][0]
        if bigger_max > limits["max_size"][1]:
            return limits["max_size"][0]
        if bigger_min > limits["min_size"][1]:
            return limits["min_size"][0]
    return limits["max_size"][0]


def _input_size(config, profile: DetectionProfile, device: str, choose) -> tuple[int, int, tuple[int, int] | None]:
    """min_size, max_size and the tiles (or None): the tiles given or, where whole images cannot give the
    objects enough of their scale, chosen (``_tiles``)."""
    tiles = config.tiles
    if config.min_size is not None:
        min_size = config.min_size
        aspect = 1.0 if tiles else _aspect(profile)
        max_size = max(min_size, _round_up(min_size * aspect))
        why = "the tiles are square" if tiles else f"{min_size} px times the images' aspect ratio ({aspect:.2f})"
        return min_size, choose("max_size", max_size, why), tiles
    wanted, objects_images = _wanted_scale(profile), _objects_images(profile)
    if tiles is None:
        (min_size, min_why), (max_size, max_why) = _whole_images(config, profile, device, wanted, objects_images)
        reach = _reach(objects_images, wanted, min_size, max_size)[0]
        short = reach < TILES_BELOW_REACH and config.max_size is None and config.scale_jitter is None
        tiles = _tiles(profile, wanted, device) if short else None
        if tiles is None:
            return choose("min_size", min_size, min_why), choose("max_size", max_size, max_why), None
        choose("tiles", tiles, f"whole images would give the images of 95% of the objects {reach:.0%} of the "
               f"{wanted:.2f}x they want; tiles of {tiles[0]} px get it at {TILE_INPUT[device]} px, overlapping by "
               f"{tiles[1]} px (the largest objects' side, at least an eighth of a tile); give --min-size to train "
               "on whole images")  # fmt: skip
    top = MAX_LONG_SIDE[device]
    side = min(max(_round_up(tiles[0] * wanted), MIN_INPUT), top, config.max_size or top)
    why = f"the {tiles[0]}-px tiles at the {wanted:.2f}x the objects want (within {MIN_INPUT}-{top} px)"
    return choose("min_size", side, why), choose("max_size", max(side, config.max_size or 0), why), tiles


def _tiles(profile: DetectionProfile, wanted: float, device: str) -> tuple[int, int] | None:
    """Tiles that, resized to TILE_INPUT px, give the objects ``wanted``, overlapping by the largest objects'
    side (their 99th percentile, at least an eighth of a tile) so each lies whole in one; None where the
    objects are too large for such tiles (an overlap above half a tile) or the images are no larger."""
    size = int(TILE_INPUT[device] / wanted)  # at most TILE_INPUT px once resized
    overlap = int(math.ceil(max(np.percentile(profile.box_sides, 99), size / 8)))
    if overlap > size // 2 or size >= profile.long_side or check_tiles(size, overlap):
        return None
    return size, overlap


def _training_tiles(profile: DetectionProfile, tiles: tuple[int, int]) -> int:
    """About how many training tiles the images give: a tile for each object, at most each image's tiles."""
    counts = [min(tile_count(short, long, *tiles), objects) for (short, long), objects
              in zip(profile.image_sides, profile.boxes_per_image)]  # fmt: skip
    return max(1, sum(counts)) if counts else profile.train_images


def _whole_images(config, profile: DetectionProfile, device: str, wanted: float, objects_images):
    """The min_size and max_size for whole images (see the module), each with its reason."""
    limits = _size_limits(config, profile, device)
    min_size, max_size = _fit_size(config, profile, limits, wanted, objects_images)
    sides = resized_sides(profile, min_size, max_size)
    why = (f"the objects want {wanted:.2f}x (to be {SMALLEST_OBJECT} px at the 5th percentile and {TYPICAL_OBJECT} "
           f"px at the median); then {np.percentile(sides, 5):.0f} and {np.median(sides):.0f} px")  # fmt: skip
    reach = _reach(objects_images, wanted, min_size, max_size)[0]
    if reach < 1:
        cap = _binding_limit(profile, limits, wanted, objects_images, min_size, max_size)
        lift = "--min-size, or --epochs or --time-budget" if "minutes" in cap else "--min-size"
        why += (f"; the images of 95% of the objects get {reach:.0%} of that scale, capped at {cap} (give {lift} "
                f"to go further)")  # fmt: skip
    scales = resize_scales(profile.image_sides or profile.box_image_sides, min_size, max_size)
    pixels = resized_pixels(profile, min_size, max_size)
    return (min_size, why), (max_size, f"chosen with min_size {min_size}, the fewest pixels for that scale: images "
                             f"scaled {scales.min():.2f}-{scales.max():.2f}x, {pixels / 1e6:.2f} megapixels on average")  # fmt: skip


def _anchors(profile: DetectionProfile, min_size: int, max_size: int, choose) -> None:
    """One size per FPN level (P2-P6) from the resized objects' 5th percentile, doubling from level to level
    as the levels' strides do (FPN's one octave a level), or spread wider where the objects' 5th to 95th
    percentile spans more than the 16x that covers, so the coarse levels' anchors stay a few strides
    wide and large objects find anchors they overlap well."""
    sides = resized_sides(profile, min_size, max_size)
    low = max(round(float(np.percentile(sides, 5))), 4)
    step = max(2.0, (float(np.percentile(sides, 95)) / low) ** 0.25)
    sizes = tuple(int(round(low * step**level)) for level in range(5))
    choose("anchor_sizes", sizes, f"from the resized objects' 5th percentile ({low} px), x{step:.2g} a level over P2-P6")


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


def _schedule(config, items: int, what: str, global_batch: int, choose) -> None:
    steps = max(1, math.ceil(items / global_batch))
    if config.epochs is None and config.time_budget is None:
        epochs = min(max(math.ceil(TARGET_STEPS / steps), MIN_EPOCHS), MAX_EPOCHS)
        choose("epochs", epochs, f"{steps} steps an epoch ({items} training {what}): about {TARGET_STEPS} steps "
               f"({MIN_EPOCHS} to {MAX_EPOCHS} epochs)")  # fmt: skip
        choose("time_budget", TIME_BUDGET_MINUTES, "at most this many minutes: the epochs that fit on this machine are planned")
    else:
        epochs = config.epochs
    horizon = epochs if epochs is not None else MIN_EPOCHS
    choose("warmup_epochs", round(min(WARMUP_STEPS / steps, 0.1 * horizon), 2), f"about {WARMUP_STEPS} warm-up steps")
