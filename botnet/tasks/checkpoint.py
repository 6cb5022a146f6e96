"""Saving and loading runs without losing or trusting anything.

- Every file is written atomically (``botnet.files.atomic_write``): a crash or
  a full disk mid-write leaves the previous file intact.
- ``last.pt`` (full training state) holds only tensors and plain Python values
  and is read with ``torch.load(weights_only=True)``: a file that carries code
  is refused, never run. Its fields are checked before use, so a damaged or
  foreign file is a :class:`CheckpointError` that names it, never a crash.
- ``model.safetensors`` holds the final weights and, as metadata, what is
  needed to rebuild the model (name, classes, input size, normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..data.transforms import INTERPOLATIONS
from ..errors import CheckpointError, ConfigError, MissingFileError, first_line
from ..files import atomic_write
from ..models import BoTNet, create_model
from ..models.weights import read_metadata, read_state_dict, save_weights

__all__ = [
    "CheckpointError",
    "TRAIN_STATE_FORMAT",
    "check_meta",
    "check_metric_rows",
    "check_new_run_dir",
    "check_resumable",
    "restore_training_state",
    "save_training_state",
    "saved_config",
    "load_training_state",
    "save_weights",
    "checkpoint_task",
    "load_model",
    "read_weights",
]

TRAIN_STATE_FORMAT = "botnet-train-state-1"
RUN_FILES = ("last.pt", "summary.json", "model.safetensors")  # a folder holding any of these holds a run

_NUMBER = (int, float)
# What every last.pt holds, and the type of each field.
_STATE_FIELDS: dict[str, type | tuple[type, ...]] = dict(
    config=dict, meta=dict, epoch=int, model=dict, optimizer=dict, scheduler=dict, metrics=list,
    wall_seconds=_NUMBER, train_seconds=_NUMBER, train_images=int,
)  # fmt: skip
_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = dict(
    step=int, partial=dict, rng=list, world_size=int, ema=(dict, type(None)), scaler=(dict, type(None))
)
# What a classifier's metadata holds (a detector's is checked by the detection task).
CLASSIFIER_META: dict[str, type | tuple[type, ...]] = dict(
    model=str, num_classes=int, in_chans=int, img_size=int, classes=list, mean=list, std=list, crop=bool, dataset=str
)


def check_meta(meta: Any, path: str, fields: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """``meta`` if it is a dict holding each of ``fields`` with its type, else a CheckpointError naming the first
    field that is not."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a mapping; the file is damaged")
    for key, kind in fields.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, _NUMBER)):
            raise CheckpointError(
                f"{path}: its metadata field {key!r} is {value!r}; the file is damaged or was not written by botnet"
            )
    return meta


def check_metric_rows(state: dict[str, Any], path: str, columns: Sequence[str], required: Sequence[str]) -> None:
    """A last.pt's metrics: one row per finished epoch, each a mapping of known columns (``required`` among them)
    to numbers."""
    rows = state["metrics"]
    valid = len(rows) == state["epoch"] and all(
        isinstance(row, dict)
        and set(required) <= set(row) <= set(columns)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values())
        for row in rows
    )
    if not valid:
        raise CheckpointError(f"{path}: its per-epoch metrics are damaged; use another checkpoint")


def saved_config(state: dict[str, Any], path: str, config_class: type, resolve: Callable[[Any], Any]) -> Any:
    """A last.pt's settings as ``config_class``, in the checkpoint's own folder. Those saved must be
    complete: unchanged by ``resolve``, which fills unset values and checks them all."""
    try:
        config = config_class(**{**state["config"], "output_dir": os.path.dirname(os.path.abspath(path))})
        resolved = resolve(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its saved settings are not valid ({first_line(error)})") from error
    # Settings added since the file was written take their defaults; those it has must already be final
    # (a relative path, as older versions saved it, is taken from here).
    def final(name: str) -> bool:
        saved, now = getattr(config, name), getattr(resolved, name)
        return saved == now or (isinstance(saved, str) and isinstance(now, str) and os.path.abspath(saved) == now)

    if not all(final(name) for name in state["config"]):
        raise CheckpointError(f"{path}: its saved settings are incomplete; the file is damaged")
    return resolved


def check_new_run_dir(run_dir: str) -> None:
    """Refuse a folder that already holds a run: nothing of it is overwritten."""
    if any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_FILES):
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {os.path.join(run_dir, 'last.pt')} "
            f"or choose another --output-dir"
        )


def save_training_state(path: str, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": TRAIN_STATE_FORMAT, **state}, f))


def _read_file(path: str) -> None:
    if not os.path.exists(path):
        raise MissingFileError(f"no checkpoint at {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; give RUN/last.pt or RUN/model.safetensors")


def load_training_state(path: str) -> dict[str, Any]:
    """Read a ``last.pt`` safely; CheckpointError names what is wrong."""
    _read_file(path)
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (a copy or a write that did not finish); use another checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and unzipping fail in many ways
        if isinstance(error, PermissionError):  # the file is fine; the user may not read it
            raise
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-tensor checkpoint (corrupt, truncated, or holding "
            f"code or objects that weights_only loading does not allow): {first_line(error)}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a botnet training checkpoint (expected the last.pt of a run)")
    for key, kind in _STATE_FIELDS.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} is missing or damaged; use another checkpoint")
    for name in ("model", "ema"):
        tensors = state.get(name)
        if tensors is not None and not (
            isinstance(tensors, dict) and all(isinstance(v, torch.Tensor) for v in tensors.values())
        ):
            raise CheckpointError(f"{path}: field {name!r} does not hold tensors; use another checkpoint")
    for key, kind in _OPTIONAL_FIELDS.items():  # written by runs stopped mid-epoch (and older files lack them)
        if key in state and not isinstance(state[key], kind):
            raise CheckpointError(f"{path}: field {key!r} is damaged; use another checkpoint")
    rng = state.get("rng", [])  # one entry per process: the random state at a mid-epoch stop
    if state.get("step", 0) and not (
        isinstance(rng, list)
        and rng
        and all(
            isinstance(r, dict) and isinstance(r.get("cpu"), torch.Tensor) and r["cpu"].dtype == torch.uint8 for r in rng
        )
    ):
        raise CheckpointError(f"{path}: the random state saved with its mid-epoch stop is damaged")
    partial = state.get("partial", {})
    if not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in partial.items()):
        raise CheckpointError(f"{path}: field 'partial' is damaged; use another checkpoint")
    if isinstance(state["epoch"], bool) or state["epoch"] < 0 or state.get("step", 0) < 0:
        raise CheckpointError(f"{path}: epoch {state['epoch']} / step {state.get('step')} are not counts")
    return state


def check_resumable(state: dict[str, Any], path: str, world_size: int, steps_per_epoch: int) -> None:
    """A checkpoint resumes only with the number of processes that wrote it (the schedule and the meaning of
    a mid-epoch step depend on it), and its step must lie inside an epoch."""
    saved = state.get("world_size", 1)
    if saved != world_size:
        raise CheckpointError(
            f"{path} was written by a run of {saved} process(es); resume it with the same number "
            f"(torchrun --nproc_per_node {saved}), not {world_size}"
        )
    step = state.get("step", 0)
    if not 0 <= step < steps_per_epoch or (step and len(state["rng"]) != world_size):
        raise CheckpointError(f"{path}: its mid-epoch step {step} does not fit an epoch of {steps_per_epoch} steps")


def restore_training_state(state: dict[str, Any], path: str, **parts: Any) -> None:
    """Load each part's saved state (``model=``, ``optimizer=``, ``scheduler=``, ``ema=``, ...) from ``state``;
    a state that does not fit is a CheckpointError naming the part."""
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
    _read_file(path)
    if path.endswith(".safetensors"):
        state, meta = _read_safetensors(path)
    else:
        training = load_training_state(path)
        meta, state = training["meta"], training["model"]
        if training.get("ema") is not None:  # an AveragedModel state: the model's under "module.", plus its counter
            prefix = "module."
            state = {k[len(prefix) :]: v for k, v in training["ema"].items() if k.startswith(prefix)}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a mapping; the file is damaged")
    return state, meta


def checkpoint_task(path: str) -> str:
    """"classification" or "detection": what a run's model.safetensors (read from its header alone)
    or last.pt was trained for."""
    meta = read_metadata(path) if path.endswith(".safetensors") and os.path.isfile(path) else None
    if meta is None:
        meta = read_weights(path)[1]  # a last.pt, or a file whose errors read_weights names
    return meta.get("task", "classification")


def load_model(path: str) -> tuple[BoTNet, dict[str, Any]]:
    """Rebuild a trained model from ``model.safetensors`` or ``last.pt``.

    Returns the model in eval mode and its metadata (classes, img_size, mean,
    std, crop, dataset, ...)."""
    state, meta = read_weights(path)
    if meta.get("task", "classification") != "classification":
        raise CheckpointError(f"{path} holds a {meta['task']} model; use `botnet detect eval` / `botnet detect predict`")
    check_meta(meta, path, CLASSIFIER_META)
    numbers = [v for v in meta["mean"] + meta["std"] if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not all(isinstance(c, str) for c in meta["classes"]) or len(numbers) != 2 * meta["in_chans"]:
        raise CheckpointError(f"{path}: its class names or normalisation are damaged; use another checkpoint")
    fraction = meta.get("crop_fraction", 0.875)
    if meta.get("interpolation", "bilinear") not in INTERPOLATIONS or not (
        isinstance(fraction, float) and 0.0 < fraction <= 1.0
    ):
        raise CheckpointError(f"{path}: its interpolation or crop fraction is damaged; use another checkpoint")
    try:
        overrides = meta.get("model_overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"model_overrides is {overrides!r}, not a mapping")
        model = create_model(
            meta["model"], num_classes=len(meta["classes"]), in_chans=meta["in_chans"], img_size=meta["img_size"],
            **overrides,
        )
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: its metadata does not describe a model this version builds: {error}") from error
    restore_training_state({"model": state}, path, model=model)
    return model.eval(), meta
