"""Detection and instance segmentation: train, evaluate and predict torchvision
Faster / Mask R-CNN with BoTNet FPN backbones on COCO-format data.

A run folder holds what a classification run holds: config.json, metrics.csv
(per epoch: losses, box and mask AP), summary.json (COCO metrics in percent as
bbox_AP, bbox_AP50, ..., segm_APl), model.safetensors (with the metadata to
rebuild the detector), last.pt (atomic, weights_only-loadable, for
``--resume``), train.log and predictions.png (held-out images with their
detections). Without data, a synthetic shapes dataset is generated into the
run folder (``botnet.data.shapes``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import FrozenBatchNorm2d
from torchvision.transforms import v2
from tqdm import tqdm

from ..checkpoints import Checkpoint, DetectorMeta, open_checkpoint
from ..data.box_masks import BoxMasks, RandomHorizontalFlip
from ..data.coco import CocoDetection
from ..data.detection_profile import profile_annotations
from ..data.formats import FORMATS, DetectionSplit, DetectionSplits, find_layout
from ..data.holdout import HELDOUT_FILE, read_heldout
from ..data.images import read_pixels
from ..data.shapes import ShapesSpec, write_shapes_dataset
from ..detection.draw import draw_detections, tile_images
from ..detection.metrics import (
    CONFUSION_IOU, CONFUSION_SCORE, DetectionEvaluation, detections_to_coco, evaluate_coco, per_class_table,
)
from ..detection.models import DETECTORS, create_detector
from ..models import create_model
from ..errors import CheckpointError, ConfigError, DatasetError, first_line
from ..files import atomic_write
from ..interrupts import init_helper_process
from ..records import read_record
from ..training.checkpoint import restore_training_state
from ..training.distributed import DistEnv, broadcast_object, gather_objects
from ..detection.sampler import GroupedBatchSampler
from ..detection.tiles import TileDataset, check_tiles, detect_tiled, tile_count
from ..training.engine import FitResult
from ..training.loaders import train_loader
from ..training.pipeline import Built, Fitted, run_task
from ..training.report import plot_confusion, plot_pr_curves, write_json
from ..training.runs import run_stamp
from ..training.settings import Recipe, RunSettings, apply_recipe, check_model_overrides, check_settings, label, setting
from .detection_defaults import demo_schedule, fit_detection_defaults

__all__ = [
    "DETECT_RECIPES",
    "DetectConfig",
    "Detection",
    "DetectorSettings",
    "build_detector",
    "detect",
    "with_masks",
    "evaluate_detector",
    "evaluate_detector_checkpoint",
    "write_evaluation_plots",
    "load_detector",
    "predict_detections",
    "train_detector",
]

SHAPES = "shapes"
LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
METRIC_COLUMNS = ["epoch", "train_loss", *LOSS_NAMES, "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "lr", "seconds"]


# The detection recipes: values for DetectConfig's settings, taken where the user gives none. Their learning
# rate is for lr_reference_batch images per step (over all processes), scaled linearly to the run's.
DETECT_RECIPES: dict[str, Recipe] = {
    # CPU-sized: the bundled demo's settings (a mini backbone, small anchors and heads for ~128 px images;
    # 1,536 generated training images seen 5 times beat 640 seen 12 times at the same cost).
    "small": Recipe(dict(
        detector="maskrcnn", backbone="botnet_mini", epochs=5, batch_size=4, optimizer="adamw", lr=1.5e-3,
        weight_decay=0.05, momentum=0.9, warmup_epochs=0.5, min_size=128, max_size=176, fpn_channels=64,
        anchor_sizes=(8, 16, 32, 64, 128), box_head_width=512, mask_head_width=64, proposals=(600, 300, 300, 150),
        box_batch_size_per_image=64, roi_sampling_ratio=1, eval_every=5,
    ), lr_reference_batch=4),
    # The paper's COCO set-up (Sec. 4.1): Mask R-CNN, FPN, 1024 px, 36 epochs, large-scale jitter (scales
    # 0.1-2.0, then a 1024 x 1024 crop); torchvision's heads, anchors and proposal counts; SGD at 0.02 per
    # 16 images (torchvision's reference schedule shape).
    "paper": Recipe(dict(
        detector="maskrcnn", backbone="botnet50", epochs=36, batch_size=2, optimizer="sgd", lr=0.02,
        weight_decay=1e-4, momentum=0.9, warmup_epochs=0.25, min_size=1024, max_size=1024, fpn_channels=256,
        proposals=(2000, 2000, 1000, 1000), box_batch_size_per_image=512, roi_sampling_ratio=2, eval_every=1,
        scale_jitter=(0.1, 2.0),
    ), lr_reference_batch=16),
}  # fmt: skip
DATA_PATHS = ("train_images", "train_annotations", "val_images", "val_annotations")


@dataclass
class DetectConfig(RunSettings):
    """Every setting of a detection run (saved as config.json); ``None`` takes the recipe's value."""

    data: str | None = setting(
        optional=True,
        help="a labelling tool's export as it is (a folder of COCO, Pascal VOC, YOLO or LabelMe labels, a data.yaml "
        "or a COCO .json; docs/detection.md says how each is read); without a val split one is held out; unset "
        "settings are fitted to it",
    )
    data_format: str | None = setting(
        choices=FORMATS, optional=True, help="the labels to read where --data holds several formats (coco, voc, yolo, labelme)"
    )
    train_images: str | None = setting(optional=True, help="training image folder (instead of --data's layout)")
    train_annotations: str | None = setting(optional=True, help="training instances JSON (COCO format)")
    val_images: str | None = setting(optional=True, help="held-out image folder")
    val_annotations: str | None = setting(optional=True, help="held-out instances JSON")
    recipe: str | None = setting(choices=tuple(DETECT_RECIPES), help="preset of the unset settings (default small)")
    detector: str | None = setting(choices=tuple(DETECTORS), help="Mask R-CNN (boxes and masks) or Faster R-CNN (boxes)")
    backbone: str | None = setting(help="a name from `botnet list`")
    model_overrides: dict[str, Any] | None = setting(
        flag=False, optional=True, help="create_model settings of the backbone (an ablation's variant)"
    )
    min_size: int | None = setting(positive=True, help="images are resized so the short side is this ...")
    max_size: int | None = setting(positive=True, help="... and the long side at most this (torchvision's transform)")
    fpn_channels: int | None = setting(positive=True, help="channels of the feature pyramid")
    anchor_sizes: tuple[int, ...] | None = setting(  # None (the paper recipe): torchvision's, 8 x the stride
        positive=True, optional=True, nargs=5, metavar="PX", help="one anchor size per level P2..P6 (default: 8 x each level's stride)"
    )
    box_head_width: int | None = setting(positive=True, optional=True, help="width of the two-layer box head (torchvision 1024)")
    mask_head_width: int | None = setting(positive=True, optional=True, help="channels of the mask head's convolutions (torchvision 256)")
    proposals: tuple[int, int, int, int] | None = setting(
        positive=True, metavar=("PRE_TRAIN", "POST_TRAIN", "PRE_TEST", "POST_TEST"),
        help="RPN proposals kept before and after NMS, training then testing",
    )  # fmt: skip
    box_batch_size_per_image: int | None = setting(positive=True, help="RoIs sampled per image to train the box head")
    roi_sampling_ratio: int | None = setting(positive=True, help="RoI-Align samples per bin side")
    eval_every: int | None = setting(positive=True, help="evaluate every N epochs (and always after the last)")
    backbone_weights: str | None = setting(metavar="FILE", optional=True, help="torchvision ResNet state dict to initialise c1-c4")
    trainable_layers: int | None = setting(optional=True, help="stages trained, counted from c5 (0-5)")
    scale_jitter: tuple[float, float] | None = setting(
        positive=True, optional=True, metavar=("LOW", "HIGH"),
        help="large-scale jitter: resize by a factor in [LOW, HIGH] of --min-size, crop/pad to it (paper: 0.1 2.0)",
    )  # fmt: skip
    tiles: tuple[int, int] | None = setting(
        optional=True, nargs=2, metavar=("SIZE", "OVERLAP"),
        help="train on SIZE-px tiles of the images at their own scale and predict tile by tile, tiles overlapping by "
        "OVERLAP px (large images with small objects; each tile is resized as --min-size/--max-size say)",
    )  # fmt: skip
    skip_bad: bool = setting(False, help="leave out bad images and annotations (counted) instead of stopping")
    shapes_train_images: int = setting(ShapesSpec.train_images, flag=False, help="generated training images")
    shapes_val_images: int = setting(ShapesSpec.val_images, flag=False, help="generated held-out images")

    @property
    def with_masks(self) -> bool:
        return with_masks(self.detector)

    @property
    def synthetic(self) -> bool:
        return self.data is None and not any(getattr(self, key) for key in DATA_PATHS)

    @property
    def data_name(self) -> str:
        """The data as run folders name it: its folder's (or first file's) name, or the synthetic shapes'."""
        if self.synthetic:
            return SHAPES
        return os.path.basename(os.path.normpath(self.data or next(getattr(self, k) for k in DATA_PATHS if getattr(self, k))))

    def resolve(self, world_size: int) -> DetectConfig:
        check_settings(self)
        values = apply_recipe(self, DETECT_RECIPES, self.recipe or "small", world_size)
        if values["output_dir"] is None:
            values["output_dir"] = os.path.join("runs", f"detect-{self.data_name}-{values['backbone']}-{run_stamp()}")
        for key in ("data", *DATA_PATHS, "backbone_weights"):
            if values[key] is not None:
                values[key] = os.path.abspath(values[key])  # a resume from another folder finds them
        for key in ("anchor_sizes", "proposals", "scale_jitter", "tiles"):
            if values[key] is not None:
                values[key] = tuple(values[key])
        if values["workers"] is None:
            values["workers"] = 0
        config = DetectConfig(**values)
        config.check()
        return config

    def check(self) -> None:
        self.check_run()
        backbone = check_model_overrides(self.backbone, self.model_overrides)  # unknown names fail with suggestions
        self.check_data()
        smallest = backbone.reduction()
        if self.min_size < smallest:
            raise ConfigError(
                f"{label('min_size')} {self.min_size} is too small for {self.backbone}, which downsamples by {smallest}"
            )
        if self.scale_jitter is not None and not self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ConfigError(f"{label('scale_jitter')} needs 0 < LOW <= HIGH, got {self.scale_jitter}")
        if self.tiles is not None and self.scale_jitter is not None:
            raise ConfigError(
                f"{label('tiles')} and {label('scale_jitter')} (given, or the {self.recipe or 'small'} recipe's) each "
                "crop the images their own way: give one"
            )
        if self.tiles is not None and (problem := check_tiles(*self.tiles)):
            raise ConfigError(f"{label('tiles')} {' '.join(map(str, self.tiles))}: {problem}")
        if self.max_size < self.min_size:
            raise ConfigError(
                f"{label('max_size')} ({self.max_size}) must be at least {label('min_size')} ({self.min_size})"
            )
        if self.synthetic and (self.shapes_train_images < 1 or self.shapes_val_images < 1):
            raise ConfigError("the synthetic dataset needs at least one training and one held-out image")

    def check_data(self) -> None:
        """``data`` or all four COCO paths (or neither: the generated shapes)."""
        given = [label(name) for name in DATA_PATHS if getattr(self, name)]
        if self.data is not None and given:
            raise ConfigError(f"give {label('data')} ROOT or the four COCO paths, not both ({', '.join(given)} given)")
        if self.data is None and not self.synthetic and len(given) < len(DATA_PATHS):
            unset = [label(name) for name in DATA_PATHS if not getattr(self, name)]
            raise ConfigError(f"COCO data needs {label('data')} ROOT or all four paths; missing {', '.join(unset)}")

    def detector_settings(self) -> DetectorSettings:
        """What rebuilding the trained detector needs besides its classes (saved with the weights)."""
        names = {f.name for f in dataclasses.fields(DetectorSettings)} - {"frozen_batch_norm"}
        return DetectorSettings(
            **{name: getattr(self, name) for name in names},
            # Pretrained ResNet parts get frozen BatchNorm (botnet_fpn_backbone's default); the rebuilt model needs it too.
            frozen_batch_norm=self.backbone_weights is not None,
        )


def with_masks(detector: str | nn.Module) -> bool:
    """Whether ``detector`` (a name from DETECTORS, or a built model) also predicts instance masks, and so
    needs them in the annotations and is scored on them."""
    if isinstance(detector, nn.Module):
        return detector.roi_heads.has_mask()
    return detector == "maskrcnn"


@dataclass
class DetectorSettings:
    """A trained detector's architecture, with DetectConfig's names (saved in its weights' metadata)."""

    detector: str
    backbone: str
    min_size: int
    max_size: int
    fpn_channels: int
    anchor_sizes: list[int] | None
    box_head_width: int | None
    mask_head_width: int | None
    proposals: list[int]
    box_batch_size_per_image: int
    roi_sampling_ratio: int
    frozen_batch_norm: bool = False
    model_overrides: dict[str, Any] | None = None
    tiles: list[int] | None = None  # (size, overlap): predicts tile by tile (botnet.detection.tiles)

    def __post_init__(self) -> None:  # tuples from a config, lists from JSON: lists, as the file holds them
        self.anchor_sizes = list(self.anchor_sizes) if self.anchor_sizes is not None else None
        self.proposals = list(self.proposals)
        self.tiles = list(self.tiles) if self.tiles is not None else None


def build_detector(settings: DetectorSettings, num_classes: int, **kwargs: Any) -> nn.Module:
    """A detector from its settings (create_detector's arguments by the same names)."""
    values = dataclasses.asdict(settings)
    frozen = values.pop("frozen_batch_norm")
    values.pop("tiles")  # how the detector is run, not built
    return create_detector(
        values.pop("detector"), values.pop("backbone"), num_classes, img_size=(settings.min_size, settings.max_size),
        norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d, **values, **kwargs,
    )  # fmt: skip


def _collate(batch: list) -> tuple:
    return tuple(zip(*batch))


def _plain(image: Tensor) -> Tensor:
    return image.as_subclass(Tensor)


def detect(model: nn.Module, images: list[Tensor], tiles: list[int] | tuple[int, int] | None, batch_size: int = 4):
    """The detector's outputs for ``images``: whole, or tile by tile where it was trained on ``tiles``."""
    if tiles is None:
        return model(images)
    return [detect_tiled(model, image, *tiles, batch_size=batch_size) for image in images]


def _targets(targets: tuple[dict, ...], device: torch.device, with_masks: bool) -> list[dict[str, Tensor]]:
    keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
    return [{k: t[k].to(device) if isinstance(t[k], BoxMasks) else _plain(t[k]).to(device) for k in keys} for t in targets]


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    dataset: CocoDetection,
    *,
    tiles: list[int] | tuple[int, int] | None = None,
    batch_size: int = 4,
    workers: int = 0,
    progress: bool = False,
    env: DistEnv | None = None,
) -> DetectionEvaluation:
    """COCO box (and, for Mask R-CNN, mask) metrics of ``model`` on ``dataset``, in percent, overall and per
    class, with the precision-recall curves and the confusion matrix; with ``tiles`` (size, overlap) each image is
    detected tile by tile (:func:`~botnet.detection.tiles.detect_tiled`, ``batch_size`` tiles at once). Under DDP
    (``env``) each rank detects on its share of the batches and rank 0 scores all of them: the batches
    are the ones one process would make (padding to a batch's largest image changes detections a
    little), so the numbers equal one process evaluating the whole set."""
    model.eval()
    device = next(model.parameters()).device
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    if env is not None:
        batches = batches[env.rank :: env.world_size]
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate, worker_init_fn=init_helper_process
    )
    results: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc="evaluate", disable=not progress, leave=False, dynamic_ncols=True):
        outputs = detect(model, [_plain(im).to(device) for im in images], tiles, batch_size)
        for output, target in zip(outputs, targets):
            results += detections_to_coco(output, target["image_id"], dataset.category_ids)
    kinds = ("bbox", "segm") if with_masks(model) else ("bbox",)
    if env is None or not env.distributed:
        return evaluate_coco(dataset.coco_gt, results, kinds)
    every = [r for rank_results in gather_objects(results, env) for r in rank_results]
    return broadcast_object(evaluate_coco(dataset.coco_gt, every, kinds) if env.is_main else None, env)


def _generate_shapes(config: DetectConfig, run_dir: str, log) -> tuple[str, str, str, str]:
    """The four paths of the synthetic shapes dataset in the run folder, generated unless it is there."""
    root = os.path.join(run_dir, "data")
    spec = ShapesSpec(train_images=config.shapes_train_images, val_images=config.shapes_val_images)
    marker = os.path.join(root, "spec.json")
    if not os.path.exists(marker):  # a resumed run reuses what it generated
        log.info(f"generating the synthetic shapes dataset in {root} ({spec.train_images} + {spec.val_images} images)")
        write_shapes_dataset(root, spec)
        write_json(marker, dataclasses.asdict(spec))
    (train_images, train_ann), (val_images, val_ann) = (
        (os.path.join(root, s, "images"), os.path.join(root, s, "annotations.json")) for s in ("train", "val")
    )
    return train_images, train_ann, val_images, val_ann


def train_transforms(config: DetectConfig) -> v2.Transform:
    """Horizontal flips; with ``scale_jitter`` first large-scale jitter (Ghiasi et al. 2021, the paper's
    detection augmentation): resize by a random factor of the min_size square, crop or pad to it, and
    drop the boxes (and masks) that the crop leaves empty. Without it the masks are BoxMasks crops
    (see ``mask_crops``)."""
    flip = RandomHorizontalFlip(0.5)
    if config.scale_jitter is None:
        return flip
    size = (config.min_size, config.min_size)
    return v2.Compose([
        v2.ScaleJitter(size, scale_range=config.scale_jitter, antialias=True),
        v2.RandomCrop(size, pad_if_needed=True),
        flip,
        v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip


def mask_crops(config: DetectConfig) -> bool:
    """Whether training masks are BoxMasks crops: always but under scale jitter, whose v2 crop and resize
    take dense masks."""
    return config.scale_jitter is None


def data_splits(config: DetectConfig) -> DetectionSplits:
    """The training and held-out splits the settings name: ``data`` as it was exported (a resumed run holds
    out what its heldout.txt lists), or the four COCO paths."""
    if config.data is not None:
        heldout = read_heldout(os.path.join(config.output_dir, HELDOUT_FILE)) if config.output_dir else None
        return find_layout(config.data, data_format=config.data_format, heldout=heldout)
    return _coco_files(*(getattr(config, key) for key in DATA_PATHS))


def _coco_files(train_images: str, train_ann: str, val_images: str, val_ann: str) -> DetectionSplits:
    return DetectionSplits(
        "coco", os.path.dirname(train_ann), DetectionSplit("train", train_images, train_ann, ann_file=train_ann),
        DetectionSplit("val", val_images, val_ann, ann_file=val_ann),
    )  # fmt: skip


def _load_datasets(config: DetectConfig, splits: DetectionSplits):
    """The checked training and held-out sets (same categories)."""
    masks = config.with_masks
    train_set = splits.train.dataset(
        transforms=None if config.tiles else train_transforms(config), skip_bad=config.skip_bad, with_masks=masks,
        mask_crops=mask_crops(config),
    )  # fmt: skip
    val_set = splits.val.dataset(skip_bad=config.skip_bad, with_masks=masks)
    if train_set.category_ids != val_set.category_ids:
        raise DatasetError(
            f"the training and held-out annotations list different categories ({train_set.category_ids} vs "
            f"{val_set.category_ids}); both must use the same category ids"
        )
    if config.tiles:
        train_set = TileDataset(train_set, *config.tiles, transforms=train_transforms(config))
    return train_set, val_set


class _Detection:
    """The detection task for the engine: the detector's summed losses, COCO AP every ``eval_every`` epochs."""

    columns = METRIC_COLUMNS
    head, head_epochs = None, 0  # the whole detector trains from the start

    def __init__(self, config: DetectConfig, val_set: CocoDetection, env: DistEnv) -> None:
        self.config, self.val_set, self.env = config, val_set, env
        self.eval_every = config.eval_every
        self.final: DetectionEvaluation | None = None  # the last epoch's, per class too

    def loss(self, model: nn.Module, batch, device: torch.device):
        images, targets = batch
        losses = model([_plain(im).to(device) for im in images], _targets(targets, device, self.config.with_masks))
        return sum(losses.values()), losses, len(images)

    def evaluate(self, model: nn.Module, epoch: int, last: bool, amp: torch.dtype | None) -> dict[str, float]:
        # in float32 whatever training uses: boxes decoded in bfloat16 would be off by pixels
        if not last and (epoch + 1) % self.eval_every:
            return {}
        evaluation = evaluate_detector(
            model, self.val_set, tiles=self.config.tiles, batch_size=self.config.batch_size,
            workers=self.config.workers,
            progress=self.env.is_main and sys.stderr.isatty(), env=self.env,
        )  # fmt: skip
        if last:
            self.final = evaluation
        return evaluation.metrics

    def describe(self, row) -> str:
        evaluated = ", ".join(f"{k} {row[k]:.1f}" for k in ("bbox_AP", "bbox_AP50", "segm_AP") if k in row)
        return f"loss {row['train_loss']:.4f}{'; ' + evaluated if evaluated else ''}"


def _aspect_groups(dataset: CocoDetection) -> list[int]:
    """0 for landscape or square images, 1 for portrait ones (batches keep to one group)."""
    return [int(image["height"] > image["width"]) for image in dataset.coco_gt["images"]]


class Detection:
    """The detection task for ``botnet.training.pipeline.run_task``."""

    name = "detection"
    command = DetectorMeta.train_command
    # botnet detect ablate: the setting the variants change, the folder's prefix, summary key -> study.csv column
    study_setting, study_prefix, study_metrics = "backbone", "ablate-detect", {"bbox_AP": "box_ap", "segm_AP": "mask_ap"}
    summary_old_names = dict(img_size="min_size")
    config_class = DetectConfig
    metric_columns = METRIC_COLUMNS
    required_columns = ("epoch", "train_loss", "lr", "seconds")  # AP only in the epochs that evaluate
    min_batch = 1
    min_batch_reason = "one image a step: the detectors' heads have no batch norm"

    def __init__(self) -> None:
        self._splits: DetectionSplits | None = None  # read once: the fitted defaults and the data both use them

    def _read_splits(self, config: DetectConfig) -> DetectionSplits:
        if self._splits is None:
            self._splits = data_splits(config)
        return self._splits

    def fit_defaults(self, config: DetectConfig, world_size: int) -> tuple[DetectConfig, Fitted | None]:
        """The generated shapes keep the small recipe within a time budget (``demo_schedule``); a user's data
        gets the settings fitted to it (:mod:`botnet.tasks.detection_defaults`)."""
        if config.synthetic:
            config, choices = demo_schedule(config, DETECT_RECIPES["small"].settings["epochs"])
            return config, Fitted(SHAPES, [dataclasses.asdict(c) for c in choices]) if choices else None
        config.check_data()
        splits = self._read_splits(config)
        profile = profile_annotations(splits.train.coco(), splits.val.coco())
        config, choices = fit_detection_defaults(config, profile, world_size)
        if not choices:
            return config, None
        return config, Fitted(f"{splits.format} at {splits.root}: {profile.describe()}",
                              [dataclasses.asdict(choice) for choice in choices])  # fmt: skip

    def load_data(self, config: DetectConfig, env: DistEnv):
        return None if config.synthetic else _load_datasets(config, self._read_splits(config))

    def make_data(self, config: DetectConfig, log):
        return _load_datasets(config, _coco_files(*_generate_shapes(config, config.output_dir, log)))

    @staticmethod
    def study_network(summary: dict[str, Any], in_chans: int) -> nn.Module:
        """The backbone a study's run trained (as its detector holds it), for its parameters and FLOPs."""
        overrides = summary.get("model_overrides") or {}
        return create_model(summary["backbone"], features_only=True, img_size=summary["min_size"], **overrides)

    @staticmethod
    def attention_input(checkpoint: Checkpoint, image_path: str) -> tuple[nn.Module, Tensor, list[float], list[float]]:
        """``botnet attention``: the detector's backbone, the image resized, normalised and padded as the
        detector sees it (a batch of one), and the normalisation to undo when drawing it."""
        detector, _ = load_detector(checkpoint)
        image = v2.functional.to_dtype(read_pixels(image_path, "RGB"), torch.float32, scale=True)
        batch = detector.transform([image])[0].tensors
        return detector.backbone, batch, list(detector.transform.image_mean), list(detector.transform.image_std)

    @staticmethod
    def export_parts(checkpoint: Checkpoint) -> tuple[nn.Module, Tensor, dict[str, Any]]:
        """``botnet export``: the detector's backbone and FPN (what exports; the RPN and RoI heads stay in
        PyTorch), an example input at its resize size, and the metadata a deployment needs."""
        detector, meta = load_detector(checkpoint)
        transform, tiles = detector.transform, meta["settings"].get("tiles")
        side = -(-int(transform.min_size[0]) // 32) * 32
        extra = dict(
            model=meta["settings"]["backbone"] + " + FPN (detector backbone)",
            classes=meta["classes"],
            mean=list(transform.image_mean),
            std=list(transform.image_std),
            min_size=int(transform.min_size[0]),
            max_size=int(transform.max_size),
            **({"tiles": tiles} if tiles else {}),
            note=(
                "the backbone and FPN of a torchvision detector: resize images so the short side is min_size "
                "(the long side at most max_size), normalise by mean and std, pad to a multiple of 32; run the "
                "RPN and RoI heads on the outputs in PyTorch"
                + ("; trained on tiles (SIZE, OVERLAP px of the image): cut images into them first" if tiles else "")
            ),
        )
        return detector.backbone, torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)), extra

    def data_warnings(self, data) -> list[str]:
        return [f"{name} data: left out {dataset.skipped.summary()}" for name, dataset in zip(("training", "held-out"), data)
                if dataset.skipped.total()]  # fmt: skip

    def data_report(self, data) -> list[str]:
        return self._splits.report if self._splits else []

    def heldout(self, data) -> set[str] | None:
        return self._splits.heldout if self._splits else None

    def train_images(self, data) -> int:
        return len(data[0])

    def build(self, config: DetectConfig, data, env: DistEnv, state, log) -> Built:
        train_set, val_set = data
        num_classes = len(train_set.category_ids) + 1
        settings = config.detector_settings()
        model = build_detector(
            settings, num_classes, backbone_weights=config.backbone_weights, trainable_layers=config.trainable_layers
        )
        # the anchors in use, saved as numbers: a later version's defaults must not change a trained detector
        settings.anchor_sizes = [int(sizes[0]) for sizes in model.rpn.anchor_generator.sizes]
        meta = DetectorMeta(
            settings=dataclasses.asdict(settings), num_classes=num_classes, classes=train_set.classes,
            category_ids=train_set.category_ids, val_images=os.path.abspath(val_set.image_dir),
            val_annotations=os.path.abspath(val_set.ann_file) if os.path.isfile(val_set.ann_file) else None,
            dataset=config.data, data_format=config.data_format,
        )  # fmt: skip
        groups = train_set.groups() if config.tiles else _aspect_groups(train_set)
        loader = train_loader(
            train_set, config.batch_size, env, seed=config.seed, workers=config.workers, collate_fn=_collate,
            batch_sampler=lambda sampler, batch: GroupedBatchSampler(sampler, groups, batch),
        )  # fmt: skip
        params = sum(p.numel() for p in model.parameters())
        description = (
            f"{config.detector} with a {config.backbone} FPN backbone ({params / 1e6:.2f}M parameters), "
            f"{num_classes - 1} classes, {len(train_set)} training {'tiles' if config.tiles else 'images'} / "
            f"{len(val_set)} held-out images"
        )
        task = _Detection(config, val_set, env)
        evaluated = len(val_set)  # what an evaluation runs the detector on: images, or their tiles
        if config.tiles:
            evaluated = sum(tile_count(height, width, *config.tiles) for width, height, _ in val_set.image_boxes())
        return Built(model, task, loader, meta.as_dict(), evaluated // env.world_size, description)

    def summary(self, config: DetectConfig, data, built: Built, result: FitResult) -> dict[str, Any]:
        train_set, val_set = data
        return dict(
            **{k: round(v, 3) for k, v in result.metrics.items()},
            detector=config.detector,
            backbone=config.backbone,
            model_overrides=config.model_overrides,
            min_size=config.min_size,
            max_size=config.max_size,
            tiles=config.tiles,
            dataset=SHAPES if config.synthetic else (config.data or config.train_annotations),
            classes=train_set.classes,
            params=sum(p.numel() for p in result.eval_model.parameters()),
            val_images=len(val_set),
            skipped=dict(train=train_set.skipped.as_dict(), val=val_set.skipped.as_dict()),
            **(built.task.final.as_dict() if built.task.final else {}),
        )

    def write_artefacts(self, config: DetectConfig, data, built: Built, result: FitResult) -> None:
        grid = os.path.join(config.output_dir, "predictions.png")
        _save_prediction_grid(result.eval_model, data[1], grid, config.tiles)
        if built.task.final:
            write_evaluation_plots(built.task.final, config.output_dir)

    def done(self, summary: dict[str, Any], result: FitResult) -> str:
        headline = ", ".join(
            f"{k} {summary[k]:.1f}" for k in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50") if k in summary
        )
        table = per_class_table(summary["per_class"]) if "per_class" in summary else []
        return "\n".join([f"done: {headline} on {summary['val_images']} held-out images", *table])


def train_detector(
    config: DetectConfig | None = None, *, resume: str | None = None, epochs: int | None = None
) -> dict[str, Any]:
    """Train a detector; returns the summary (also written to summary.json). Runs alone or under torchrun.

    ``resume``: a run's last.pt; the run continues with its saved settings in its own folder (``epochs``
    may extend it; the schedule is then planned again for the new total).
    Ctrl-C (or SIGTERM) stops at the end of the current step, saves last.pt and raises RunInterrupted;
    an expected failure once training has started raises RunFailed naming the checkpoint to resume."""
    return run_task(Detection(), config, resume=resume, epochs=epochs)


def write_evaluation_plots(evaluation: DetectionEvaluation, folder: str) -> list[str]:
    """pr_curves.png (precision against recall per class) and confusion.png (classes and background) of
    ``evaluation`` in ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "pr_curves.png"), os.path.join(folder, "confusion.png")]
    plot_pr_curves(evaluation.pr_curves, evaluation.per_class, paths[0])
    title = f"boxes scoring >= {CONFUSION_SCORE}, matched at IoU >= {CONFUSION_IOU}"
    plot_confusion(torch.tensor(evaluation.confusion), [*evaluation.classes, "background"], paths[1], title)
    return paths


@torch.no_grad()
def _save_prediction_grid(
    model: nn.Module, dataset: Dataset, path: str, tiles: tuple[int, int] | None = None, count: int = 8,
    score_threshold: float = 0.5,
) -> None:
    model.eval()
    device = next(model.parameters()).device
    images = [dataset[index][0] for index in range(min(count, len(dataset)))]
    scale = max(1, round(384 / max(max(image.shape[-2:]) for image in images)))  # one scale: labels stay readable
    drawn = []
    for image in images:
        output = {k: v.cpu() for k, v in detect(model, [_plain(image).to(device)], tiles)[0].items()}
        drawn.append(draw_detections(_plain(image), output, dataset.classes, score_threshold, scale=scale))
    grid = tile_images(drawn)
    atomic_write(path, lambda f: f.write(_png_bytes(grid)))


def _png_bytes(image: Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def load_detector(checkpoint: str | Checkpoint) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained detector from a run's model.safetensors or last.pt (a path, or the file as
    :func:`~botnet.checkpoints.open_checkpoint` read it), in eval mode, with its metadata
    (a :class:`~botnet.checkpoints.DetectorMeta` as a dict)."""
    opened = open_checkpoint(checkpoint, "detection")
    path, meta = opened.path, opened.meta
    settings = read_record(DetectorSettings, meta.settings, path, "detector settings")
    if len(meta.classes) != meta.num_classes - 1:
        raise CheckpointError(f"{path}: its class names do not match its {meta.num_classes} classes; the file is damaged")
    try:
        model = build_detector(settings, meta.num_classes)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: its detector settings are not ones this version builds ({first_line(error)})"
        ) from error
    restore_training_state({"model": opened.weights}, path, model=model)
    return model.eval(), meta.as_dict()


def evaluate_detector_checkpoint(
    checkpoint: str,
    images: str | None = None,
    annotations: str | None = None,
    *,
    data: str | None = None,
    data_format: str | None = None,
    split: str = "val",
    batch_size: int = 4,
    skip_bad: bool = False,
) -> tuple[DetectionEvaluation, dict[str, Any], CocoDetection]:
    """COCO metrics (overall and per class) of a saved detector on a held-out split: ``images`` and
    ``annotations`` (a COCO file), or ``data``'s ``split`` ("val" or "test"; data in any layout
    :func:`~botnet.data.formats.find_layout` reads, ``data_format`` choosing among several); by default the
    held-out split it was trained against (the very images its run held out, as listed in the run folder's
    heldout.txt)."""
    if batch_size < 1:
        raise ConfigError(f"{label('batch_size')} must be at least 1, got {batch_size}")
    model, meta = load_detector(checkpoint)
    masks = with_masks(model)
    if data is None and images is None and annotations is None:
        data = meta["dataset"]
    own_data = data is not None and meta["dataset"] is not None and os.path.abspath(data) == meta["dataset"]
    if data is not None:
        if images is not None or annotations is not None:
            raise ConfigError(f"give {label('data')} ROOT or the held-out images and annotations, not both")
        heldout = read_heldout(os.path.join(os.path.dirname(os.path.abspath(checkpoint)), HELDOUT_FILE)) if own_data else None
        data_format = data_format or (meta.get("data_format") if own_data else None)
        splits = find_layout(data, data_format=data_format, heldout=heldout)
        dataset = splits.split(split).dataset(skip_bad=skip_bad, with_masks=masks)
    else:
        if split != "val":
            raise ConfigError(f"--split {split} needs a dataset: give {label('data')} ROOT (or --images and --annotations)")
        images, annotations = images or meta["val_images"], annotations or meta["val_annotations"]
        if annotations is None:
            raise ConfigError(f"{checkpoint} names no held-out annotations file; give {label('annotations')} FILE")
        dataset = CocoDetection(images, annotations, skip_bad=skip_bad, with_masks=masks)
    if dataset.category_ids != meta["category_ids"]:
        raise DatasetError(
            f"{dataset.ann_file} lists categories {dataset.category_ids}, the model was trained on {meta['category_ids']}"
        )
    return evaluate_detector(model, dataset, tiles=meta["settings"].get("tiles"), batch_size=batch_size), meta, dataset


@torch.no_grad()
def predict_detections(
    checkpoint: str, images: list[str], *, output_dir: str | None = None, score_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Detections (class, score, box [x0, y0, x1, y1]) scoring at least ``score_threshold`` for each
    image file; with ``output_dir``, also a PNG per image with masks, boxes, names and scores drawn on."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"{label('score_threshold')} must be in [0, 1], got {score_threshold}")
    model, meta = load_detector(checkpoint)
    names = meta["classes"]
    results = []
    for path in images:
        image = v2.functional.to_dtype(read_pixels(path, "RGB"), torch.float32, scale=True)
        output = detect(model, [_plain(image)], meta["settings"].get("tiles"))[0]
        keep = output["scores"] >= score_threshold
        item: dict[str, Any] = dict(
            image=path,
            detections=[
                dict(label=names[label - 1], score=round(score, 4), box=[round(c, 2) for c in box])
                for label, score, box in zip(
                    output["labels"][keep].tolist(), output["scores"][keep].tolist(), output["boxes"][keep].tolist()
                )
            ],
        )
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            scale = max(1, round(384 / max(image.shape[-2:])))
            drawn = draw_detections(_plain(image), output, names, score_threshold, scale=scale)
            target = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            atomic_write(target, lambda f, d=drawn: f.write(_png_bytes(d)))
            item["drawing"] = target
        results.append(item)
    return results
