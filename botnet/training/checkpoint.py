"""Saving and loading runs without losing or trusting anything.

- Every file is written atomically (``botnet.files.atomic_write``): a crash or
  a full disk mid-write leaves the previous file intact.
- ``last.pt`` (the full training state, :class:`~botnet.training.state.TrainState`)
  holds only tensors and plain Python values and is read with
  ``torch.load(weights_only=True)``: a file that carries code is refused, never
  run. Its fields are checked before use, so a damaged or foreign file is a
  :class:`CheckpointError` that names it, never a crash.
- ``model.safetensors`` holds the final weights and, as metadata, what is
  needed to rebuild the model (each task's metadata record names the task).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, first_line
from ..models.weights import read_metadata, read_state_dict, save_weights
from .state import TrainState, check_readable, load_training_state, task_of

__all__ = [
    "CheckpointError",
    "check_metric_rows",
    "check_new_run_dir",
    "checkpoint_task",
    "task_of",
    "read_weights",
    "restore_training_state",
    "save_weights",
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
    complete: unchanged by ``resolve``, which fills unset values and checks them all."""
    try:
        config = config_class(**{**state.config, "output_dir": os.path.dirname(os.path.abspath(path))})
        resolved = resolve(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its saved settings are not valid ({first_line(error)})") from error
    # Settings added since the file was written take their defaults; those it has must already be final
    # (a relative path, as older versions saved it, is taken from here).
    def final(name: str) -> bool:
        saved, now = getattr(config, name), getattr(resolved, name)
        return saved == now or (isinstance(saved, str) and isinstance(now, str) and os.path.abspath(saved) == now)

    if not all(final(name) for name in state.config):
        raise CheckpointError(f"{path}: its saved settings are incomplete; the file is damaged")
    return resolved


def check_new_run_dir(run_dir: str) -> None:
    """Refuse a folder that already holds a run: nothing of it is overwritten."""
    if any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES):
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {os.path.join(run_dir, 'last.pt')} "
            f"or choose another --output-dir"
        )


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


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta = read_metadata(path)
    if meta is None:
        raise CheckpointError(
            f"{path} has no botnet metadata: it was not written by `botnet train` (plain weights go in with "
            f"botnet.load_resnet_weights or model.load_state_dict; timm's with create_model(NAME, pretrained=PATH))"
        )
    return read_state_dict(path), meta


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and metadata of a run's model.safetensors or last.pt (read safely)."""
    check_readable(path)
    if path.endswith(".safetensors"):
        state, meta = _read_safetensors(path)
    else:
        training = load_training_state(path)
        meta, state = training.meta, training.model
        if training.ema is not None:  # an AveragedModel state: the model's under "module.", plus its counter
            prefix = "module."
            state = {k[len(prefix) :]: v for k, v in training.ema.items() if k.startswith(prefix)}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a mapping; the file is damaged")
    return state, meta


def checkpoint_task(path: str) -> str:
    """"classification" or "detection": what a run's model.safetensors (read from its header alone)
    or last.pt was trained for."""
    meta = read_metadata(path) if path.endswith(".safetensors") and os.path.isfile(path) else None
    if meta is None:
        meta = read_weights(path)[1]  # a last.pt, or a file whose errors read_weights names
    return task_of(meta)
