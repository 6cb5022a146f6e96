"""Weight files: read safely, written with their metadata, and torchvision ResNet weights for the ResNet parts.

- ``read_state_dict`` reads safetensors or a torch file without unpickling code.
- ``save_weights`` / ``read_metadata``: our ``.safetensors`` files carry, as JSON
  metadata, what is needed to rebuild and feed the model (name, classes, input
  size, normalisation).
- ``load_resnet_weights``: the paper's detection set-up, where an ImageNet-trained
  ResNet initialises the network and the BoT layers start from scratch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, MissingFileError, first_line
from ..files import atomic_write
from ..layers.blocks import BoTBlock
from .botnet import BoTNet

__all__ = ["METADATA_KEY", "load_resnet_weights", "read_metadata", "read_state_dict", "save_weights"]

METADATA_KEY = "botnet"  # the safetensors metadata entry that holds ours (JSON)


def save_weights(path: str, model: nn.Module, metadata: dict[str, Any]) -> None:
    """``model``'s weights as safetensors with ``metadata``, written atomically."""
    from safetensors.torch import save

    # safetensors stores contiguous tensors (channels_last weights are not).
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(state, metadata={METADATA_KEY: json.dumps(metadata)})
    atomic_write(path, lambda f: f.write(data))


def read_metadata(path: str) -> dict[str, Any] | None:
    """The botnet metadata of a ``.safetensors`` file; None when it has none (a timm or plain file)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as file:
            raw = (file.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # safetensors' own error type, and whatever a damaged header causes
        if isinstance(error, PermissionError):  # the file is fine; the user may not read it
            raise
        raise CheckpointError(f"cannot read {path} as safetensors (damaged or truncated): {first_line(error)}") from error
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise CheckpointError(f"{path}: its botnet metadata is not JSON ({first_line(error)})") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its botnet metadata is not a mapping; the file is damaged")
    return meta


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file, read safely
    (``weights_only=True``: a file that holds code is refused, not run)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no weights file at {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # safetensors' own error type, and whatever a damaged header causes
            if isinstance(error, PermissionError):  # the file is fine; the user may not read it
                raise
            raise CheckpointError(f"cannot read {path!r} as safetensors (damaged or truncated): {first_line(error)}") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        if isinstance(error, PermissionError):  # the file is fine; the user may not read it
            raise
        raise CheckpointError(
            f"cannot read {path!r} as plain weights ({type(error).__name__}: {first_line(error)}); it is corrupt or holds "
            f"more than tensors. Re-save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from error
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def load_resnet_weights(
    model: BoTNet,
    source: Mapping[str, Tensor] | str | os.PathLike,
    *,
    include_classifier: bool = False,
) -> list[str]:
    """Copy a torchvision ResNet state dict into every ResNet part of ``model``:
    the stem and each non-BoT block (BoT blocks keep their fresh initialisation).

    Args:
        model: a model with torchvision's ResNet layout (any registered one).
        source: the state dict, or a path to a torch or safetensors file of it.
        include_classifier: copy ``fc`` as well (needs the same number of classes).

    Returns:
        The names of the copied tensors.

    Raises:
        ValueError: a tensor the ResNet parts need is missing or has another shape
        (the checkpoint is for a different depth or width).
    """
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    bot_prefixes = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, BoTBlock))
    wanted = {
        key: value
        for key, value in model.state_dict().items()
        if not key.startswith(bot_prefixes) and (include_classifier or not key.startswith("fc."))
    }
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:3]}; "
            f"is it a torchvision ResNet of the same depth?"
        )
    mismatched = [k for k, v in wanted.items() if state[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"{len(mismatched)} tensor(s) differ in shape, e.g. {k}: checkpoint {tuple(state[k].shape)}, "
            f"model {tuple(wanted[k].shape)}"
        )
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return sorted(wanted)
