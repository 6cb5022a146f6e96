"""The files a run writes, each described once by a dataclass: what it holds, its types and its defaults.

:class:`TrainState` is ``last.pt``: written by the engine (:func:`save_training_state`),
read and checked (:func:`load_training_state`) from the same fields. A file
lacking a field added since it was written takes the field's default, so older
files still resume. The weights' metadata of each task is a dataclass of the same
kind (``ClassifierMeta``, ``DetectorMeta``), checked by ``botnet.records.read_record``.

``last.pt`` holds only tensors and plain Python values and is read with
``torch.load(weights_only=True)``: a file that carries code is refused, never run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, MissingFileError, first_line
from ..files import atomic_write
from ..records import read_record

__all__ = [
    "TRAIN_STATE_FORMAT",
    "TrainState",
    "check_readable",
    "check_resumable",
    "load_training_state",
    "save_training_state",
    "task_of",
]

TRAIN_STATE_FORMAT = "botnet-train-state-1"


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped (``RUN/last.pt``)."""

    config: dict[str, Any]  # the run's settings, as config.json holds them
    meta: dict[str, Any]  # what the saved weights need to be rebuilt (the task's metadata)
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
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and unzipping fail in many ways
        if isinstance(error, PermissionError):  # the file is fine; the user may not read it
            raise
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-tensor checkpoint (corrupt, truncated, or holding "
            f"code or objects that weights_only loading does not allow): {first_line(error)}"
        ) from error
    if not isinstance(raw, dict) or raw.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a botnet training checkpoint (expected the last.pt of a run)")
    state = read_record(TrainState, raw, path, "training state")
    if state.epoch < 0 or state.step < 0:
        raise CheckpointError(f"{path}: epoch {state.epoch} / step {state.step} are not counts")
    if state.step and not (state.rng and all(isinstance(r.get("cpu"), Tensor) and r["cpu"].dtype == torch.uint8 for r in state.rng)):
        raise CheckpointError(f"{path}: the random state saved with its mid-epoch stop is damaged")
    return state


def check_resumable(state: TrainState, path: str, world_size: int, steps_per_epoch: int) -> None:
    """A checkpoint resumes only with the number of processes that wrote it (the schedule and the meaning of
    a mid-epoch step depend on it), and its step must lie inside an epoch."""
    if state.world_size != world_size:
        raise CheckpointError(
            f"{path} was written by a run of {state.world_size} process(es); resume it with the same number "
            f"(torchrun --nproc_per_node {state.world_size}), not {world_size}"
        )
    if not 0 <= state.step < steps_per_epoch or (state.step and len(state.rng) != world_size):
        raise CheckpointError(f"{path}: its mid-epoch step {state.step} does not fit an epoch of {steps_per_epoch} steps")
