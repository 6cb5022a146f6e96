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

from ..checkpoints import Checkpoint, ClassifierMeta, open_checkpoint
from ..data import DIGITS, load_classification_data
from ..data.digits import digits_splits
from ..data.folder import eval_split, heldout_split
from ..data.holdout import HELDOUT_FILE, read_heldout
from ..data.images import read_pixels
from ..data.transforms import INTERPOLATIONS, TrainAugment, default_augment, default_hflip, eval_transform_for
from ..errors import CheckpointError, ConfigError, DatasetError, MissingFileError, TrainingDiverged
from ..interrupts import init_helper_process
from ..models import BoTNet, create_model, get_model_entry
from ..training.checkpoint import restore_training_state
from ..training.distributed import DistEnv, all_reduce_sum
from ..training.engine import FitResult
from ..training.loaders import train_loader
from ..training.pipeline import Built, Fitted, run_task
from ..training.report import plot_confusion, plot_curves
from ..training.runs import run_stamp
from ..training.settings import (
    RunSettings,
    apply_recipe,
    check_model_overrides,
    check_settings,
    check_workers,
    label,
    setting,
)
from . import defaults
from .recipes import RECIPES

__all__ = [
    "DEFAULT_MODEL",
    "Classification",
    "load_model",
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
MIN_BATCH = 2  # batch norm needs more than one value per channel, and a final map may be 1 x 1
EVAL_SPLITS = ("val", "test")  # what `botnet eval --split` scores


@dataclass
class TrainConfig(RunSettings):
    """Every setting of a classification run (saved as config.json). ``None``: :func:`train` first fits the
    model, size, channels, augmentation and epochs to the data (``botnet.tasks.defaults``); what is still
    unset takes the recipe's value (``img_size``: the model's own resolution)."""

    data: str | None = setting(
        optional=True,
        help="image folder: DIR/CLASS/* (a val share is held out), or DIR/train/CLASS/* with DIR/val/CLASS/* "
        "(default: the bundled digits)"
    )
    model: str | None = setting(help="a name from `botnet list` (default: chosen from the images' size and number)")
    model_overrides: dict[str, Any] | None = setting(
        flag=False, optional=True, help="create_model settings of the model (an ablation's variant), e.g. {'heads': 8}"
    )
    img_size: int | None = setting(
        positive=True, help="input size (default: the images' typical size, within the model's range)"
    )
    pretrained: str | None = setting(
        metavar="FILE", const=PUBLISHED_WEIGHTS, optional=True,
        help="start from a weights file of --model (timm's or botnet's), or without FILE its published weights; "
        "every layer but the classifier is loaded",
    )  # fmt: skip
    recipe: str | None = setting(
        choices=tuple(RECIPES), help="preset of the unset settings (default small, or finetune with --pretrained)"
    )
    head_epochs: int | None = setting(help="first epochs in which only the new classifier trains")
    label_smoothing: float | None = setting(help="label smoothing of the cross-entropy")
    randaugment: bool | None = setting(help="RandAugment(2, 10)")
    augment: str | None = setting(
        choices=AUGMENTATIONS,
        help="crop: random-resized crops (photos, where the object may be anywhere); jitter: the whole image "
        "resized, with small shifts, turns and zooms (scans, digits, documents, where a crop can cut off what "
        "tells classes apart). Default: jitter for grey folders, crop for colour",
    )
    crop_scale_min: float | None = setting(
        metavar="FRACTION", help="with --augment crop: the smallest area a random-resized crop keeps"
    )
    hflip: bool | None = setting(
        help="random horizontal flips (default: with --augment crop; keep off for text, digits and other classes "
        "a mirror image changes)"
    )
    in_chans: int | None = setting(
        choices=(1, 3), help="1: read the images grey, 3: in colour (default: 1 when every sampled image is grey)"
    )
    skip_bad: bool = setting(
        False, old_name="skip_bad_images", help="leave out unreadable files (counted) instead of stopping"
    )

    @property
    def data_name(self) -> str:
        """The data as run folders name it: the digits, or the folder's name."""
        return DIGITS if self.data in (None, DIGITS) else os.path.basename(os.path.normpath(self.data))

    def resolve(self, world_size: int) -> TrainConfig:
        """Fill every unset value from the recipe and the model; check the values."""
        check_settings(self)
        recipe = self.recipe or ("finetune" if self.pretrained else "small")
        values = apply_recipe(self, RECIPES, recipe, world_size)
        values["model"] = self.model or DEFAULT_MODEL
        digits = self.data in (None, DIGITS)
        if values["in_chans"] is None:
            values["in_chans"] = 1 if digits else 3
        if values["augment"] is None:
            values["augment"] = default_augment(grey=values["in_chans"] == 1)
        if self.pretrained not in (None, PUBLISHED_WEIGHTS):
            values["pretrained"] = os.path.abspath(self.pretrained)
        if not digits:
            values["data"] = os.path.abspath(self.data)  # a resume from another folder finds it
        if values["hflip"] is None:
            values["hflip"] = default_hflip(values["augment"])
        if values["img_size"] is None:
            values["img_size"] = get_model_entry(values["model"]).img_size
        if values["output_dir"] is None:
            values["output_dir"] = os.path.join("runs", f"{self.data_name}-{values['model']}-{run_stamp()}")
        if values["workers"] is None:
            values["workers"] = 0 if digits else defaults.disk_workers()  # unprofiled: as if on disk
        config = TrainConfig(**values)
        config.check()
        return config

    def check(self) -> None:
        self.check_run()
        entry = get_model_entry(self.model)
        config = check_model_overrides(self.model, self.model_overrides)
        if self.img_size < config.reduction():
            raise ConfigError(
                f"{label('img_size')} {self.img_size} is too small for {self.model}, which downsamples by "
                f"{config.reduction()}: use at least that"
            )
        if self.data in (None, DIGITS) and self.in_chans != 1:
            raise ConfigError(f"the digits are grey: {label('in_chans')} must be 1 for them, got {self.in_chans}")
        if not 0 < self.crop_scale_min <= 1:
            raise ConfigError(
                f"{label('crop_scale_min')} is a fraction of the image's area in (0, 1], got {self.crop_scale_min}"
            )
        if not 0 <= self.head_epochs < self.epochs:
            raise ConfigError(
                f"{label('head_epochs')} must be in 0..{self.epochs - 1} (fewer than {label('epochs')}), "
                f"got {self.head_epochs}"
            )
        if self.pretrained == PUBLISHED_WEIGHTS and entry.pretrained is None:
            raise ConfigError(
                f"{self.model} has no published weights; give {label('pretrained')} FILE, or a model from "
                f"`botnet list --pretrained`"
            )
        if self.pretrained not in (None, PUBLISHED_WEIGHTS) and not os.path.isfile(self.pretrained):
            raise MissingFileError(f"{label('pretrained')} {self.pretrained}: no such file")


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
    head = "fc"
    eval_every = 1

    def __init__(self, config: TrainConfig, augment: TrainAugment, val_loader: DataLoader, num_classes: int,
                 env: DistEnv) -> None:  # fmt: skip
        self.augment = augment
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.head_epochs = config.head_epochs
        self.val_loader, self.num_classes, self.env = val_loader, num_classes, env
        self.result: EvalResult | None = None

    def loss(self, model: nn.Module, batch, device: torch.device):
        (images, params), targets = batch  # the per-image half of the augmentation; the batch half here
        images = self.augment.batch(images.to(device, non_blocking=True), params)
        targets = targets.to(device, non_blocking=True)
        return self.criterion(model(images).float(), targets), {}, len(targets)

    def evaluate(self, model: nn.Module, epoch: int, last: bool, amp: torch.dtype | None) -> dict[str, float]:
        self.result = evaluate(model, self.val_loader, self.num_classes, self.env, amp)
        return dict(val_loss=self.result.loss, val_top1=self.result.top1, val_top5=self.result.top5)

    def describe(self, row) -> str:
        return (
            f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"top-1 {row['val_top1']:.2f}%  top-5 {row['val_top5']:.2f}%"
        )


class Classification:
    """The classification task for ``botnet.training.pipeline.run_task``."""

    name = "classification"
    command = ClassifierMeta.train_command
    # botnet ablate: the setting the variants change, the folder's prefix, summary key -> study.csv column
    study_setting, study_prefix, study_metrics = "model", "ablate", {"val_top1": "top1"}
    summary_old_names = dict(test_top1="val_top1", test_top5="val_top5", test_loss="val_loss", test_images="val_images")
    config_class = TrainConfig
    metric_columns = METRIC_COLUMNS
    required_columns = tuple(METRIC_COLUMNS)
    min_batch = MIN_BATCH
    min_batch_reason = "batch norm needs two images in a batch"

    def fit_defaults(self, config: TrainConfig, world_size: int) -> tuple[TrainConfig, Fitted]:
        config, choices, profile = defaults.fit_defaults(config, world_size)
        return config, Fitted(profile.describe(), [dataclasses.asdict(c) for c in choices])

    def load_data(self, config: TrainConfig, env: DistEnv):
        return load_classification_data(
            config.data, config.img_size, randaugment=config.randaugment, crop_scale_min=config.crop_scale_min,
            hflip=config.hflip, in_chans=config.in_chans, augment=config.augment,
            skip_bad=config.skip_bad,
            heldout=read_heldout(os.path.join(config.output_dir, HELDOUT_FILE)) if config.output_dir else None,
        )  # fmt: skip

    def make_data(self, config: TrainConfig, log):
        raise AssertionError("classification data is never made in the run folder")

    @staticmethod
    def study_network(summary: dict[str, Any], in_chans: int) -> nn.Module:
        """The network a study's run trained, for its parameters and FLOPs."""
        return create_model(
            summary["model"], num_classes=summary["num_classes"], img_size=summary["img_size"], in_chans=in_chans,
            **(summary.get("model_overrides") or {}),
        )  # fmt: skip

    @staticmethod
    def attention_input(checkpoint: Checkpoint, image_path: str) -> tuple[nn.Module, torch.Tensor, list[float], list[float]]:
        """``botnet attention``: the trained network, the image as it sees it (a batch of one), and the
        normalisation to undo when drawing it."""
        model, meta = load_model(checkpoint)
        batch = eval_transform_for(meta)(read_pixels(image_path, "L" if meta["in_chans"] == 1 else "RGB"))[None]
        return model, batch, meta["mean"], meta["std"]

    @staticmethod
    def export_parts(checkpoint: Checkpoint) -> tuple[nn.Module, torch.Tensor | None, dict[str, Any]]:
        """``botnet export``: the network, an example input (None: one at the model's own size) and the
        metadata a deployment needs."""
        model, meta = load_model(checkpoint)
        keys = ("classes", "mean", "std", "interpolation", "crop_fraction", "dataset")
        extra = {k: meta[k] for k in keys if k in meta}
        extra.update(model=meta["model"], img_size=list(model.img_size))
        return model, None, extra

    def data_warnings(self, data) -> list[str]:
        return [f"skipped {len(data.bad_images)} unreadable file(s): {data.bad_images.summary()}"] if data.bad_images else []

    def data_report(self, data) -> list[str]:
        return data.report

    def heldout(self, data) -> set[str] | None:
        return data.heldout

    def train_images(self, data) -> int:
        return len(data.train)

    def build(self, config: TrainConfig, data, env: DistEnv, state, log) -> Built:
        model = self._model(config, data, state)
        loaded = state.meta.get("pretrained") if state is not None else _loaded_record(model)
        if loaded and state is None:
            log.info(
                f"loaded {loaded['tensors']} tensors from {loaded['source']}; classifier {loaded['classifier']}"
                + "".join(f"; {note}" for note in loaded["notes"])
            )
        loader = train_loader(data.train, config.batch_size, env, seed=config.seed, workers=config.workers)
        val_shard = Subset(data.val, range(env.rank, len(data.val), env.world_size))
        val_loader = DataLoader(
            val_shard, batch_size=config.batch_size, num_workers=config.workers, worker_init_fn=init_helper_process
        )
        meta = ClassifierMeta(
            model=config.model, num_classes=len(data.classes), in_chans=data.in_chans, img_size=config.img_size,
            classes=data.classes, mean=list(data.mean), std=list(data.std), crop=data.crop,
            dataset=data.name if data.name == DIGITS else os.path.abspath(data.name), pretrained=loaded or None,
            model_overrides=config.model_overrides or None,
        )  # fmt: skip
        params = sum(p.numel() for p in model.parameters())
        description = (
            f"training {config.model} ({params / 1e6:.2f}M parameters) at {config.img_size}px on {data.name}: "
            f"{len(data.train)} train / {len(data.val)} held-out images, {len(data.classes)} classes"
        )
        task = _Classifier(config, data.train.transform, val_loader, len(data.classes), env)
        return Built(model, task, loader, meta.as_dict(), len(val_shard), description)

    def _model(self, config: TrainConfig, data, state) -> BoTNet:
        weights = None if state is not None or config.pretrained is None else config.pretrained
        return create_model(
            config.model, num_classes=len(data.classes), in_chans=data.in_chans, img_size=config.img_size,
            **({} if weights is None else dict(pretrained=True if weights == PUBLISHED_WEIGHTS else weights)),
            **(config.model_overrides or {}),
        )  # fmt: skip

    def summary(self, config: TrainConfig, data, built: Built, result: FitResult) -> dict[str, Any]:
        evaluated = built.task.result
        return dict(
            val_top1=round(evaluated.top1, 4),
            val_top5=round(evaluated.top5, 4),
            val_loss=round(evaluated.loss, 6),
            val_images=evaluated.count,
            per_class_top1={c: round(a, 4) for c, a in zip(data.classes, evaluated.per_class_top1)},
            model=config.model,
            model_overrides=config.model_overrides,
            img_size=config.img_size,
            dataset=data.name,
            num_classes=len(data.classes),
            params=sum(p.numel() for p in built.model.parameters()),
            skipped_bad_images=len(data.bad_images),
            pretrained=built.meta.get("pretrained"),
        )

    def write_artefacts(self, config: TrainConfig, data, built: Built, result: FitResult) -> None:
        plot_curves(result.rows, os.path.join(config.output_dir, "curves.png"))
        plot_confusion(built.task.result.confusion, data.classes, os.path.join(config.output_dir, "confusion.png"))

    def done(self, summary: dict[str, Any], result: FitResult) -> str:
        return (
            f"done: top-1 {summary['val_top1']:.2f}%, top-5 {summary['val_top5']:.2f}% on "
            f"{summary['val_images']} held-out images"
        )


def train(config: TrainConfig | None = None, *, resume: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train a classifier; returns the summary (also written to summary.json). Runs alone or under torchrun.

    ``resume``: a run's last.pt; the run continues with its saved settings in its own folder (``epochs``
    may extend it; the schedule is then planned again for the new total).
    Ctrl-C (or SIGTERM) stops at the end of the current step, saves last.pt and raises RunInterrupted;
    an expected failure once training has started raises RunFailed naming the checkpoint to resume from.
    """
    return run_task(Classification(), config, resume=resume, epochs=epochs)


def _loaded_record(model: nn.Module) -> dict[str, Any] | None:
    """What ``create_model(..., pretrained=)`` loaded, for the run's records (None: nothing)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        return None
    keys = ("source", "tensors", "classifier", "notes")
    return {k: cfg[k] for k in keys if k in cfg}


def load_model(checkpoint: str | Checkpoint) -> tuple[BoTNet, dict[str, Any]]:
    """Rebuild a trained classifier from ``model.safetensors`` or ``last.pt`` (a path, or the file as
    :func:`~botnet.checkpoints.open_checkpoint` read it): the model in eval mode and its metadata
    (a :class:`~botnet.checkpoints.ClassifierMeta` as a dict: classes, img_size, mean, std, crop, dataset, ...)."""
    opened = open_checkpoint(checkpoint, "classification")
    path, meta = opened.path, opened.meta
    if len(meta.mean) != meta.in_chans or len(meta.std) != meta.in_chans:
        raise CheckpointError(f"{path}: its normalisation does not match its {meta.in_chans} channel(s); use another checkpoint")
    if meta.interpolation not in INTERPOLATIONS or not 0.0 < meta.crop_fraction <= 1.0:
        raise CheckpointError(f"{path}: its interpolation or crop fraction is damaged; use another checkpoint")
    try:
        model = create_model(
            meta.model, num_classes=len(meta.classes), in_chans=meta.in_chans, img_size=meta.img_size,
            **(meta.model_overrides or {}),
        )  # fmt: skip
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: its metadata does not describe a model this version builds: {error}") from error
    restore_training_state({"model": opened.weights}, path, model=model)
    return model.eval(), meta.as_dict()


def evaluate_checkpoint(
    checkpoint: str, data: str | None = None, *, split: str = "val", batch_size: int = 128, workers: int = 0
) -> tuple[EvalResult, dict[str, Any], str]:
    """Evaluate a saved model on ``data`` (an image folder in a layout ``botnet train`` reads, a folder of
    CLASS/* such as DIR/val scored whole, or "digits"), by default on the images the model was trained
    against: those its run folder's heldout.txt lists where botnet held them out, else its data's val split.
    ``split`` "test" scores the data's test/ folder. Returns (result, metadata, data used)."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if batch_size < 1:
        raise ConfigError(f"{label('batch_size')} must be at least 1, got {batch_size}")
    check_workers(workers)
    model, meta = load_model(checkpoint)
    source = data or meta["dataset"]
    if source == DIGITS:
        if meta["in_chans"] != 1 or len(meta["classes"]) != 10:
            raise DatasetError(f"{checkpoint} was not trained on the digits; pass --data with its image folder")
        if split == "test":
            raise DatasetError("the digits have no test split: their held-out split is scored with --split val")
        _, images = digits_splits()
    else:
        if not os.path.isdir(source):
            hint = "" if data else f" (the model was trained on {source}; give the images with --data DIR)"
            raise DatasetError(f"data folder {source} does not exist{hint}")
        own = data is None or os.path.abspath(data) == os.path.abspath(meta["dataset"])
        images, source = _folder_images(checkpoint, source, meta, split, own)
    images.transform = eval_transform_for(meta)
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers)
    model = model.to(memory_format=torch.channels_last)
    return evaluate(model, loader, len(meta["classes"])), meta, source


def _folder_images(checkpoint: str, folder: str, meta: dict[str, Any], split: str, own: bool):
    """The images of ``folder`` that ``evaluate_checkpoint`` scores, and where they are. For the model's own
    data (``own``), val is the list of images held out in training (heldout.txt beside the checkpoint, where
    the run wrote one); another flat folder is scored whole."""
    mode = "L" if meta["in_chans"] == 1 else "RGB"
    listed = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), HELDOUT_FILE)  # the run folder's
    names = read_heldout(listed) if own and split == "val" else None
    if names is None:
        return eval_split(folder, split=split, classes=meta["classes"], whole=not own, mode=mode)
    images = heldout_split(folder, names, classes=meta["classes"], listed_in=listed, mode=mode)
    return images, f"{folder} (the {len(images)} images held out in training, listed in {listed})"


@torch.no_grad()
def predict(checkpoint: str, images: list[str], top_k: int = 5) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file."""
    if top_k < 1:
        raise ConfigError(f"{label('top_k')} must be at least 1, got {top_k}")
    model, meta = load_model(checkpoint)
    transform = eval_transform_for(meta)
    mode = "L" if meta["in_chans"] == 1 else "RGB"
    batch = torch.stack([transform(read_pixels(path, mode)) for path in images])
    probs = model(batch.contiguous(memory_format=torch.channels_last)).softmax(-1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        dict(
            image=path,
            predictions=[dict(label=meta["classes"][i], probability=round(float(p), 6)) for p, i in zip(values, idx)],
        )
        for path, values, idx in zip(images, top.values, top.indices)
    ]
