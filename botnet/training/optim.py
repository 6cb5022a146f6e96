"""Optimisation pieces every task shares: parameter groups, the schedule, per-epoch seeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "epoch_seed", "head_first", "param_groups", "warmup_cosine"]

# The optimizers a run can use, by name: each builds from parameter groups and the run's settings (lr, momentum).
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], Any], torch.optim.Optimizer]] = {
    "sgd": lambda groups, settings: torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum),
    # fused: one kernel over all parameters, where the for-loop default runs a dozen small ops per tensor
    "adamw": lambda groups, settings: torch.optim.AdamW(groups, lr=settings.lr, fused=_fusable(groups)),
}


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused optimizers take these parameters: floating point, on a CPU or a GPU."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def param_groups(model: nn.Module, weight_decay: float, head: str | None = None) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and position tables (1-D, or named rel_*/abs_*).

    ``head``: the parameters of the module of this name (the classifier) go in two groups of their
    own after the others', marked ``head=True``, for a schedule that trains the head first."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        table = name.rsplit(".", 1)[-1].startswith(("rel_", "abs_"))
        in_head = head is not None and name.startswith(f"{head}.")
        groups.setdefault((in_head, not (param.ndim <= 1 or table)), []).append(param)
    parts = [False, True] if head is not None else [False]
    return [
        dict(params=groups.get((in_head, decays), []), weight_decay=weight_decay if decays else 0.0)
        | (dict(head=in_head) if head is not None else {})
        for in_head in parts
        for decays in (True, False)
    ]


def head_first(schedule, head_steps: int):
    """The rest of the network's factor when the head trains alone first: zero for ``head_steps``
    steps, then ``schedule`` from its own start (its warm-up included)."""

    def factor(step: int) -> float:
        return 0.0 if step < head_steps else schedule(step - head_steps)

    return factor


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
