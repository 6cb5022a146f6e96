"""torch.distributed set-up for runs under torchrun (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = [
    "DistEnv",
    "main_process_first",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "broadcast_buffers",
    "gather_objects",
    "init_distributed",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    """Join the process group torchrun describes in the environment, or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local_rank} of this node has no GPU of its own (the node has {torch.cuda.device_count()}); "
                f"start at most that many (torchrun --nproc_per_node), or train on CPU with CUDA_VISIBLE_DEVICES=''"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and restart != "0":
            # torchrun keeps its store across restarts: a restarted group reading the keys of the one before
            # (its dead workers' addresses) fails to connect. Each restart gets keys of its own.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                timeout=timedelta(minutes=10),
            )  # fmt: skip
            prefixed = dist.PrefixStore(f"botnet/restart-{restart}", store)
            dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world_size)
        else:
            dist.init_process_group(backend=backend)
    return DistEnv(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's buffers (BN statistics drift apart per rank without SyncBatchNorm)."""
    if env.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def gather_objects(value: object, env: DistEnv) -> list:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not env.distributed:
        return [value]
    values: list = [None] * env.world_size
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value: object, env: DistEnv) -> object:
    """Rank 0's ``value`` (picklable) on every rank."""
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_process_first(env: DistEnv) -> Iterator[None]:
    """Rank 0 runs the block first (checking a data folder, which fills the check cache); the other ranks run
    it after, cheaply. Rank 0 releases them even when its block fails, and they then fail the same way."""
    if not env.is_main:
        barrier(env)
    try:
        yield
    finally:
        if env.is_main:
            barrier(env)
