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

from ..data.coco import CocoDetection
from ..data.images import read_image
from ..data.shapes import ShapesSpec, write_shapes_dataset
from ..detection.draw import draw_detections, tile_images
from ..detection.metrics import coco_metrics, detections_to_coco
from ..detection.models import DETECTORS, create_detector
from ..errors import CheckpointError, ConfigError, DatasetError, first_line
from ..files import atomic_write
from ..interrupts import init_helper_process
from .checkpoint import (
    check_meta,
    check_metric_rows,
    check_new_run_dir,
    read_weights,
    restore_training_state,
    save_weights,
    saved_config,
)
from .distributed import (
    DistEnv,
    broadcast_object,
    gather_objects,
    init_distributed,
    main_process_first,
    shutdown_distributed,
)
from .engine import GroupedBatchSampler, Optimization, Run, check_tensorboard, fit, plan_run, train_loader
from .recipes import check_field_types, check_model_overrides, check_time_budget, check_workers, fill_from_recipe
from .report import setup_logging, write_json
from .runs import failures_end_the_run, open_run_dir, run_stamp, settings_and_state

__all__ = [
    "DETECT_RECIPES",
    "DetectConfig",
    "DetectRecipe",
    "evaluate_detector",
    "evaluate_detector_checkpoint",
    "load_detector",
    "predict_detections",
    "train_detector",
]

SHAPES = "shapes"
LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
METRIC_COLUMNS = ["epoch", "train_loss", *LOSS_NAMES, "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "lr", "seconds"]


@dataclass(frozen=True)
class DetectRecipe:
    """Defaults for a detection run; any DetectConfig field overrides them."""

    backbone: str
    epochs: int
    batch_size: int
    optimizer: str  # "sgd" (with momentum) or "adamw"
    lr: float  # for lr_reference_batch images per step, scaled linearly with the batch
    lr_reference_batch: int
    weight_decay: float
    momentum: float
    warmup_epochs: float
    min_size: int
    max_size: int
    fpn_channels: int
    anchor_sizes: tuple[int, ...] | None  # None: torchvision's 32..512
    box_head_width: int | None  # None: torchvision's 1024
    mask_head_width: int | None  # None: torchvision's 256
    proposals: tuple[int, int, int, int]  # RPN pre- and post-NMS top-n, training then testing
    box_batch_size_per_image: int  # RoIs sampled per image to train the box head (torchvision: 512)
    roi_sampling_ratio: int  # RoI-Align samples per bin side (torchvision: 2)
    eval_every: int
    scale_jitter: tuple[float, float] | None = None  # large-scale jitter's scale range (None: flips only)


DETECT_RECIPES = {
    # CPU-sized: the bundled demo's settings (a mini backbone, small anchors and heads for ~128 px images;
    # 1,536 generated training images seen 5 times beat 640 seen 12 times at the same cost).
    "small": DetectRecipe(
        backbone="botnet_mini", epochs=5, batch_size=4, optimizer="adamw", lr=1.5e-3, lr_reference_batch=4,
        weight_decay=0.05, momentum=0.9, warmup_epochs=0.5, min_size=128, max_size=176, fpn_channels=64,
        anchor_sizes=(8, 16, 32, 64, 128), box_head_width=512, mask_head_width=64,
        proposals=(600, 300, 300, 150), box_batch_size_per_image=64, roi_sampling_ratio=1, eval_every=5,
    ),
    # The paper's COCO set-up (Sec. 4.1): Mask R-CNN, FPN, 1024 px, 36 epochs, large-scale jitter (scales
    # 0.1-2.0, then a 1024 x 1024 crop); torchvision's heads, anchors and proposal counts; SGD at 0.02 per
    # 16 images (torchvision's reference schedule shape).
    "paper": DetectRecipe(
        backbone="botnet50", epochs=36, batch_size=2, optimizer="sgd", lr=0.02, lr_reference_batch=16,
        weight_decay=1e-4, momentum=0.9, warmup_epochs=0.25, min_size=1024, max_size=1024, fpn_channels=256,
        anchor_sizes=None, box_head_width=None, mask_head_width=None,
        proposals=(2000, 2000, 1000, 1000), box_batch_size_per_image=512, roi_sampling_ratio=2, eval_every=1,
        scale_jitter=(0.1, 2.0),
    ),
}  # fmt: skip


@dataclass
class DetectConfig:
    """Every setting of a detection run (saved as config.json); ``None`` takes the recipe's value."""

    data: str | None = None  # ROOT with train/ and val/ (images/ + annotations.json each); None: synthetic shapes
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    detector: str = "maskrcnn"
    backbone: str | None = None
    model_overrides: dict[str, Any] | None = None  # create_model settings of the backbone (an ablation's variant)
    recipe: str = "small"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    warmup_epochs: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    fpn_channels: int | None = None
    anchor_sizes: tuple[int, ...] | None = None
    box_head_width: int | None = None
    mask_head_width: int | None = None
    proposals: tuple[int, int, int, int] | None = None
    box_batch_size_per_image: int | None = None
    roi_sampling_ratio: int | None = None
    eval_every: int | None = None
    backbone_weights: str | None = None  # a torchvision ResNet state dict file (c1..c4 init)
    trainable_layers: int | None = None
    shapes_train_images: int = ShapesSpec.train_images
    shapes_val_images: int = ShapesSpec.val_images
    seed: int = 0
    output_dir: str | None = None
    workers: int = 0
    skip_bad: bool = False
    scale_jitter: tuple[float, float] | None = None
    amp: bool = False
    sync_bn: bool = False
    clip_grad: float | None = None
    tensorboard: bool = False
    time_budget: float | None = None  # minutes: plan the epochs to fit (instead of --epochs)

    def resolve(self) -> DetectConfig:
        check_field_types(self)
        if self.recipe not in DETECT_RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(DETECT_RECIPES)}")
        recipe = DETECT_RECIPES[self.recipe]
        values = fill_from_recipe(self, recipe)
        if self.lr is None:
            values["lr"] = recipe.lr * values["batch_size"] / recipe.lr_reference_batch
        if self.data is not None:
            for split in ("train", "val"):
                values[f"{split}_images"] = values[f"{split}_images"] or os.path.join(self.data, split, "images")
                values[f"{split}_annotations"] = values[f"{split}_annotations"] or os.path.join(
                    self.data, split, "annotations.json"
                )
        if values["output_dir"] is None:
            named = self.data or self.train_images or self.train_annotations or self.val_images or self.val_annotations
            source = SHAPES if self.synthetic else os.path.basename(os.path.normpath(named))
            values["output_dir"] = os.path.join(
                "runs", f"detect-{source}-{values['backbone']}-{run_stamp()}"
            )
        for key in ("data", "train_images", "train_annotations", "val_images", "val_annotations", "backbone_weights"):
            if values[key] is not None:
                values[key] = os.path.abspath(values[key])  # a resume from another folder finds them
        for key in ("anchor_sizes", "proposals"):
            if values[key] is not None:
                values[key] = tuple(int(v) for v in values[key])
        if values["scale_jitter"] is not None:
            values["scale_jitter"] = tuple(float(v) for v in values["scale_jitter"])
        config = DetectConfig(**values)
        config.check()
        return config

    @property
    def synthetic(self) -> bool:
        return self.data is None and not any(
            (self.train_images, self.train_annotations, self.val_images, self.val_annotations)
        )

    def check(self) -> None:
        check_field_types(self)
        if self.detector not in DETECTORS:
            raise ConfigError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        backbone = check_model_overrides(self.backbone, self.model_overrides)  # unknown names fail with suggestions
        check_time_budget(self.time_budget)
        if not self.synthetic:
            paths = dict(train_images=self.train_images, train_annotations=self.train_annotations,
                         val_images=self.val_images, val_annotations=self.val_annotations)  # fmt: skip
            unset = [f"--{name.replace('_', '-')}" for name, value in paths.items() if not value]
            if unset:
                raise ConfigError(f"COCO data needs --data ROOT or all four paths; missing {', '.join(unset)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        positive = ("epochs", "batch_size", "lr", "min_size", "max_size", "fpn_channels", "eval_every",
                    "box_batch_size_per_image", "roi_sampling_ratio")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        smallest = backbone.reduction()
        if self.min_size < smallest:
            raise ConfigError(f"--min-size {self.min_size} is too small for {self.backbone}, which downsamples by {smallest}")
        if self.scale_jitter is not None and not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ConfigError(f"--scale-jitter needs 0 < LOW <= HIGH, got {self.scale_jitter}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.tensorboard:
            check_tensorboard()
        if self.max_size < self.min_size:
            raise ConfigError(f"--max-size ({self.max_size}) must be at least --min-size ({self.min_size})")
        check_workers(self.workers)
        if self.synthetic and (self.shapes_train_images < 1 or self.shapes_val_images < 1):
            raise ConfigError("the synthetic dataset needs at least one training and one held-out image")

    def detector_settings(self) -> dict[str, Any]:
        """What ``create_detector`` needs besides the classes (saved with the weights)."""
        return dict(
            kind=self.detector,
            backbone=self.backbone,
            img_size=[self.min_size, self.max_size],
            out_channels=self.fpn_channels,
            anchor_sizes=list(self.anchor_sizes) if self.anchor_sizes else None,
            box_head_width=self.box_head_width,
            mask_head_width=self.mask_head_width,
            min_size=self.min_size,
            max_size=self.max_size,
            rpn_pre_nms_top_n_train=self.proposals[0],
            rpn_post_nms_top_n_train=self.proposals[1],
            rpn_pre_nms_top_n_test=self.proposals[2],
            rpn_post_nms_top_n_test=self.proposals[3],
            box_batch_size_per_image=self.box_batch_size_per_image,
            roi_sampling_ratio=self.roi_sampling_ratio,
            # Pretrained ResNet parts get frozen BatchNorm (botnet_fpn_backbone's default); the rebuilt model needs it too.
            frozen_batch_norm=self.backbone_weights is not None,
            **({"backbone_overrides": self.model_overrides} if self.model_overrides else {}),
        )


def build_detector(settings: dict[str, Any], num_classes: int, **kwargs: Any) -> nn.Module:
    """A detector from saved ``settings`` (see DetectConfig.detector_settings)."""
    settings = dict(settings)
    kind, backbone = settings.pop("kind"), settings.pop("backbone")
    settings["img_size"] = tuple(settings["img_size"])
    settings["norm_layer"] = FrozenBatchNorm2d if settings.pop("frozen_batch_norm", False) else nn.BatchNorm2d
    return create_detector(kind, backbone, num_classes, **settings, **kwargs)


def _collate(batch: list) -> tuple:
    return tuple(zip(*batch))


def _plain(image: Tensor) -> Tensor:
    return image.as_subclass(Tensor)


def _targets(targets: tuple[dict, ...], device: torch.device, with_masks: bool) -> list[dict[str, Tensor]]:
    keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
    return [{k: _plain(t[k]).to(device) for k in keys} for t in targets]


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    dataset: CocoDetection,
    *,
    batch_size: int = 4,
    workers: int = 0,
    progress: bool = False,
    env: DistEnv | None = None,
) -> dict[str, float]:
    """COCO box (and, for Mask R-CNN, mask) metrics of ``model`` on ``dataset``, in percent. Under DDP
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
        outputs = model([_plain(im).to(device) for im in images])
        for output, target in zip(outputs, targets):
            results += detections_to_coco(output, target["image_id"], dataset.category_ids)
    with_masks = isinstance(model, DETECTORS["maskrcnn"])
    kinds = ("bbox", "segm") if with_masks else ("bbox",)
    if env is None or not env.distributed:
        return coco_metrics(dataset.coco_gt, results, kinds)
    every = [r for rank_results in gather_objects(results, env) for r in rank_results]
    return broadcast_object(coco_metrics(dataset.coco_gt, every, kinds) if env.is_main else None, env)


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


def train_detector(
    config: DetectConfig | None = None, *, resume: str | None = None, epochs: int | None = None
) -> dict[str, Any]:
    """Train a detector; returns the summary (also written to summary.json). Runs alone or under torchrun.

    ``resume``: a run's last.pt; the run continues with its saved settings in its own folder (``epochs``
    may extend it; the schedule is then planned again for the new total).
    Ctrl-C (or SIGTERM) stops at the end of the current step, saves last.pt and raises RunInterrupted;
    an expected failure once training has started raises RunFailed naming the checkpoint to resume."""
    env = init_distributed()
    try:
        user_config = config or DetectConfig()
        if resume is None:
            check_field_types(user_config)
            check_time_budget(user_config.time_budget, user_config.epochs)
        config, state = settings_and_state(user_config.resolve, _config_from_state, resume, epochs)
        return _train_detector(config, env, state, user_config)
    finally:
        shutdown_distributed()


def _train_detector(config: DetectConfig, env: DistEnv, state, user_config: DetectConfig) -> dict[str, Any]:
    run_dir = config.output_dir
    if state is None:
        check_new_run_dir(run_dir)  # before the data is checked, which may take a while
    with main_process_first(env):
        data = None if config.synthetic else _load_datasets(config, config.train_images, config.train_annotations,
                                                           config.val_images, config.val_annotations)  # fmt: skip
    with open_run_dir(run_dir, resuming=state is not None, writer=env.is_main):
        log = setup_logging(run_dir if env.is_main else None, env.is_main)
        if data is None:
            with main_process_first(env):  # rank 0 generates the shapes; the others read them
                data = _load_datasets(config, *_generate_shapes(config, run_dir, log))
        train_set, val_set = data
        for name, dataset in (("training", train_set), ("held-out", val_set)):
            if dataset.skipped.total() and env.is_main:
                log.warning(f"{name} data: left out {dataset.skipped.summary()}")
        per_process = len(train_set) // env.world_size
        if state is None and per_process < config.batch_size:
            if per_process < 1:
                raise DatasetError(f"the training split has {len(train_set)} images, fewer than the {env.world_size} processes")
            log.warning(f"the training split has {len(train_set)} images: batches of {per_process} instead of {config.batch_size}")
            # resolve again, so the learning rate (scaled with the batch) fits the batch that is used
            config = dataclasses.replace(user_config, batch_size=per_process, output_dir=run_dir).resolve()
        return _fit_detector(config, env, state, train_set, val_set, log)


def _config_from_state(state: dict[str, Any], path: str) -> DetectConfig:
    if state["meta"].get("task") != "detection":
        raise CheckpointError(f"{path} is not a detection run's checkpoint; resume it with `botnet train`")
    check_metric_rows(state, path, METRIC_COLUMNS, ("epoch", "train_loss", "lr", "seconds"))
    return saved_config(state, path, DetectConfig, DetectConfig.resolve)


def train_transforms(config: DetectConfig) -> v2.Transform:
    """Horizontal flips; with ``scale_jitter`` first large-scale jitter (Ghiasi et al. 2021, the paper's
    detection augmentation): resize by a random factor of the min_size square, crop or pad to it, and
    drop the boxes (and masks) that the crop leaves empty."""
    flip = v2.RandomHorizontalFlip(0.5)
    if config.scale_jitter is None:
        return flip
    size = (config.min_size, config.min_size)
    return v2.Compose([
        v2.ScaleJitter(size, scale_range=config.scale_jitter, antialias=True),
        v2.RandomCrop(size, pad_if_needed=True),
        flip,
        v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip


def _load_datasets(config: DetectConfig, train_images: str, train_ann: str, val_images: str, val_ann: str):
    """The checked training and held-out sets (same categories)."""
    with_masks = config.detector == "maskrcnn"
    train_set = CocoDetection(
        train_images, train_ann, transforms=train_transforms(config), skip_bad=config.skip_bad, with_masks=with_masks
    )
    val_set = CocoDetection(val_images, val_ann, skip_bad=config.skip_bad, with_masks=with_masks)
    if train_set.category_ids != val_set.category_ids:
        raise DatasetError(
            f"the training and held-out annotations list different categories ({train_set.category_ids} vs "
            f"{val_set.category_ids}); both must use the same category ids"
        )
    return train_set, val_set


class _Detection:
    """The detection task for the engine: the detector's summed losses, COCO AP every ``eval_every`` epochs."""

    columns = METRIC_COLUMNS

    def __init__(self, config: DetectConfig, val_set: CocoDetection, env: DistEnv, with_masks: bool) -> None:
        self.config, self.val_set, self.env, self.with_masks = config, val_set, env, with_masks

    def loss(self, model: nn.Module, batch, device: torch.device):
        images, targets = batch
        losses = model([_plain(im).to(device) for im in images], _targets(targets, device, self.with_masks))
        return sum(losses.values()), losses, len(images)

    def evaluate(self, model: nn.Module, epoch: int, last: bool) -> dict[str, float]:
        if not last and (epoch + 1) % self.config.eval_every:
            return {}
        return evaluate_detector(
            model, self.val_set, batch_size=self.config.batch_size, workers=self.config.workers,
            progress=self.env.is_main and sys.stderr.isatty(), env=self.env,
        )  # fmt: skip

    def describe(self, row) -> str:
        evaluated = ", ".join(f"{k} {row[k]:.1f}" for k in ("bbox_AP", "bbox_AP50", "segm_AP") if k in row)
        return f"loss {row['train_loss']:.4f}{'; ' + evaluated if evaluated else ''}"


def _aspect_groups(dataset: CocoDetection) -> list[int]:
    """0 for landscape or square images, 1 for portrait ones (batches keep to one group)."""
    return [int(image["height"] > image["width"]) for image in dataset.coco_gt["images"]]


def _fit_detector(
    config: DetectConfig, env: DistEnv, state: dict[str, Any] | None, train_set: CocoDetection,
    val_set: CocoDetection, log,
) -> dict[str, Any]:  # fmt: skip
    run_dir = config.output_dir
    torch.manual_seed(config.seed)
    with_masks = config.detector == "maskrcnn"
    num_classes = len(train_set.category_ids) + 1
    settings = config.detector_settings()
    model = build_detector(
        settings, num_classes, backbone_weights=config.backbone_weights, trainable_layers=config.trainable_layers
    )
    # the anchors in use, saved as numbers: a later version's defaults must not change a trained detector
    settings["anchor_sizes"] = [int(sizes[0]) for sizes in model.rpn.anchor_generator.sizes]
    meta = dict(
        task="detection",
        settings=settings,
        num_classes=num_classes,
        class_names=train_set.class_names,
        category_ids=train_set.category_ids,
        val_images=os.path.abspath(val_set.image_dir),
        val_annotations=os.path.abspath(val_set.ann_file),
    )
    if config.sync_bn and env.distributed and env.device.type != "cuda":
        raise ConfigError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm runs on CUDA); drop it on CPU")
    opt = Optimization(
        epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer, lr=config.lr,
        weight_decay=config.weight_decay, momentum=config.momentum, warmup_epochs=config.warmup_epochs,
        amp=config.amp, sync_bn=config.sync_bn, clip_grad=config.clip_grad,
    )  # fmt: skip
    groups = _aspect_groups(train_set)
    data = train_loader(
        train_set, opt, env, seed=config.seed, workers=config.workers, collate_fn=_collate,
        batch_sampler=lambda sampler, batch: GroupedBatchSampler(sampler, groups, batch),
    )  # fmt: skip
    task = _Detection(config, val_set, env, with_masks)
    plan = None
    if config.time_budget is not None and state is None:
        config, opt, plan = plan_run(config, opt, task, model, data, env, len(val_set) // env.world_size, log)
    steps = data.steps
    if env.is_main and (state is None or state["config"].get("epochs") != config.epochs):  # new, or extended
        write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
        params = sum(p.numel() for p in model.parameters())
        log.info(
            f"{config.detector} with a {config.backbone} FPN backbone ({params / 1e6:.2f}M parameters), "
            f"{num_classes - 1} classes, {len(train_set)} training / {len(val_set)} held-out images; "
            f"{config.epochs} epochs of {steps} steps, batch {config.batch_size} x {env.world_size} process(es), "
            f"lr {config.lr:g}"
        )
    run = Run(config, meta, run_dir, "botnet detect train", env, log, state, tensorboard=config.tensorboard)
    fitted = fit(run, task, model, data, opt)
    metrics, model = fitted.metrics, fitted.eval_model
    summary = dict(
        task="detection",
        detector=config.detector,
        backbone=config.backbone,
        model_overrides=config.model_overrides,
        img_size=config.min_size,
        dataset=SHAPES if config.synthetic else os.path.abspath(config.train_annotations),
        classes=train_set.class_names,
        params=sum(p.numel() for p in model.parameters()),
        epochs=config.epochs,
        batch_size=config.batch_size,
        **{k: round(v, 3) for k, v in metrics.items()},
        val_images=len(val_set),
        wall_seconds=round(fitted.wall_seconds, 3),
        train_images_per_second=round(fitted.train_images / max(fitted.train_seconds, 1e-9), 2),
        world_size=env.world_size,
        device=env.device.type,
        skipped=dict(train=train_set.skipped.as_dict(), val=val_set.skipped.as_dict()),
        time_budget=dataclasses.asdict(plan) if plan else None,
    )
    if env.is_main:
        with failures_end_the_run(run.last_pt, run.command):
            save_weights(os.path.join(run_dir, "model.safetensors"), model, meta)
            _save_prediction_grid(model, val_set, os.path.join(run_dir, "predictions.png"))
            write_json(os.path.join(run_dir, "summary.json"), summary)
        headline = ", ".join(
            f"{k} {metrics[k]:.1f}" for k in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50") if k in metrics
        )
        log.info(f"done: {headline} on {len(val_set)} held-out images; {fitted.wall_seconds:.1f}s; results in {run_dir}")
    return summary


@torch.no_grad()
def _save_prediction_grid(
    model: nn.Module, dataset: Dataset, path: str, count: int = 8, score_threshold: float = 0.5
) -> None:
    model.eval()
    device = next(model.parameters()).device
    images = [dataset[index][0] for index in range(min(count, len(dataset)))]
    scale = max(1, round(384 / max(max(image.shape[-2:]) for image in images)))  # one scale: labels stay readable
    drawn = []
    for image in images:
        output = {k: v.cpu() for k, v in model([_plain(image).to(device)])[0].items()}
        drawn.append(draw_detections(_plain(image), output, dataset.class_names, score_threshold, scale=scale))
    grid = tile_images(drawn)
    atomic_write(path, lambda f: f.write(_png_bytes(grid)))


def _png_bytes(image: Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


# What a detector's metadata holds.
DETECTOR_META: dict[str, type] = dict(
    settings=dict, num_classes=int, class_names=list, category_ids=list, val_images=str, val_annotations=str
)


def load_detector(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained detector from a run's model.safetensors or last.pt (eval mode) with its metadata."""
    state, meta = read_weights(path)
    if meta.get("task") != "detection":
        raise CheckpointError(f"{path} holds a classifier, not a detector; use `botnet eval` / `botnet predict`")
    check_meta(meta, path, DETECTOR_META)
    if len(meta["class_names"]) != meta["num_classes"] - 1 or not all(isinstance(n, str) for n in meta["class_names"]):
        raise CheckpointError(f"{path}: its class names do not match its {meta['num_classes']} classes; the file is damaged")
    try:
        model = build_detector(meta["settings"], meta["num_classes"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: its detector settings are not ones this version builds ({first_line(error)})"
        ) from error
    restore_training_state({"model": state}, path, model=model)
    return model.eval(), meta


def evaluate_detector_checkpoint(
    checkpoint: str,
    images: str | None = None,
    annotations: str | None = None,
    *,
    batch_size: int = 4,
    skip_bad: bool = False,
) -> tuple[dict[str, float], dict[str, Any], CocoDetection]:
    """COCO metrics of a saved detector on COCO data (default: the held-out split it was trained against)."""  # fmt: skip
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    model, meta = load_detector(checkpoint)
    images = images or meta["val_images"]
    annotations = annotations or meta["val_annotations"]
    with_masks = meta["settings"]["kind"] == "maskrcnn"  # mask AP needs the annotations' masks
    dataset = CocoDetection(images, annotations, skip_bad=skip_bad, with_masks=with_masks)
    if dataset.category_ids != meta["category_ids"]:
        raise DatasetError(
            f"{annotations} lists categories {dataset.category_ids}, the model was trained on {meta['category_ids']}"
        )
    return evaluate_detector(model, dataset, batch_size=batch_size), meta, dataset


@torch.no_grad()
def predict_detections(
    checkpoint: str, images: list[str], *, output_dir: str | None = None, score_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Detections (class, score, box [x0, y0, x1, y1]) scoring at least ``score_threshold`` for each
    image file; with ``output_dir``, also a PNG per image with masks, boxes, names and scores drawn on."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    model, meta = load_detector(checkpoint)
    names = meta["class_names"]
    results = []
    for path in images:
        image = v2.functional.to_image(read_image(path, "RGB"))
        image = v2.functional.to_dtype(image, torch.float32, scale=True)
        output = model([_plain(image)])[0]
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
