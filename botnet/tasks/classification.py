"""Image classification: train, evaluate and predict.

A run directory holds config.json, metrics.csv, summary.json,
model.safetensors, last.pt, curves.png, confusion.png and train.log; only
the main process writes. The same code runs alone or under torchrun
(DistributedDataParallel, gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data import DIGITS, load_classification_data, read_image
from ..data.digits import digits_splits
from ..data.folder import scan_split
from ..data.transforms import eval_transform_for
from ..errors import CheckpointError, ConfigError, DatasetError, MissingFileError, TrainingDiverged
from ..interrupts import init_helper_process
from ..models import create_model, get_model_entry
from .checkpoint import (
    check_metric_rows,
    check_new_run_dir,
    load_model,
    save_weights,
    saved_config,
)
from .distributed import DistEnv, all_reduce_sum, init_distributed, main_process_first, shutdown_distributed
from .defaults import describe_choices, fit_defaults
from .engine import Optimization, Run, amp_dtype, check_tensorboard, fit, plan_run, train_loader
from .recipes import (
    RECIPES,
    check_field_types,
    check_model_overrides,
    check_time_budget,
    check_workers,
    fill_from_recipe,
)
from .report import plot_confusion, plot_curves, setup_logging, write_json
from .runs import failures_end_the_run, open_run_dir, run_stamp, settings_and_state

__all__ = [
    "DEFAULT_MODEL",
    "EvalResult",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "evaluate_checkpoint",
    "predict",
    "train",
]

DEFAULT_MODEL = "botnet_tiny"
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "seconds"]  # metrics.csv
PUBLISHED_WEIGHTS = "hub"  # --pretrained without a file: the model's published weights
AUGMENTATIONS = ("crop", "jitter")  # random-resized crops (photos); the whole image with a small affine jitter (scans)


@dataclass
class TrainConfig:
    """Every setting of a run (saved as config.json). ``None``: :func:`train` first fits the model,
    size, channels, augmentation and epochs to the data (``botnet.tasks.defaults``); what is still
    unset takes the recipe's value (``img_size``: the model's own resolution)."""

    data: str | None = None  # an image folder with train/ and val/; None: the bundled digits
    model: str | None = None  # None: fitted to the data (botnet.tasks.defaults), else botnet_tiny
    model_overrides: dict[str, Any] | None = None  # create_model settings (an ablation's variant), e.g. {"heads": 8}
    img_size: int | None = None
    pretrained: str | None = None  # a weights file of the model, or "hub": its published weights
    recipe: str | None = None  # default "finetune" with pretrained weights, else "small"
    epochs: int | None = None
    batch_size: int | None = None  # per process
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    randaugment: bool | None = None
    ema_decay: float | None = None
    crop_scale_min: float | None = None
    in_chans: int | None = None  # 1: read the images grey, 3: colour; default by the data (grey folders: 1)
    augment: str | None = None  # "crop" (random-resized crops: photos) or "jitter" (whole image, small affine: scans)
    hflip: bool | None = None  # random horizontal flips; default with "crop" only
    head_epochs: int | None = None  # first epochs in which only the classifier trains
    clip_grad: float | None = None  # largest gradient norm (None: no clipping)
    time_budget: float | None = None  # minutes: plan the epochs to fit (instead of --epochs)
    tensorboard: bool = False  # also write the metrics as TensorBoard scalars (RUN/tensorboard)
    seed: int = 0
    output_dir: str | None = None  # default runs/DATASET-MODEL-TIME
    amp: bool = False
    compile: bool = False
    workers: int | None = None
    sync_bn: bool = False
    skip_bad_images: bool = False

    def resolve(self, world_size: int) -> TrainConfig:
        """Fill every unset value from the recipe and the model; check the values."""
        check_field_types(self)
        recipe_name = self.recipe or ("finetune" if self.pretrained else "small")
        if recipe_name not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe_name!r}; choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
        values = fill_from_recipe(self, recipe)
        values["recipe"] = recipe_name
        values["model"] = self.model or DEFAULT_MODEL
        digits = self.data in (None, DIGITS)
        if values["in_chans"] is None:
            values["in_chans"] = 1 if digits else 3
        if values["augment"] is None:
            values["augment"] = "jitter" if digits else "crop"
        if self.pretrained not in (None, PUBLISHED_WEIGHTS):
            values["pretrained"] = os.path.abspath(self.pretrained)
        if self.data not in (None, DIGITS):
            values["data"] = os.path.abspath(self.data)  # a resume from another folder finds it
        if values["hflip"] is None:
            values["hflip"] = values["augment"] == "crop"
        if self.lr is None and recipe.lr_reference_batch:
            values["lr"] = recipe.lr * values["batch_size"] * world_size / recipe.lr_reference_batch
        if values["img_size"] is None:
            values["img_size"] = get_model_entry(values["model"]).img_size
        if values["ema_decay"] == 0:
            values["ema_decay"] = None  # --ema-decay 0 turns a recipe's EMA off
        if values["output_dir"] is None:
            dataset = DIGITS if digits else os.path.basename(os.path.normpath(self.data))
            values["output_dir"] = os.path.join("runs", f"{dataset}-{values['model']}-{run_stamp()}")
        if values["workers"] is None:
            values["workers"] = 0 if digits else min(4, os.cpu_count() or 1)
        config = TrainConfig(**values)
        config.check()
        return config

    def check(self) -> None:
        check_field_types(self)
        entry = get_model_entry(self.model)
        positive = dict(epochs=self.epochs, batch_size=self.batch_size, img_size=self.img_size, lr=self.lr)
        for name, value in positive.items():
            if value is None or value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        config = check_model_overrides(self.model, self.model_overrides)
        if self.img_size < config.reduction():
            raise ConfigError(
                f"--img-size {self.img_size} is too small for {self.model}, which downsamples by "
                f"{config.reduction()}: use at least that"
            )
        if self.in_chans not in (1, 3):
            raise ConfigError(f"--in-chans must be 1 (grey) or 3 (colour), got {self.in_chans}")
        if self.data in (None, DIGITS) and self.in_chans != 1:
            raise ConfigError(f"the digits are grey: --in-chans must be 1 for them, got {self.in_chans}")
        if not 0 < self.crop_scale_min <= 1:
            raise ConfigError(f"--crop-scale-min is a fraction of the image's area in (0, 1], got {self.crop_scale_min}")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown --augment {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in (0, 1), got {self.ema_decay}")
        if self.workers is not None:
            check_workers(self.workers)
        check_time_budget(self.time_budget)
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"--clip-grad must be positive, got {self.clip_grad}")
        if self.tensorboard:
            check_tensorboard()
        if self.head_epochs is not None and not 0 <= self.head_epochs < self.epochs:
            raise ConfigError(f"--head-epochs must be in 0..{self.epochs - 1} (fewer than --epochs), got {self.head_epochs}")
        if self.pretrained == PUBLISHED_WEIGHTS and entry.pretrained is None:
            raise ConfigError(f"{self.model} has no published weights; give --pretrained FILE, or a model from `botnet list --pretrained`")
        if self.pretrained not in (None, PUBLISHED_WEIGHTS) and not os.path.isfile(self.pretrained):
            raise MissingFileError(f"--pretrained {self.pretrained}: no such file")


@dataclass
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float  # percent (top-k with k = number of classes when there are fewer than five)
    count: int
    confusion: torch.Tensor  # (classes, classes): rows true, columns predicted

    @property
    def per_class_top1(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag().double() / totals * 100).tolist()


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device):
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    env: DistEnv | None = None,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Loss, top-1, top-5 and confusion matrix over ``loader``, summed over all ranks."""
    model.eval()
    device = next(model.parameters()).device
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1, top-k, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for images, targets in loader:
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = model(images).float()
        top = logits.topk(k, dim=1).indices
        sums[0] += F.cross_entropy(logits, targets, reduction="sum")
        sums[1] += (top[:, 0] == targets).sum()
        sums[2] += (top == targets[:, None]).any(1).sum()
        sums[3] += len(targets)
        confusion += torch.bincount(targets * num_classes + top[:, 0], minlength=num_classes * num_classes)
    if env is not None:
        all_reduce_sum(sums, env)
        all_reduce_sum(confusion, env)
    count = int(sums[3])
    if count == 0:
        raise DatasetError("the evaluation split has no images")
    return EvalResult(
        loss=float(sums[0] / count),
        top1=float(sums[1] / count * 100),
        top5=float(sums[2] / count * 100),
        count=count,
        confusion=confusion.reshape(num_classes, num_classes).cpu(),
    )


class _Classifier:
    """The classification task for the engine: cross-entropy on a batch, top-1/top-5 on the held-out split."""

    columns = METRIC_COLUMNS

    def __init__(self, criterion: nn.Module, val_loader: DataLoader, num_classes: int, env: DistEnv, amp) -> None:
        self.criterion, self.val_loader, self.num_classes, self.env, self.amp = criterion, val_loader, num_classes, env, amp
        self.result: EvalResult | None = None

    def loss(self, model: nn.Module, batch, device: torch.device):
        images, targets = _to_device(*batch, device)
        return self.criterion(model(images).float(), targets), {}, len(targets)

    def evaluate(self, model: nn.Module, epoch: int, last: bool) -> dict[str, float]:
        self.result = evaluate(model, self.val_loader, self.num_classes, self.env, self.amp)
        return dict(val_loss=self.result.loss, val_top1=self.result.top1, val_top5=self.result.top5)

    def describe(self, row) -> str:
        return (
            f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"top-1 {row['val_top1']:.2f}%  top-5 {row['val_top5']:.2f}%"
        )


def train(config: TrainConfig | None = None, *, resume: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train a classifier; returns the summary (also written to summary.json).

    ``resume``: a run's last.pt; the run continues with its saved settings in its own folder (``epochs``
    may extend it; the schedule is then planned again for the new total).
    Ctrl-C (or SIGTERM) stops at the end of the current step, saves last.pt and raises RunInterrupted;
    an expected failure once training has started raises RunFailed naming the checkpoint to resume.
    """
    env = init_distributed()
    try:
        user_config, fitted = config or TrainConfig(), None
        if resume is None:
            check_field_types(user_config)
            check_time_budget(user_config.time_budget, user_config.epochs)
            user_config, choices, profile = fit_defaults(user_config, env.world_size)
            fitted = dict(data=profile.describe(), choices=[dataclasses.asdict(c) for c in choices])
        config, state = settings_and_state(lambda: user_config.resolve(env.world_size), _config_from_state, resume, epochs)
        return _train(config, env, state, user_config, fitted)
    finally:
        shutdown_distributed()


def _config_from_state(state: dict[str, Any], path: str) -> TrainConfig:
    if state["meta"].get("task", "classification") != "classification":
        raise CheckpointError(f"{path} is a {state['meta']['task']} run's checkpoint; resume it with `botnet detect train`")
    check_metric_rows(state, path, METRIC_COLUMNS, METRIC_COLUMNS)
    return saved_config(state, path, TrainConfig, lambda config: config.resolve(world_size=1))


def _fit_batch_to_data(config: TrainConfig, user_config: TrainConfig, images: int, env: DistEnv) -> TrainConfig:
    """A batch no larger than each process's share of the training images (at least 2, for batch norm)."""
    per_process = images // env.world_size
    if per_process < 2:
        raise DatasetError(
            f"the training split has {images} image(s), {per_process} per process; training needs at least 2 per "
            f"process (batch norm needs two images in a batch): add images{' or use fewer processes' if env.distributed else ''}"
        )
    if per_process >= config.batch_size:
        return config
    # resolve again, so a recipe that scales the learning rate with the batch sees the batch that is used
    return dataclasses.replace(user_config, batch_size=per_process, output_dir=config.output_dir).resolve(env.world_size)


def _train(
    config: TrainConfig, env: DistEnv, state: dict[str, Any] | None, user_config: TrainConfig, fitted: dict | None
) -> dict[str, Any]:
    run_dir = config.output_dir
    if state is None:
        check_new_run_dir(run_dir)  # before the data is checked, which may take a while
    with main_process_first(env):  # one rank checks the files; the others read its cached results
        data = load_classification_data(
            config.data,
            config.img_size,
            randaugment=config.randaugment,
            crop_scale_min=config.crop_scale_min,
            hflip=config.hflip,
            in_chans=config.in_chans,
            augment=config.augment,
            skip_bad_images=config.skip_bad_images,
        )
    requested_batch = config.batch_size
    if state is None:
        config = _fit_batch_to_data(config, user_config, len(data.train), env)
    with open_run_dir(run_dir, resuming=state is not None, writer=env.is_main):
        log = setup_logging(run_dir if env.is_main else None, env.is_main)
        if data.bad_images:
            log.warning(f"skipped {len(data.bad_images)} unreadable file(s): {data.bad_images.summary()}")
        if state is not None:
            fitted = state["meta"].get("fitted_defaults")
        elif fitted:
            for line in describe_choices(fitted["data"], fitted["choices"]):
                log.info(line)
        if config.batch_size < requested_batch:
            log.warning(
                f"the training split has {len(data.train)} images: batches of {config.batch_size} per process "
                f"instead of {requested_batch}"
            )
        return _fit(config, env, state, data, log, fitted)


def _fit(config: TrainConfig, env: DistEnv, state: dict[str, Any] | None, data, log, fitted: dict | None) -> dict[str, Any]:
    run_dir = config.output_dir
    torch.manual_seed(config.seed)
    num_classes = len(data.classes)
    weights = None if state is not None or config.pretrained is None else config.pretrained
    model = create_model(
        config.model, num_classes=num_classes, in_chans=data.in_chans, img_size=config.img_size,
        **({} if weights is None else dict(pretrained=True if weights == PUBLISHED_WEIGHTS else weights)),
        **(config.model_overrides or {}),
    )  # fmt: skip
    loaded = state["meta"].get("pretrained") if state is not None else _loaded_record(model)
    if loaded and state is None:
        log.info(
            f"loaded {loaded['tensors']} tensors from {loaded['source']}; classifier {loaded['classifier']}"
            + "".join(f"; {note}" for note in loaded["notes"])
        )
    if config.sync_bn and env.distributed and env.device.type != "cuda":
        raise ConfigError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm runs on CUDA); drop it on CPU")
    opt = Optimization(
        epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer, lr=config.lr,
        weight_decay=config.weight_decay, momentum=config.momentum, warmup_epochs=config.warmup_epochs,
        head_epochs=config.head_epochs, head="fc", ema_decay=config.ema_decay, amp=config.amp,
        compile=config.compile, sync_bn=config.sync_bn, clip_grad=config.clip_grad,
    )  # fmt: skip
    train_data = train_loader(data.train, opt, env, seed=config.seed, workers=config.workers)
    val_shard = Subset(data.val, range(env.rank, len(data.val), env.world_size))
    val_loader = DataLoader(
        val_shard, batch_size=config.batch_size, num_workers=config.workers, worker_init_fn=init_helper_process
    )
    task = _Classifier(
        nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), val_loader, num_classes, env,
        amp_dtype(config.amp, env.device),
    )  # fmt: skip
    plan = None
    if config.time_budget is not None and state is None:
        config, opt, plan = plan_run(config, opt, task, model, train_data, env, len(val_shard), log)
    meta = dict(
        model=config.model,
        num_classes=num_classes,
        in_chans=data.in_chans,
        img_size=config.img_size,
        classes=data.classes,
        mean=list(data.mean),
        std=list(data.std),
        crop=data.crop,
        dataset=data.name if data.name == DIGITS else os.path.abspath(data.name),
        **({"pretrained": loaded} if loaded else {}),
        **({"model_overrides": config.model_overrides} if config.model_overrides else {}),
        **({"fitted_defaults": fitted} if fitted else {}),
    )
    params = sum(p.numel() for p in model.parameters())
    if env.is_main and (state is None or state["config"].get("epochs") != config.epochs):  # new, or extended
        write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
        log.info(
            f"training {config.model} ({params / 1e6:.2f}M parameters) at {config.img_size}px on {data.name}: "
            f"{len(data.train)} train / {len(data.val)} held-out images, {num_classes} classes, "
            f"{config.epochs} epochs, {env.world_size} process(es) on {env.device.type}; writing to {run_dir}"
        )
    run = Run(config, meta, run_dir, "botnet train", env, log, state, tensorboard=config.tensorboard)
    trained = fit(run, task, model, train_data, opt)
    result = task.result
    summary = dict(
        model=config.model,
        model_overrides=config.model_overrides,
        img_size=config.img_size,
        dataset=data.name,
        num_classes=num_classes,
        params=params,
        epochs=config.epochs,
        batch_size=config.batch_size,
        test_top1=round(result.top1, 4),
        test_top5=round(result.top5, 4),
        test_loss=round(result.loss, 6),
        test_images=result.count,
        per_class_top1={c: round(a, 4) for c, a in zip(data.classes, result.per_class_top1)},
        wall_seconds=round(trained.wall_seconds, 3),
        train_images_per_second=round(trained.train_images / max(trained.train_seconds, 1e-9), 2),
        world_size=env.world_size,
        device=env.device.type,
        skipped_bad_images=len(data.bad_images),
        pretrained=loaded,
        time_budget=dataclasses.asdict(plan) if plan else None,
        fitted_defaults=fitted,
    )
    if env.is_main:
        with failures_end_the_run(run.last_pt, run.command):
            save_weights(os.path.join(run_dir, "model.safetensors"), trained.eval_model, meta)
            plot_curves(trained.rows, os.path.join(run_dir, "curves.png"))
            plot_confusion(result.confusion, data.classes, os.path.join(run_dir, "confusion.png"))
            write_json(os.path.join(run_dir, "summary.json"), summary)
        log.info(
            f"done: test top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}% on {result.count} held-out images; "
            f"{trained.wall_seconds:.1f}s, {summary['train_images_per_second']:.0f} train images/s; results in {run_dir}"
        )
    return summary


def _loaded_record(model: nn.Module) -> dict[str, Any] | None:
    """What ``create_model(..., pretrained=)`` loaded, for the run's records (None: nothing)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        return None
    keys = ("source", "tensors", "classifier", "notes")
    return {k: cfg[k] for k in keys if k in cfg}


def evaluate_checkpoint(
    checkpoint: str, data: str | None = None, *, batch_size: int = 128, workers: int = 0
) -> tuple[EvalResult, dict[str, Any], str]:
    """Evaluate a saved model on ``data`` (an image folder: DIR/val or DIR itself, or "digits"),
    by default on the held-out split the model was trained against. Returns (result, metadata, data used)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    check_workers(workers)
    model, meta = load_model(checkpoint)
    source = data or meta["dataset"]
    if source == DIGITS:
        if meta["in_chans"] != 1 or len(meta["classes"]) != 10:
            raise DatasetError(f"{checkpoint} was not trained on the digits; pass --data with its image folder")
        _, split = digits_splits()
    else:
        if not os.path.isdir(source):
            hint = "" if data else f" (the model was trained on {source}; give the images with --data DIR)"
            raise DatasetError(f"data folder {source} does not exist{hint}")
        split_dir = os.path.join(source, "val") if os.path.isdir(os.path.join(source, "val")) else source
        split, _ = scan_split(
            split_dir, classes=meta["classes"], reference="the model's classes", mode="L" if meta["in_chans"] == 1 else "RGB"
        )
        source = split_dir
    split.transform = eval_transform_for(meta)
    loader = DataLoader(split, batch_size=batch_size, num_workers=workers)
    model = model.to(memory_format=torch.channels_last)
    return evaluate(model, loader, len(meta["classes"])), meta, source


@torch.no_grad()
def predict(checkpoint: str, images: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    model, meta = load_model(checkpoint)
    transform = eval_transform_for(meta)
    mode = "L" if meta["in_chans"] == 1 else "RGB"
    batch = torch.stack([transform(read_image(path, mode)) for path in images])
    probs = model(batch.contiguous(memory_format=torch.channels_last)).softmax(-1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        dict(
            image=path,
            predictions=[dict(label=meta["classes"][i], probability=round(float(p), 6)) for p, i in zip(values, idx)],
        )
        for path, values, idx in zip(images, top.values, top.indices)
    ]
