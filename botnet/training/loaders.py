"""The training loader every task shares: each rank's shard, batches, and samples seeded for exact resume.

Each epoch reseeds from (seed, epoch, rank); each sample's augmentation draws
from its own generator seeded from (seed, epoch, index), so what a sample gets
does not depend on which worker loads it, how many workers there are, or where
a resumed epoch starts; a resumed epoch skips the batches already trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from ..interrupts import init_helper_process
from .distributed import DistEnv
from .optim import epoch_seed

__all__ = ["SeededSamples", "SkipBatches", "TrainLoader", "train_loader"]


class SeededSamples(Dataset):
    """``dataset`` with each sample's augmentation drawn from its own generator, seeded from
    (seed, epoch, index): the same whatever the worker, the number of workers or a resume."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        # The CPU generator itself, reseeded and put back (torch.manual_seed and fork_rng cost ~100x more).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed((epoch_seed(self.seed, self.epoch, 0) * 1_000_003 + index) % 2**63)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class SkipBatches(Sampler[list[int]]):
    """A batch sampler's batches, the first ``skip`` left out (the part of a resumed epoch already trained)."""

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches, self.skip = batches, 0

    def __iter__(self) -> Iterator[list[int]]:
        for index, batch in enumerate(self.batches):
            if index >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.skip)  # type: ignore[arg-type]


@dataclass
class TrainLoader:
    """The training loader and the parts :func:`fit` sets each epoch."""

    loader: DataLoader
    sampler: DistributedSampler
    samples: SeededSamples
    skip: SkipBatches
    generator: torch.Generator  # the loader's own: starting an epoch draws from it, not from the global one

    @property
    def steps(self) -> int:
        return len(self.skip.batches)  # type: ignore[arg-type]

    def start_epoch(self, seed: int, epoch: int, skip: int) -> None:
        self.sampler.set_epoch(epoch)
        self.samples.set_epoch(epoch)
        self.skip.skip = skip
        self.generator.manual_seed(epoch_seed(seed, epoch, 0))


def train_loader(
    dataset: Dataset,
    batch_size: int,
    env: DistEnv,
    *,
    seed: int,
    workers: int,
    collate_fn: Callable | None = None,
    batch_sampler: Callable[[Sampler[int], int], Sampler[list[int]]] | None = None,
) -> TrainLoader:
    """The training loader: each rank's shard (DistributedSampler, reshuffled per epoch), batches from
    ``batch_sampler(sampler, batch_size)`` (default plain, the last short batch dropped), samples seeded
    per epoch. Workers start fresh each epoch, so each sees the epoch's dataset state."""
    samples = SeededSamples(dataset, seed)
    sampler = DistributedSampler(
        samples, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    batches = (batch_sampler or (lambda s, b: BatchSampler(s, b, drop_last=True)))(sampler, batch_size)
    skip = SkipBatches(batches)
    generator = torch.Generator()
    loader = DataLoader(
        samples, batch_sampler=skip, num_workers=workers, collate_fn=collate_fn, generator=generator,
        pin_memory=env.device.type == "cuda", worker_init_fn=init_helper_process,
    )  # fmt: skip
    return TrainLoader(loader, sampler, samples, skip, generator)
