"""Parameters, FLOPs and per-stage output shapes of a model (``botnet info``).

FLOPs come from ``torch.utils.flop_counter`` and count what the code executes:
2 FLOPs per multiply-add of convolutions, matmuls and attention (so the
paper's "M.Adds" are FLOPs / 2). PyTorch's counter does not know the fused
CPU attention kernel; it is registered before counting with PyTorch's own SDPA formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import flop_counter

from ..layers.attention import to_pair
from ..torch_private import register_cpu_attention_flops

__all__ = ["ModelSummary", "summarize"]


@dataclass(frozen=True)
class ModelSummary:
    params: int
    flops: int  # forward, batch 1
    img_size: tuple[int, int]
    stage_shapes: list[tuple[str, tuple[int, ...]]]  # (module name, output shape at batch 1)

    @property
    def macs(self) -> int:
        return self.flops // 2


def summarize(model: nn.Module, img_size: int | tuple[int, int] | None = None) -> ModelSummary:
    """Count parameters and forward FLOPs of one image, and record each stage's output shape."""
    height, width = to_pair(img_size if img_size is not None else model.img_size, "img_size")
    x = torch.zeros(1, model.in_chans, height, width, device=next(model.parameters()).device)
    shapes: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        getattr(model, info["module"]).register_forward_hook(
            lambda mod, inp, out, name=info["module"]: shapes.append((name, tuple(out.shape)))
        )
        for info in model.feature_info
    ]
    was_training = model.training
    try:
        model.eval()
        register_cpu_attention_flops()
        with torch.no_grad(), flop_counter.FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return ModelSummary(params, counter.get_total_flops(), (height, width), shapes)
