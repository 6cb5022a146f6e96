"""Batches of detection images that share an aspect-ratio group, as torchvision's detection references batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

__all__ = ["GroupedBatchSampler"]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images share a group (their aspect ratio: portrait or not), as torchvision's
    detection references batch, so padding to a batch's largest image wastes little. Yields
    len(sampler) // batch_size batches, as plain batching would: groups' leftovers, in sampler order,
    fill the last ones."""

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        waiting: dict[int, list[tuple[int, int]]] = {}  # group -> (position in the sampler, index)
        yielded = 0
        for position, index in enumerate(self.sampler):
            group = waiting.setdefault(self.group_ids[index], [])
            group.append((position, index))
            if len(group) == self.batch_size and yielded < len(self):
                yield [i for _, i in group]
                group.clear()
                yielded += 1
        leftovers = [i for _, i in sorted(pair for group in waiting.values() for pair in group)]
        for start in range(0, (len(self) - yielded) * self.batch_size, self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]
