"""The two files a run leaves, their metadata records, and the one place they are read.

- ``last.pt``: the whole training state (:class:`TrainState`), written atomically by the engine and read
  with ``torch.load(weights_only=True)``: a file that carries code is refused, never run.
- ``model.safetensors``: the final weights, with what is needed to rebuild and feed the model as JSON
  metadata (``botnet convert`` writes the same format).

Both carry a task's metadata record, :class:`ClassifierMeta` or :class:`DetectorMeta`, each described
once by a dataclass and checked field by field (``botnet.records.read_record``): a damaged or foreign file
is a :class:`~botnet.errors.CheckpointError` that names it, never a crash. A file lacking a field added
since it was written takes the field's default; fields renamed since are read under their old names.
:func:`open_checkpoint` reads either file once and returns its task, metadata and weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .errors import CheckpointError, MissingFileError, first_line
from .files import atomic_write
from .records import read_record, with_current_names

__all__ = [
    "METADATA_KEY",
    "TRAIN_STATE_FORMAT",
    "Checkpoint",
    "METADATA",
    "ClassifierMeta",
    "DetectorMeta",
    "TrainState",
    "check_readable",
    "load_training_state",
    "open_checkpoint",
    "read_or_refuse",
    "read_metadata",
    "save_training_state",
    "save_weights",
    "task_of",
]

TRAIN_STATE_FORMAT = "botnet-train-state-1"
METADATA_KEY = "botnet"  # the safetensors metadata entry that holds ours (JSON)


@dataclass
class ClassifierMeta:
    """What a classifier's weights file holds besides the weights (model.safetensors, last.pt, and the files
    ``botnet convert`` writes): enough to rebuild the model and to prepare its inputs."""

    # the commands that train (and resume) the task's runs, and that read their files
    train_command: ClassVar[str] = "botnet train"
    read_commands: ClassVar[str] = "`botnet eval` / `botnet predict`"

    model: str
    num_classes: int
    in_chans: int
    img_size: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    crop: bool  # evaluation resizes then centre-crops (photos) or resizes the whole image
    dataset: str
    task: str = "classification"
    interpolation: str = "bilinear"
    crop_fraction: float = 0.875
    source: str | None = None  # the converted weights' origin (botnet convert)
    pretrained: dict[str, Any] | None = None  # what --pretrained loaded
    model_overrides: dict[str, Any] | None = None
    fitted_defaults: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class DetectorMeta:
    """What a detector's weights file holds besides the weights."""

    train_command: ClassVar[str] = "botnet detect train"
    read_commands: ClassVar[str] = "`botnet detect eval` / `botnet detect predict`"
    OLD_NAMES: ClassVar[dict[str, str]] = dict(class_names="classes", data="dataset")  # fields renamed since

    settings: dict[str, Any]  # botnet.tasks.detection.DetectorSettings as a dict
    num_classes: int  # object classes plus the background
    classes: list[str]
    category_ids: list[int]  # the annotations' category ids, in class order
    val_images: str
    val_annotations: str | None  # None where the held-out labels are read from ``dataset`` in another format
    task: str = "detection"
    dataset: str | None = None  # the dataset folder (--data): its held-out split is the default to evaluate
    data_format: str | None = None  # --data-format, to read ``dataset`` again as it was

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


METADATA = {"classification": ClassifierMeta, "detection": DetectorMeta}

# Version-1 detector files named the settings as create_detector's arguments were named then.
_V1_NAMES = dict(kind="detector", out_channels="fpn_channels", backbone_overrides="model_overrides")
_V1_PROPOSALS = ("rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")


def _detector_settings_from_v1(settings: Any) -> Any:
    """Settings in version 1's names (kind, out_channels, four rpn_* counts) in today's."""
    if not isinstance(settings, dict) or "kind" not in settings:
        return settings
    kept = {k: v for k, v in settings.items() if k not in _V1_PROPOSALS and k != "img_size"}
    renamed = with_current_names(kept, _V1_NAMES)
    renamed["proposals"] = [settings.get(k) for k in _V1_PROPOSALS]
    return renamed


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped (``RUN/last.pt``)."""

    config: dict[str, Any]  # the run's settings, as config.json holds them
    meta: dict[str, Any]  # what the saved weights need to be rebuilt (the task's metadata record as a dict)
    epoch: int  # epochs finished
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    metrics: list[dict[str, float]]  # one metrics.csv row per finished epoch
    wall_seconds: float
    train_seconds: float
    train_images: int
    step: int = 0  # steps done in epoch ``epoch`` when it stopped mid-epoch (0: at an epoch's end)
    partial: dict[str, float] = field(default_factory=dict)  # that epoch's loss sums and "images" so far
    rng: list[dict[str, Tensor]] = field(default_factory=list)  # every process's random state at a mid-epoch stop
    world_size: int = 1  # processes that wrote it: it resumes only with as many
    ema: dict[str, Tensor] | None = None  # the AveragedModel's state
    scaler: dict[str, Any] | None = None  # float16's GradScaler

    @property
    def task(self) -> str:
        return task_of(self.meta)

    def final_weights(self) -> dict[str, Tensor]:
        """The weights the run would save: the averaged model's where it kept one (its state is the model's
        under ``module.`` plus a counter), else the model's."""
        if self.ema is None:
            return self.model
        prefix = "module."
        return {k[len(prefix) :]: v for k, v in self.ema.items() if k.startswith(prefix)}


@contextlib.contextmanager
def read_or_refuse(refusal: str) -> Iterator[None]:
    """Around reading a file: any failure becomes ``CheckpointError(f"{refusal}: {the failure}")`` (unpickling,
    unzipping and safetensors' parsing fail in many ways), except a PermissionError, which passes unchanged:
    the file may be fine, and the user may not read it."""
    try:
        yield
    except PermissionError:
        raise
    except Exception as error:
        raise CheckpointError(f"{refusal}: {first_line(error)}") from error


def task_of(meta: dict[str, Any]) -> str:
    """The task a weights file's metadata is for; files written before the task was recorded are classifiers'."""
    return meta.get("task", "classification")


def save_training_state(path: str, state: TrainState) -> None:
    """Write ``last.pt`` atomically: a crash or a full disk mid-write leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save({"format": TRAIN_STATE_FORMAT, **dataclasses.asdict(state)}, f))


def check_readable(path: str) -> None:
    """MissingFileError or CheckpointError unless ``path`` is a file."""
    if not os.path.exists(path):
        raise MissingFileError(f"no checkpoint at {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; give RUN/last.pt or RUN/model.safetensors")


def load_training_state(path: str) -> TrainState:
    """Read a ``last.pt`` safely; CheckpointError names what is wrong."""
    check_readable(path)
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (a copy or a write that did not finish); use another checkpoint")
    refusal = (
        f"refusing to load {path}: it is not a plain-tensor checkpoint (corrupt, truncated, or holding code or "
        f"objects that weights_only loading does not allow)"
    )
    with read_or_refuse(refusal):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a botnet training checkpoint (expected the last.pt of a run)")
    state = read_record(TrainState, raw, path, "training state")
    if state.epoch < 0 or state.step < 0:
        raise CheckpointError(f"{path}: epoch {state.epoch} / step {state.step} are not counts")
    if state.step and not (state.rng and all(isinstance(r.get("cpu"), Tensor) and r["cpu"].dtype == torch.uint8 for r in state.rng)):
        raise CheckpointError(f"{path}: the random state saved with its mid-epoch stop is damaged")
    return state


def save_weights(path: str, model: nn.Module, metadata: dict[str, Any]) -> None:
    """``model``'s weights as safetensors with ``metadata``, written atomically."""
    from safetensors.torch import save

    # safetensors stores contiguous tensors (channels_last weights are not).
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(state, metadata={METADATA_KEY: json.dumps(metadata)})
    atomic_write(path, lambda f: f.write(data))


def read_metadata(path: str) -> dict[str, Any] | None:
    """The botnet metadata of a ``.safetensors`` file (its header alone is read); None when it has none
    (a timm or plain file)."""
    from safetensors import safe_open

    with read_or_refuse(f"cannot read {path} as safetensors (damaged or truncated)"):
        with safe_open(path, framework="pt") as file:
            raw = (file.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise CheckpointError(f"{path}: its botnet metadata is not JSON ({first_line(error)})") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its botnet metadata is not a mapping; the file is damaged")
    return meta


def _read_safetensors(path: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta is None:
        raise CheckpointError(
            f"{path} has no botnet metadata: it was not written by `botnet train` (plain weights go in with "
            f"botnet.load_resnet_weights or model.load_state_dict; timm's with create_model(NAME, pretrained=PATH))"
        )
    with read_or_refuse(f"cannot read {path} as safetensors (damaged or truncated)"):
        return load_file(path), meta


def _check_task(path: str, found: str, task: str | None) -> None:
    if task is not None and found != task:
        raise CheckpointError(f"{path} holds a {found} model, not a {task} one; use {METADATA[found].read_commands}")


@dataclass
class Checkpoint:
    """A run's file, read and checked once."""

    path: str
    task: str  # "classification" or "detection"
    meta: ClassifierMeta | DetectorMeta
    weights: dict[str, Tensor]  # the model's final weights (a last.pt's averaged ones where it kept them)
    training: TrainState | None = None  # a last.pt's whole state


def open_checkpoint(path: str | Checkpoint, task: str | None = None) -> Checkpoint:
    """Read a run's ``model.safetensors`` or ``last.pt`` (or a ``botnet convert`` file) once (a Checkpoint
    already read is returned as it is). With ``task``, a file written for another task is a CheckpointError
    that names the commands that read it."""
    if isinstance(path, Checkpoint):
        _check_task(path.path, path.task, task)
        return path
    check_readable(path)
    training = None
    if path.endswith(".safetensors"):
        weights, raw = _read_safetensors(path)
    else:
        training = load_training_state(path)
        weights, raw = training.final_weights(), training.meta
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: its metadata is not a mapping; the file is damaged")
    found = task_of(raw)
    if found not in METADATA:
        raise CheckpointError(f"{path}: its metadata names an unknown task {found!r}; the file is damaged or newer")
    _check_task(path, found, task)
    if found == "detection":
        raw = {**raw, "settings": _detector_settings_from_v1(raw.get("settings"))}
    meta = read_record(METADATA[found], raw, path, "metadata")
    return Checkpoint(path, found, meta, weights, training)
