"""Saving and loading runs without losing or trusting anything.

- Every file is written to a temporary file in the same folder and moved into
  place with ``os.replace``: a crash mid-write leaves the previous file intact.
- ``last.pt`` (full training state) holds only tensors and plain Python values
  and is read with ``torch.load(weights_only=True)``: a file that carries code
  is refused, never run.
- ``model.safetensors`` holds the final weights and, as metadata, what is
  needed to rebuild the model (name, classes, input size, normalisation).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

import torch
from torch import nn

from ..models import BoTNet, create_model

__all__ = [
    "CheckpointError",
    "TRAIN_STATE_FORMAT",
    "atomic_write",
    "check_new_run_dir",
    "save_training_state",
    "load_training_state",
    "save_weights",
    "load_model",
    "read_weights",
]

TRAIN_STATE_FORMAT = "botnet-train-state-1"
METADATA_KEY = "botnet"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message says why."""


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` via a temporary file in its folder, fsync, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def check_new_run_dir(run_dir: str) -> None:
    """Refuse a folder that already holds a run: nothing of it is overwritten."""
    if any(os.path.exists(os.path.join(run_dir, f)) for f in ("last.pt", "summary.json")):
        raise ValueError(
            f"{run_dir} already holds a run; continue it with --resume {os.path.join(run_dir, 'last.pt')} "
            f"or choose another --output-dir"
        )


def save_training_state(path: str, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": TRAIN_STATE_FORMAT, **state}, f))


def load_training_state(path: str) -> dict[str, Any]:
    """Read a ``last.pt`` safely; CheckpointError names what is wrong."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling fails in many ways
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-tensor checkpoint (corrupt, truncated, or holding "
            f"code or objects that weights_only loading does not allow): {str(error).splitlines()[0]}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a botnet training checkpoint (expected the last.pt of a run)")
    return state


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors stores contiguous tensors (channels_last weights are not).
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_weights(path: str, model: nn.Module, metadata: dict[str, Any]) -> None:
    from safetensors.torch import save

    data = save(_plain_state_dict(model), metadata={METADATA_KEY: json.dumps(metadata)})
    atomic_write(path, lambda f: f.write(data))


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and metadata of a run's model.safetensors or last.pt (read safely)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as file:
                raw = (file.metadata() or {}).get(METADATA_KEY)
                state = {k: file.get_tensor(k) for k in file.keys()}
        except Exception as error:
            raise CheckpointError(f"cannot read {path} as safetensors: {error}") from error
        if raw is None:
            raise CheckpointError(f"{path} has no botnet metadata; it was not written by `botnet train`")
        return state, json.loads(raw)
    state = load_training_state(path)
    if state.get("ema") is not None:  # an AveragedModel state: the model's under "module.", plus its counter
        prefix = "module."
        return {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}, state["meta"]
    return state["model"], state["meta"]


def load_model(path: str) -> tuple[BoTNet, dict[str, Any]]:
    """Rebuild a trained model from ``model.safetensors`` or ``last.pt``.

    Returns the model in eval mode and its metadata (classes, img_size, mean,
    std, crop, dataset, ...)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    state, meta = read_weights(path)
    if meta.get("task", "classification") != "classification":
        raise CheckpointError(f"{path} holds a {meta['task']} model; use `botnet detect eval` / `botnet detect predict`")
    model = create_model(
        meta["model"], num_classes=len(meta["classes"]), in_chans=meta["in_chans"], img_size=meta["img_size"]
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit model {meta['model']}: {str(error).splitlines()[0]}") from error
    return model.eval(), meta
