"""Runs and their checkpoints: a new run never overwrites one, a resumed run takes its saved settings and
state only where they fit. The files themselves (``last.pt``, ``model.safetensors``) are read and written by
``botnet.checkpoints``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..checkpoints import TrainState
from ..errors import CheckpointError, ConfigError, first_line
from ..records import with_current_names
from .settings import old_names

__all__ = [
    "check_metric_rows",
    "check_new_run_dir",
    "check_resumable",
    "restore_training_state",
    "saved_config",
]

RUN_FILES = ("last.pt", "summary.json", "model.safetensors")  # a folder holding any of these holds a run


def check_metric_rows(state: TrainState, path: str, columns: Sequence[str], required: Sequence[str]) -> None:
    """A last.pt's metrics: one row per finished epoch, each of known columns (``required`` among them)."""
    rows = state.metrics
    valid = len(rows) == state.epoch and all(set(required) <= set(row) <= set(columns) for row in rows)
    if not valid:
        raise CheckpointError(f"{path}: its per-epoch metrics are damaged; use another checkpoint")


def saved_config(state: TrainState, path: str, config_class: type, resolve: Callable[[Any], Any]) -> Any:
    """A last.pt's settings as ``config_class``, in the checkpoint's own folder. Those saved must be
    complete: unchanged by ``resolve``, which fills unset values and checks them all. Settings renamed
    since the file was written are read under their old names."""
    values = with_current_names(state.config, old_names(config_class))
    try:
        config = config_class(**{**values, "output_dir": os.path.dirname(os.path.abspath(path))})
        resolved = resolve(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its saved settings are not valid ({first_line(error)})") from error
    # Settings added since the file was written take their defaults; those it has must already be final
    # (a relative path, as older versions saved it, is taken from here).
    def final(name: str) -> bool:
        saved, now = getattr(config, name), getattr(resolved, name)
        return saved == now or (isinstance(saved, str) and isinstance(now, str) and os.path.abspath(saved) == now)

    if not all(final(name) for name in values):
        raise CheckpointError(f"{path}: its saved settings are incomplete; the file is damaged")
    return resolved


def check_new_run_dir(run_dir: str) -> None:
    """Refuse a folder that already holds a run: nothing of it is overwritten."""
    if any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES):
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {os.path.join(run_dir, 'last.pt')} "
            f"or choose another --output-dir"
        )


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


def restore_training_state(state: dict[str, Any], path: str, **parts: Any) -> None:
    """Load each part's saved state (``model=``, ``optimizer=``, ``scheduler=``, ``ema=``, ...) from ``state``
    (a mapping of part name to state dict); a state that does not fit is a CheckpointError naming the part."""
    for name, part in parts.items():
        if part is None:
            continue
        fresh = part.state_dict() if isinstance(part, torch.optim.lr_scheduler.LRScheduler) else None
        try:
            part.load_state_dict(state[name])
            if fresh is not None:
                _check_like(part.state_dict(), fresh)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            raise CheckpointError(
                f"{path}: the saved {name} state does not fit this run ({first_line(error)[:200]}); "
                f"the file is damaged or was written by another version"
            ) from error


def _kind(value: Any) -> type:
    return float if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)


def _check_like(loaded: dict[str, Any], fresh: dict[str, Any]) -> None:
    """A scheduler's loaded state has the fields, types and list lengths of a fresh one (its
    load_state_dict takes any values, and the first step would then fail, naming no file)."""
    for key, expected in fresh.items():
        value = loaded.get(key)
        same = _kind(value) is _kind(expected)
        if same and isinstance(expected, list):
            same = len(value) == len(expected) and all(_kind(a) is _kind(b) for a, b in zip(value, expected))
        if not same:
            raise ValueError(f"{key} is {value!r}")
