"""Loaders over one process's shard of a dataset: every image exactly once in evaluation, one global order in
training whatever the number of processes and machines."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardSampler(Sampler[int]):
    """Training: every `world`-th index starting at `rank` of an order shuffled per epoch from (seed, epoch), so
    with a global batch of B = world x per-process batch, iteration i trains on the images order[i*B:(i+1)*B] of
    one order that depends on (seed, epoch) only, whatever the processes and machines. Evaluation: a contiguous
    block of the dataset per process.

    Unlike DistributedSampler it never repeats samples, so evaluation counts each image exactly once;
    training drops the remainder so every process runs the same number of iterations.
    """

    def __init__(self, size: int, rank: int, world: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
        self.size, self.rank, self.world = size, rank, world
        self.shuffle, self.seed, self.drop_last, self.epoch, self.skip = shuffle, seed, drop_last, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The epoch whose order to give, leaving out the first `skip` indices of this shard (a resumed epoch)."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: self.size // self.world * self.world]
        if not self.shuffle:  # evaluation: a contiguous block per process, sizes differing by at most one
            share, extra = divmod(self.size, self.world)
            start = self.rank * share + min(self.rank, extra)
            return order[start:start + share + (self.rank < extra)][self.skip:]
        return order[self.rank:: self.world][self.skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def make_loader(dataset: Dataset, batch_size: int, workers: int, rank: int, world: int, train: bool,
                seed: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over this process's shard; training shuffles and drops incomplete batches."""
    sampler = ShardSampler(len(dataset), rank, world, shuffle=train, seed=seed, drop_last=train)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        drop_last=train, collate_fn=None if train else collate_list, persistent_workers=False,
    )


def collate_list(batch):
    """Evaluation batches keep images of different sizes apart: (list of images, list of labels, indices)."""
    images, labels, indices = zip(*batch)
    return list(images), list(labels), list(indices)
