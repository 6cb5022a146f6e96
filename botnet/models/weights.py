"""Weight files: plain state dicts read safely, and torchvision ResNet weights for the ResNet parts.

- ``read_state_dict`` reads safetensors or a torch file without unpickling code.
  (Our own run files, with their metadata, are ``botnet.checkpoints``'.)
- ``load_resnet_weights``: the paper's detection set-up, where an ImageNet-trained
  ResNet initialises the network and the BoT layers start from scratch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor

from ..checkpoints import read_or_refuse
from ..errors import CheckpointError, MissingFileError
from ..layers.blocks import BoTBlock
from .botnet import BoTNet

__all__ = ["load_resnet_weights", "read_state_dict"]

def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file, read safely
    (``weights_only=True``: a file that holds code is refused, not run)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no weights file at {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        with read_or_refuse(f"cannot read {path!r} as safetensors (damaged or truncated)"):
            return load_file(path)
    refusal = (
        f"cannot read {path!r} as plain weights: it is corrupt or holds more than tensors (re-save it with "
        f"torch.save(model.state_dict(), path) or as .safetensors)"
    )
    with read_or_refuse(refusal):
        state = torch.load(path, map_location="cpu", weights_only=True)
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
