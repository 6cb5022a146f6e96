"""Denormal floats flushed to zero on the CPU while botnet trains, evaluates or predicts, in every thread.

A trained attention layer's softmax gives probabilities below float32's smallest normal number (about
1e-38, "denormals"); x86 CPUs compute with them through a slow microcode path, so the matrix products that
read them run tens of times slower (measured: a batched product over a 1,024 x 1,024 attention map with
half its entries denormal took 307 ms instead of 3.5). A detector's step slowed by 80% as it trained, for
that alone. Flushing them to zero changes no result that a float32 model can tell apart.

The setting is a CPU register of each thread, and a new thread copies its creator's: set in the main
thread before PyTorch starts its pool of threads (its first parallel operation), it holds in all of them.
The CLI sets it first; :func:`~botnet.training.pipeline.run_task` sets it too, for the main thread at
least when a program has already computed in parallel. Both restore the calling thread's setting when
they return, so a program that calls botnet keeps its own arithmetic (the threads PyTorch started
meanwhile keep flushing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flushed_denormals"]


def _flushing() -> bool:
    """Whether this thread flushes denormals now (a denormal times one gives zero)."""
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


@contextlib.contextmanager
def flushed_denormals() -> Iterator[None]:
    """Denormals flushed to zero in this thread (and the threads it starts) inside the block; the thread's
    previous setting afterwards. Where the CPU cannot flush them, nothing changes."""
    before = _flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
