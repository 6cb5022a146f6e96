"""Every call into PyTorch's private API, each with a fallback for a release that lacks it.

The private names are the fastest way to do a few things (an in-place softmax kernel, a one-call test for
torch.func transforms, the CPU's instruction sets), but they may change in any release. Each function here
uses the private name where it exists and falls back to public API that gives the same result, slower or
more conservatively (tests/test_torch_private.py runs every fallback).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils import flop_counter

__all__ = ["cpu_has_fast_bfloat16", "functorch_active", "register_cpu_attention_flops", "softmax_"]


def functorch_active() -> bool:
    """Whether a torch.func transform (vmap, grad, jvp, ...) is running. Without the private check, True: the
    callers then take their traceable paths, which are correct everywhere (only slower in plain eager)."""
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else True


def softmax_(probs: Tensor) -> Tensor:
    """``probs`` replaced by its softmax over the last dimension, in place (the CPU kernel reads each row before
    writing it, so no second (N, N) buffer is needed); without the out= kernel, through a temporary."""
    kernel = getattr(getattr(torch.ops.aten, "_softmax", None), "out", None)
    if kernel is not None:
        return kernel(probs, -1, False, out=probs)
    return probs.copy_(torch.softmax(probs, -1))


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU has AMX or AVX512-BF16 instructions (bfloat16 then may beat float32); False where the
    checks are missing (bfloat16 is then not timed, float32 is kept)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def register_cpu_attention_flops() -> bool:
    """Count the fused CPU attention kernel (forward and backward) with PyTorch's own SDPA formulas, which
    ``torch.utils.flop_counter`` does not map it to; True when it is counted. Idempotent."""
    aten = torch.ops.aten
    pairs = [("_scaled_dot_product_flash_attention_for_cpu", "sdpa_flop"),
             ("_scaled_dot_product_flash_attention_for_cpu_backward", "sdpa_backward_flop")]
    register = getattr(flop_counter, "register_flop_formula", None)
    registry = getattr(flop_counter, "flop_registry", None)
    counted = True
    for op_name, formula_name in pairs:
        op, formula = getattr(aten, op_name, None), getattr(flop_counter, formula_name, None)
        if None in (op, formula, register, registry):
            counted = False
            continue
        if op not in registry:
            register(op, get_raw=True)(formula)
    return counted
