"""Loaders: seeded per-epoch samplers with exact resume, DataLoader building, the endless labeled stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class KeyedSampler(Sampler):
    """Yields ``dataset.key(index, epoch)`` in (optionally shuffled or distributed) index order.

    The order depends only on (seed, epoch) (and rank/world size through ``base``). ``skip(n)``
    drops the first n items of the next pass only: exact resume without loading skipped data.
    """

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int, base: Sampler | None = None) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = int(seed)
        self.base = base
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def skip(self, n: int) -> None:
        self._skip = int(n)

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else len(self.dataset)

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        if self.base is not None:
            order = list(iter(self.base))
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            order = list(range(len(self.dataset)))
        for i in order[skip:]:
            yield self.dataset.key(i, epoch)


def _worker_init(worker_id: int) -> None:
    """Keep each worker single-threaded: workers already run in parallel."""
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    shuffle: bool,
    seed: int,
    rank: int = -1,
    world_size: int = 1,
    pin_memory: bool | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """DataLoader over a LabeledDataset/UnlabeledDataset with its collate_fn, reproducible order.

    Under DDP (rank >= 0, world_size > 1) a DistributedSampler splits the data. Call
    ``loader.sampler.set_epoch(epoch)`` (or use InfiniteLoader) to re-shuffle and re-draw
    augmentations each epoch. pin_memory defaults to ``torch.cuda.is_available()``.
    """
    if getattr(dataset, "rect", False) and shuffle:
        raise ValueError("a rect (validation) dataset must not be shuffled: its batches share shapes")
    base = None
    if world_size > 1 and rank >= 0:
        base = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    sampler = KeyedSampler(dataset, shuffle, seed, base)
    workers = max(0, int(workers))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=dataset.collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of a loader's sampler (shuffle order and augmentation draws)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


class InfiniteLoader:
    """Endless iterator over a loader; each pass advances the epoch (new order and augmentations).

    ``state_dict()`` -> {"epoch", "index"} (batches already taken in that epoch);
    ``load_state_dict`` resumes exactly there, skipping consumed batches without loading them
    when the loader came from ``build_loader``.
    """

    def __init__(self, loader: DataLoader, epoch: int = 0) -> None:
        self.loader = loader
        self.epoch = int(epoch)
        self.index = 0
        self._it: Iterator[Any] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> InfiniteLoader:
        return self

    def _start(self) -> None:
        set_loader_epoch(self.loader, self.epoch)
        sampler = self.loader.sampler
        if self.index and hasattr(sampler, "skip"):
            sampler.skip(self.index * (self.loader.batch_size or 1))
            self._it = iter(self.loader)
        else:
            self._it = iter(self.loader)
            for _ in range(self.index):
                next(self._it, None)

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                self._start()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.index = 0
                continue
            self.index += 1
            return batch
        raise RuntimeError("InfiniteLoader: the loader yields no batches (is the dataset empty?)")

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        self._it = None
