"""Published ImageNet weights: timm's BoTNet checkpoints read into our models, and our own weight files.

timm's files name the same tensors differently (``stages.2.1.self_attn.qkv`` for our
``layer3.1.mhsa.qkv``); ``convert_timm_state_dict`` renames them one to one, so a
converted model computes exactly what timm's does. Files are read without
unpickling code (safetensors, or ``torch.load(weights_only=True)``), and nothing
is downloaded unless ``huggingface_hub`` is installed and the file is asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..checkpoints import read_metadata
from ..errors import CheckpointError, MissingFileError, first_line
from ..layers.attention import resize_position_table
from .botnet import BoTNet
from .weights import read_state_dict

__all__ = ["convert_timm_state_dict", "hub_weights_file", "imagenet_classes", "load_pretrained", "read_pretrained"]

POSITION_TABLES = ("rel_h", "rel_w", "abs_h", "abs_w")

# timm byobnet names -> ours, applied in order to every key. The tiered stem's convolutions before its
# last BN are our conv1 (a Sequential: conv, BN, act, conv, BN, act, conv); a block's BN after the
# attention is our bn2, as in the paper's block.
_TIMM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^stem\.conv1\.conv\.", "conv1.0."),
    (r"^stem\.conv1\.bn\.", "conv1.1."),
    (r"^stem\.conv2\.conv\.", "conv1.3."),
    (r"^stem\.conv2\.bn\.", "conv1.4."),
    (r"^stem\.conv3\.conv\.", "conv1.6."),
    (r"^stem\.conv3\.bn\.", "bn1."),
    (r"^stages\.(\d+)\.", "stage\\1."),
    (r"\.conv1_1x1\.conv\.", ".conv1."),
    (r"\.conv1_1x1\.bn\.", ".bn1."),
    (r"\.conv2_kxk\.conv\.", ".conv2."),
    (r"\.conv2_kxk\.bn\.", ".bn2."),
    (r"\.post_attn\.", ".bn2."),
    (r"\.conv3_1x1\.conv\.", ".conv3."),
    (r"\.conv3_1x1\.bn\.", ".bn3."),
    (r"\.shortcut\.conv\.", ".downsample.0."),
    (r"\.shortcut\.bn\.", ".downsample.1."),
    (r"\.self_attn\.qkv\.", ".mhsa.qkv."),
    (r"\.self_attn\.pos_embed\.height_rel$", ".mhsa.rel_h"),
    (r"\.self_attn\.pos_embed\.width_rel$", ".mhsa.rel_w"),
    (r"\.attn\.fc([12])\.", ".se.fc\\1."),
    (r"\.attn\.conv\.", ".eca.conv."),
    (r"^final_conv\.conv\.", "final_conv.0."),
    (r"^final_conv\.bn\.", "final_conv.1."),
    (r"^head\.fc\.", "fc."),
)


def is_timm_state_dict(state: Mapping[str, Tensor]) -> bool:
    return any(key.startswith(("stem.", "stages.")) for key in state)


def convert_timm_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm BoTNet state dict (botnet26t, sebotnet33ts, eca_botnext26ts, botnet50ts) under our names."""
    converted = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in _TIMM_RENAMES:
            new = re.sub(pattern, replacement, new)
        new = re.sub(r"^stage(\d+)\.", lambda m: f"layer{int(m[1]) + 1}.", new)
        converted[new] = value
    return converted


def read_pretrained(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """The weights in ``path`` under our names, and the botnet metadata the file carries (None for a
    timm file or a plain state dict)."""
    path = os.fspath(path)
    state = read_state_dict(path)  # checks the file exists and is readable
    meta = read_metadata(path) if path.endswith(".safetensors") else None
    return (convert_timm_state_dict(state) if is_timm_state_dict(state) else state), meta


def hub_weights_file(name: str, hub_id: str, url: str) -> str:
    """The local path of ``hub_id``'s model.safetensors: from the Hugging Face cache, downloaded into it
    when there is a network. Without huggingface_hub, or with neither, a MissingFileError says what to
    download and how to pass it."""
    manual = f"download {url} and pass its path (create_model({name!r}, pretrained=PATH) or --pretrained PATH)"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise MissingFileError(
            f"pretrained weights from the Hub need huggingface_hub (pip install 'botnet[hub]'); or {manual}"
        ) from None
    try:
        return hf_hub_download(hub_id, "model.safetensors")
    except Exception as error:  # offline without a cached copy, no such repository, a network failure
        raise MissingFileError(
            f"cannot get {hub_id} from the Hugging Face Hub or its cache ({type(error).__name__}: "
            f"{first_line(error)}); {manual}"
        ) from error


def _first_conv(model: BoTNet) -> str:
    return next(k for k, v in model.state_dict().items() if v.dim() == 4)


def load_pretrained(model: BoTNet, state: dict[str, Tensor], source: str) -> dict[str, Any]:
    """Copy ``state`` (our names) into ``model``: every tensor, except the classifier when the model
    has another number of classes (it keeps its fresh one, as timm does for fine-tuning). One-channel
    models take the sum of an RGB stem's filters; position tables built for another ``img_size`` are
    resampled (so the model computes what the original computes at that size). Returns what was
    loaded, for the run's records.

    Raises:
        CheckpointError: tensors missing, left over or of another shape; the message names them.
    """
    wanted = model.state_dict()
    state = dict(state)
    notes = []
    first = _first_conv(model)
    if first in state and state[first].shape[1] == 3 and model.in_chans == 1:
        state[first] = state[first].sum(1, keepdim=True)
        notes.append("stem filters summed over RGB for one input channel")
    tables = [
        k for k in state
        if k.rsplit(".", 1)[-1] in POSITION_TABLES and k in wanted
        and state[k].shape[1:] == wanted[k].shape[1:] and state[k].shape[0] != wanted[k].shape[0]
    ]  # fmt: skip
    for key in tables:  # built for another size: resampled by the rule the layer applies at run time
        state[key] = resize_position_table(state[key].float(), wanted[key].shape[0]).to(state[key].dtype)
    if tables:
        notes.append(f"{len(tables)} position tables resampled to img_size {model.img_size[0]}x{model.img_size[1]}")
    classifier = [k for k in ("fc.weight", "fc.bias") if k in state]
    keep_head = bool(classifier) and "fc.weight" in wanted and wanted["fc.weight"].shape == state["fc.weight"].shape
    if not keep_head:
        for key in classifier:
            del state[key]
        if "fc.weight" in wanted:
            notes.append(f"new classifier for {model.num_classes} classes")
    dropped = tuple(f"{n}." for n in ("layer1", "layer2", "layer3", "layer4", "final_conv") if not hasattr(model, n))
    missing = sorted(k for k in wanted if k not in state and not (k.startswith("fc.") and not keep_head))
    extra = sorted(k for k in state if k not in wanted and not k.startswith(dropped))
    reshaped = [k for k in wanted if k in state and state[k].shape != wanted[k].shape]
    if missing or extra or reshaped:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}")
        if extra:
            problems.append(f"{len(extra)} unexpected, e.g. {', '.join(extra[:3])}")
        if reshaped:
            k = reshaped[0]
            problems.append(
                f"{len(reshaped)} of another shape, e.g. {k}: file {tuple(state[k].shape)}, model {tuple(wanted[k].shape)}"
            )
        raise CheckpointError(f"{source} does not hold {model.name} weights: {'; '.join(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)  # checked above
    return dict(source=source, tensors=sum(k in state for k in wanted), classifier="loaded" if keep_head else "new", notes=notes)


def check_weights_meta(meta: Mapping[str, Any], name: str, source: str) -> None:
    if meta.get("task", "classification") != "classification":
        raise CheckpointError(f"{source} holds a {meta['task']} model, not a classifier")
    if meta.get("model") != name:
        raise CheckpointError(
            f"{source} holds {meta.get('model')!r} weights, not {name!r}: build that model (--model {meta.get('model')})"
        )


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in the order of the classifier's outputs (torchvision's list,
    shipped with it, so nothing is downloaded)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
