"""``botnet convert``: a timm checkpoint (or any weights file of a registered model) to our safetensors
format, with the metadata that ``botnet predict`` / ``eval`` / ``train --pretrained`` read."""

from __future__ import annotations

import os
from typing import Any

from ..checkpoints import ClassifierMeta, save_weights
from ..errors import ConfigError
from .registry import create_model

__all__ = ["convert_weights"]


def convert_weights(source: str | os.PathLike | bool, name: str, output: str | os.PathLike) -> dict[str, Any]:
    """Write ``source``'s weights for model ``name`` to ``output`` (a ``.safetensors`` file) with their
    metadata: model, input size, mean/std, interpolation, crop fraction, class names. ``source`` True
    takes the published weights from the Hugging Face Hub (or its cache). Returns the metadata."""
    output = os.fspath(output)
    if not output.endswith(".safetensors"):
        raise ConfigError(f"--output must end in .safetensors, got {output!r}")
    model = create_model(name, pretrained=source)
    cfg = model.pretrained_cfg
    if "classes" not in cfg or len(cfg["classes"]) != model.num_classes:
        raise ConfigError(
            f"{cfg['source']} carries no class names for {name}'s {model.num_classes} outputs, so it cannot become "
            f"a model botnet predict can use; it is not {name}'s published checkpoint"
        )
    meta = ClassifierMeta(
        model=name,
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        **{k: cfg[k] for k in ("img_size", "classes", "mean", "std", "crop", "interpolation", "crop_fraction") if k in cfg},
        dataset=cfg.get("dataset", "unknown"),
        source=cfg["hub_id"] if source is True else os.path.basename(cfg["source"]),
    ).as_dict()
    save_weights(output, model, meta)
    return meta
