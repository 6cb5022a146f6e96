"""Optimisation pieces every task shares: parameter groups, the schedule, per-epoch seeds."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = ["epoch_seed", "param_groups", "warmup_cosine"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and position tables (1-D, or named rel_*/abs_*)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        table = name.rsplit(".", 1)[-1].startswith(("rel_", "abs_"))
        (no_decay if param.ndim <= 1 or table else decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Linear warm-up to the base rate, then cosine decay to zero (per step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Each epoch starts from its own seed, so a resumed run replays exactly what an uninterrupted one does."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)
