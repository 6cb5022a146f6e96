"""The machine a benchmark ran on, named beside its figures: the CPU's vector flags that PyTorch's kernels use."""

from __future__ import annotations

import platform

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_flags() -> str:
    """Those of FLAGS this CPU has ("avx2 avx512f ..."); the processor's name where /proc/cpuinfo is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(flag for flag in FLAGS if flag in flags)
