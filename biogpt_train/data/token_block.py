"""Token blocks over a flat stream of items, with fairseq v0.12 ``TokenBlockDataset`` semantics (numpy, no Cython).

The input is the list of item sizes (each item = one line of ``fairseq-preprocess`` output, trailing ``</s>``
included). Blocks are ``(start, end)`` slices of the concatenated stream (framework-notes §2.4):

- ``none``         consecutive blocks of exactly ``block_size`` tokens; the last one is shorter.
- ``complete``     whole items packed greedily; an item is added if it fits or the block is empty (so an
                   over-long item becomes a block of its own, longer than ``block_size``).
- ``complete_doc`` like ``complete``, but an item of size ``document_sep_len`` (an empty line = ``[</s>]``) closes
                   the block and is skipped; blocks of size <= 1 are dropped.
- ``eos``          one block per item; ``block_size`` is ignored (may be None).

With ``include_targets`` a block yields ``(source, target)``: ``target`` is the block, ``source`` the block shifted
right by one. As in fairseq, a block that starts at offset 0 *of an item* gets ``eos`` as its first input token;
otherwise the first input token is the previous token of that item (for items that end in ``</s>`` both rules give
the previous stream token).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

BREAK_MODES = ("none", "complete", "complete_doc", "eos")


def _as_sizes(sizes) -> np.ndarray:
    arr = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError(f"item sizes must be >= 0, got {int(arr.min())} at item {int(arr.argmin())}")
    return arr


def block_slices(sizes, block_size: int | None, break_mode: str = "none", document_sep_len: int = 1) -> np.ndarray:
    """``(num_blocks, 2)`` int64 array of ``[start, end)`` offsets into the flat token stream."""
    sizes = _as_sizes(sizes)
    mode = "none" if break_mode is None else break_mode
    if mode not in BREAK_MODES:
        raise ValueError(f"invalid break_mode {break_mode!r}; expected one of {', '.join(BREAK_MODES)}")
    if mode == "eos":
        ends = np.cumsum(sizes, dtype=np.int64)
        return np.stack([ends - sizes, ends], axis=1) if len(sizes) else np.zeros((0, 2), np.int64)
    if block_size is None or int(block_size) <= 0:
        raise ValueError(f"break_mode={mode!r} needs block_size >= 1 (tokens_per_sample), got {block_size!r}")
    block_size = int(block_size)

    if mode == "none":
        total = int(sizes.sum())
        starts = np.arange(0, total, block_size, dtype=np.int64)
        return np.stack([starts, np.minimum(starts + block_size, total)], axis=1)

    # complete / complete_doc: greedy packing, a plain loop over items (as fairseq's Cython loop).
    out: list[tuple[int, int]] = []
    tok, cur = 0, 0
    sep = int(document_sep_len)
    for sz in sizes.tolist():
        is_sep = mode == "complete_doc" and sz == sep
        if not is_sep and (cur + sz <= block_size or cur == 0):
            cur += sz
            continue
        # close the running block (fairseq: complete keeps any non-empty block, complete_doc only size > 1)
        if cur > (1 if mode == "complete_doc" else 0):
            out.append((tok, tok + cur))
        tok += cur
        cur = 0
        if is_sep:
            tok += sz  # the separator itself belongs to no block
        else:
            cur = sz  # the item that did not fit opens the next block
    if cur > (1 if mode == "complete_doc" else 0):
        out.append((tok, tok + cur))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def block_to_item_index(sizes, slices: np.ndarray) -> np.ndarray:
    """``(num_blocks, 3)`` array ``[first_item, offset_in_first_item, last_item]`` for each block."""
    sizes = _as_sizes(sizes)
    slices = np.asarray(slices, dtype=np.int64).reshape(-1, 2)
    ends = np.cumsum(sizes, dtype=np.int64)
    starts = slices[:, 0]
    first = np.searchsorted(ends, starts, side="right")  # skips items that end exactly at `start`
    offset = starts - (ends[first] - sizes[first]) if len(first) else starts
    last_tok = np.maximum(slices[:, 1] - 1, starts)  # empty blocks map to their first item
    last = np.maximum(np.searchsorted(ends, last_tok, side="right"), first)
    return np.stack([first, offset, last], axis=1).astype(np.int64)


def shift_source(buffer: np.ndarray, s: int, e: int, eos: int) -> np.ndarray:
    """Input tokens for target ``buffer[s:e]``: ``[eos] + buffer[:e-1]`` if ``s == 0`` else ``buffer[s-1:e-1]``."""
    if s == 0:
        return np.concatenate([np.asarray([eos], dtype=buffer.dtype), buffer[: max(e - 1, 0)]])
    return buffer[s - 1 : e - 1]


class _ListDataset:
    """Adapter so that a plain list of id sequences can stand in for an indexed dataset."""

    def __init__(self, items: Sequence[Sequence[int]]):
        self.items = [np.asarray(x, dtype=np.int64).reshape(-1) for x in items]
        self.sizes = np.asarray([len(x) for x in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[i]


class TokenBlockDataset:
    """Blocks over an indexed dataset (anything with ``.sizes`` and ``[i] -> int64 array``) or a list of id lists.

    ``ds[i]`` is the block (``np.int64``), or ``(source, target)`` when ``include_targets`` (the LM case).
    ``ds.sizes`` are the block lengths; ``ds.slices`` the stream offsets.
    """

    def __init__(
        self,
        dataset: Any,
        block_size: int | None,
        break_mode: str = "none",
        *,
        include_targets: bool = True,
        eos: int = 2,
        pad: int = 1,
        document_sep_len: int = 1,
    ):
        if not hasattr(dataset, "sizes"):
            dataset = _ListDataset(dataset)
        self.dataset = dataset
        self.item_sizes = _as_sizes(dataset.sizes)
        if len(self.item_sizes) != len(dataset):
            raise ValueError(f"dataset has {len(dataset)} items but {len(self.item_sizes)} sizes")
        self.break_mode = "none" if break_mode is None else break_mode
        self.block_size = block_size
        self.include_targets = include_targets
        self.eos, self.pad = eos, pad
        self.slices = block_slices(self.item_sizes, block_size, self.break_mode, document_sep_len)
        self.sizes = (self.slices[:, 1] - self.slices[:, 0]).astype(np.int64)
        if self.break_mode == "eos":  # one block per item, also for empty items
            ids = np.arange(len(self.item_sizes), dtype=np.int64)
            self.index = np.stack([ids, np.zeros_like(ids), ids], axis=1)
        else:
            self.index = block_to_item_index(self.item_sizes, self.slices)

    def __len__(self) -> int:
        return len(self.slices)

    def _buffer(self, first: int, last: int) -> np.ndarray:
        parts = [np.asarray(self.dataset[j], dtype=np.int64).reshape(-1) for j in range(first, last + 1)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __getitem__(self, i: int):
        first, offset, last = (int(x) for x in self.index[i])
        length = int(self.sizes[i])
        buffer = self._buffer(first, last)
        s, e = offset, offset + length
        target = buffer[s:e]
        if not self.include_targets:
            return target
        return shift_source(buffer, s, e, self.eos), target
