"""Text lines -> fairseq MMapIndexedDataset, encoded with the Tokenizer in `workers` processes.

`binarize_lines(lines, tokenizer, out_prefix, workers)` is what `fairseq-preprocess` does per line
(Moses + fastBPE + dictionary, then `</s>` appended; an empty line becomes the single item `[2]`), written to
`out_prefix.{bin,idx}` atomically (the builder's index rename is the commit). Order is preserved.

`Encoder` is the reusable part: one process pool (created once, the Tokenizer handed to each worker) that encodes
chunks of texts in order, with at most `2 * workers` chunks in flight, so memory stays bounded however long the
input stream is. `workers <= 1` encodes in the calling process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def encode_texts(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ids of each text followed by </s>, flattened: (int32 ids, int32 sizes). Empty text -> [eos].
    (Tokenizer.encode_batch memoises BPE per word, so a long-lived worker gets faster as it goes.)"""
    eos = tokenizer.dictionary.eos()
    encoded = tokenizer.encode_batch(texts) if texts else []
    sizes = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int32, count=len(encoded))
    flat = np.empty(int(sizes.sum()), dtype=np.int32)
    pos = 0
    for ids in encoded:
        n = len(ids)
        flat[pos : pos + n] = ids
        flat[pos + n] = eos
        pos += n + 1
    return flat, sizes


def _encode_in_worker(texts: list[str]):
    return encode_texts(_WORKER_TOKENIZER, texts)


def _tokenize_in_worker(texts: list[str]) -> list[str]:
    return [_WORKER_TOKENIZER.tokenize(t) for t in texts]


def _start_method() -> str:
    # fork shares the loaded tokenizer without pickling and starts in milliseconds; spawn elsewhere.
    return "fork" if "fork" in mp.get_all_start_methods() and os.name == "posix" else "spawn"


class Encoder:
    """Ordered, bounded parallel map of a tokenizer over chunks of texts. Use as a context manager."""

    def __init__(self, tokenizer, workers: int = 1):
        self.tokenizer = tokenizer
        self.workers = max(1, int(workers))
        self.max_pending = 2 * self.workers
        self._pool = None
        if self.workers > 1:
            ctx = mp.get_context(_start_method())
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(tokenizer,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _map(self, fn_local: Callable, fn_worker: Callable, chunks: Iterable[list[str]]) -> Iterator:
        if self._pool is None:
            for chunk in chunks:
                yield fn_local(chunk)
            return
        pending: deque = deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(fn_worker, (chunk,)))
            if len(pending) >= self.max_pending:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def encode_chunks(self, chunks: Iterable[list[str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (flat ids, sizes) per chunk, in input order."""
        return self._map(lambda c: encode_texts(self.tokenizer, c), _encode_in_worker, chunks)

    def tokenize_chunks(self, chunks: Iterable[list[str]]) -> Iterator[list[str]]:
        """Yield the Moses-tokenized texts per chunk, in input order (for BPE learning)."""
        return self._map(lambda c: [self.tokenizer.tokenize(t) for t in c], _tokenize_in_worker, chunks)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_chunks(builder, encoded: Iterable[tuple[np.ndarray, np.ndarray]], unk: int,
                 on_chunk: Optional[Callable[[int], None]] = None) -> dict:
    """Add every item of every (flat ids, sizes) chunk to `builder`; return docs/tokens/unk counts."""
    docs = tokens = unks = 0
    for flat, sizes in encoded:
        ends = np.cumsum(sizes)
        starts = ends - sizes
        for s, e in zip(starts.tolist(), ends.tolist()):
            builder.add_item(flat[s:e])
        docs += len(sizes)
        tokens += int(sizes.sum())
        unks += int(np.count_nonzero(flat == unk))
        if on_chunk:
            on_chunk(len(sizes))
    return {"docs": docs, "tokens": tokens, "unk_tokens": unks}


def binarize_lines(lines: Iterable[str], tokenizer, out_prefix, workers: int = 1, *, chunk_size: int = 64,
                   encoder: Optional[Encoder] = None, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Encode every line (+ </s>) into `out_prefix.bin/.idx` (dtype from the vocabulary size, as fairseq).

    Returns {"docs", "tokens" (eos included), "unk_tokens", "seconds", "prefix"}. Pass an existing `encoder` to
    reuse its pool across calls. Nothing appears under `out_prefix` unless the whole stream was written.
    """
    from biogpt_train.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_int_dtype

    out_prefix = Path(out_prefix)
    t0 = time.perf_counter()
    own = encoder is None
    enc = Encoder(tokenizer, workers) if own else encoder
    try:
        dtype = best_fitting_int_dtype(len(tokenizer.dictionary))
        with MMapIndexedDatasetBuilder(f"{out_prefix}.bin", dtype=dtype) as builder:
            stats = write_chunks(builder, enc.encode_chunks(chunked(lines, chunk_size)),
                                 tokenizer.dictionary.unk(), progress)
            builder.finalize(f"{out_prefix}.idx")
    finally:
        if own:
            enc.close()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["prefix"] = str(out_prefix)
    return stats
