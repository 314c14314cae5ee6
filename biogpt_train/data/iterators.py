"""Epoch batch iterator with fairseq v0.12 ``EpochBatchIterator`` semantics (framework-notes §1.1, §2.6, §2.8).

- Batches (lists of dataset indices) are built once and frozen.
- Epoch ``e`` (1-based) shuffles the batch list with ``RandomState(seed + e).shuffle`` — the same permutation as
  fairseq's ``with numpy_seed(seed + epoch): np.random.shuffle(batches)``.
- Rank ``r`` of ``W`` takes ``batches[r::W]``, padded with empty batches to ``ceil(len / W)``. An empty batch
  collates to ``{}``: a *dummy* batch whose loss the trainer multiplies by 0, so all ranks run the same number of
  steps.
- ``group(itr, update_freq)`` hands out lists of ``update_freq`` consecutive batches (the last may be shorter).
- ``state_dict() = {version, epoch, iterations_in_epoch, shuffle}`` counts *batches* consumed in the epoch;
  ``load_state_dict`` rebuilds the same epoch order and skips that many, so a resumed run sees exactly the batches
  an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np


def shuffle_batches(batches: Sequence, seed: int) -> list:
    """A shuffled copy of ``batches``, identical to ``numpy_seed(seed); np.random.shuffle(list(batches))``."""
    out = list(batches)
    np.random.RandomState(seed).shuffle(out)
    return out


def shard(batches: Sequence, num_shards: int, shard_id: int, fill_value: Any = None) -> list:
    """``batches[shard_id::num_shards]`` padded with ``fill_value`` to ``ceil(len / num_shards)`` entries."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    length = math.ceil(len(batches) / num_shards)
    mine = list(batches[shard_id::num_shards])
    return mine + [fill_value] * (length - len(mine))


def update_freq_for_epoch(update_freq, epoch: int) -> int:
    """fairseq's ``update_freq[epoch - 1]`` with the last value reused; an int is used as is."""
    if isinstance(update_freq, int):
        return update_freq
    freqs = list(update_freq)
    return int(freqs[epoch - 1] if epoch <= len(freqs) else freqs[-1])


class CountingIterator:
    """Iterator over ``items[offset:]`` that counts consumed items in ``n`` (starting at ``offset``)."""

    def __init__(self, items: Sequence, produce: Callable[[Any], Any], offset: int = 0, total: int | None = None):
        self.items = items
        self.produce = produce
        self.n = offset
        self.total = len(items) if total is None else min(total, len(items))

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        return self

    def __next__(self):
        if self.n >= self.total:
            raise StopIteration
        item = self.items[self.n]
        self.n += 1
        return self.produce(item)

    def has_next(self) -> bool:
        return self.n < self.total


class GroupedIterator:
    """Chunks of ``chunk_size`` consecutive items of a :class:`CountingIterator` (last chunk may be shorter).

    ``n`` counts chunks: ``ceil(inner.n / chunk_size)`` at creation, as fairseq (a resume mid-group starts a new
    group at the resume point). ``skip_remainder_batch`` drops a short final chunk.
    """

    def __init__(self, inner: CountingIterator, chunk_size: int, skip_remainder_batch: bool = False):
        if chunk_size < 1:
            raise ValueError(f"update_freq must be >= 1, got {chunk_size}")
        self.inner = inner
        self.chunk_size = chunk_size
        self.skip_remainder_batch = skip_remainder_batch
        if skip_remainder_batch:
            # truncate the epoch itself (fairseq's `take`) so that end_of_epoch()/state_dict() agree with it
            inner.total = min(inner.total, (len(inner) // chunk_size) * chunk_size)
        self.n = math.ceil(inner.n / chunk_size)
        self.total = math.ceil(len(inner) / chunk_size)

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        return self

    def __next__(self) -> list:
        if self.n >= self.total:
            raise StopIteration
        chunk = []
        while len(chunk) < self.chunk_size and self.inner.has_next():
            chunk.append(next(self.inner))
        if not chunk:
            raise StopIteration
        self.n += 1
        return chunk

    def has_next(self) -> bool:
        return self.n < self.total


def group(itr: CountingIterator, update_freq: int, skip_remainder_batch: bool = False) -> GroupedIterator:
    """Group an epoch iterator into lists of ``update_freq`` batches (fairseq ``GroupedIterator``)."""
    return GroupedIterator(itr, update_freq, skip_remainder_batch)


class EpochBatchIterator:
    """Multi-epoch iterator over frozen batches of dataset indices.

    ``dataset[i]`` and ``collate_fn(list_of_samples)`` turn a batch into a sample dict; with ``dataset=None`` the
    iterator yields the index arrays themselves (empty array for a dummy batch).
    """

    def __init__(
        self,
        batches: Iterable,
        *,
        dataset: Any = None,
        collate_fn: Callable[[list], Any] | None = None,
        seed: int = 1,
        num_shards: int = 1,
        shard_id: int = 0,
        epoch: int = 1,
        disable_shuffling: bool = False,
    ):
        self.frozen_batches = tuple(np.asarray(b, dtype=np.int64).reshape(-1) for b in batches)
        if dataset is not None and collate_fn is None:
            collate_fn = getattr(dataset, "collater", None)
            if collate_fn is None:
                raise ValueError("EpochBatchIterator: dataset given without collate_fn and it has no .collater")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.seed = seed
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.epoch = max(int(epoch), 1)
        self.disable_shuffling = disable_shuffling
        self.shuffle = True
        self._cur: CountingIterator | None = None
        self._next: CountingIterator | None = None
        shard([], num_shards, shard_id)  # validates shard_id

    def __len__(self) -> int:
        """Batches per epoch on this shard (dummy batches included)."""
        return math.ceil(len(self.frozen_batches) / self.num_shards)

    @property
    def next_epoch_idx(self) -> int:
        if self._next is not None:
            return self.epoch
        if self._cur is not None and self.end_of_epoch():
            return self.epoch + 1
        return self.epoch

    def epoch_batches(self, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
        """This shard's batches for ``epoch`` in iteration order (dummy batches are empty arrays)."""
        batches = self.frozen_batches
        if shuffle:
            batches = shuffle_batches(batches, self.seed + epoch)
        return shard(batches, self.num_shards, self.shard_id, fill_value=np.zeros(0, dtype=np.int64))

    def _produce(self, batch: np.ndarray):
        if self.dataset is None:
            return batch
        return self.collate_fn([self.dataset[int(i)] for i in batch])

    def _iterator_for_epoch(self, epoch: int, shuffle: bool, offset: int = 0) -> CountingIterator | None:
        batches = self.epoch_batches(epoch, shuffle)
        if offset > 0 and offset >= len(batches):
            return None
        return CountingIterator(batches, self._produce, offset=offset)

    def next_epoch_itr(self, shuffle: bool = True) -> CountingIterator:
        """Iterator over the next epoch (or the rest of the resumed one after ``load_state_dict``)."""
        if self.disable_shuffling:
            shuffle = False
        self.epoch = self.next_epoch_idx
        if self._next is not None:
            self._cur, self._next = self._next, None
        else:
            self._cur = self._iterator_for_epoch(self.epoch, shuffle)
        self.shuffle = shuffle
        return self._cur

    def end_of_epoch(self) -> bool:
        """Whether the current epoch iterator is exhausted (False before the first ``next_epoch_itr``)."""
        return self._cur is not None and not self._cur.has_next()

    @property
    def iterations_in_epoch(self) -> int:
        """Batches consumed in the current epoch."""
        if self._cur is not None:
            return self._cur.n
        if self._next is not None:
            return self._next.n
        return 0

    def state_dict(self) -> dict:
        if self.end_of_epoch():
            epoch, pos = self.epoch + 1, 0
        else:
            epoch, pos = self.epoch, self.iterations_in_epoch
        return {"version": 2, "epoch": epoch, "iterations_in_epoch": pos, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        pos = int(state.get("iterations_in_epoch", 0))
        self.shuffle = bool(state.get("shuffle", True))
        self._cur = None
        if pos > 0:
            self._next = self._iterator_for_epoch(self.epoch, self.shuffle, offset=pos)
            if self._next is None:
                raise RuntimeError(
                    f"cannot resume: iterator state says {pos} batches consumed in epoch {self.epoch} but this "
                    f"shard has only {len(self)}; the data, batching options or world size changed since the save"
                )
        else:
            self._next = None
