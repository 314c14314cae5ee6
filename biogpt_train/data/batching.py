"""Index ordering, size filtering and ``--max-tokens`` batching with fairseq v0.12 semantics (framework-notes §2.8).

Pipeline (fairseq ``task.get_batch_iterator``): ``ordered_indices`` -> ``filter_by_size`` -> ``batch_by_size``.
The resulting batches are frozen; per-epoch shuffling and sharding live in ``iterators.py``.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

TIE_BREAKS = ("lexsort", "stable")


def ordered_indices(sizes, seed: int | None, shuffle: bool = True, tie_break: str = "lexsort") -> np.ndarray:
    """Dataset indices sorted by size, ties broken by a permutation drawn from ``RandomState(seed)``.

    ``tie_break="lexsort"``: fairseq ``MonolingualDataset``/LM: ``np.lexsort([perm, sizes])`` (ties ordered by
    ``perm[i]``). ``tie_break="stable"``: BioGPT ``LanguageModelPromptDataset``: ``perm[argsort(sizes[perm],
    mergesort)]`` (ties in permutation order). Both equal fairseq's draw under ``data_utils.numpy_seed(seed)``;
    ``seed=None`` draws from numpy's global state, as ``numpy_seed(None)`` does. ``shuffle=False``: ties by index.
    """
    sizes = np.asarray(sizes).reshape(-1)
    n = len(sizes)
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    if not shuffle:
        return np.argsort(sizes, kind="mergesort").astype(np.int64)
    perm = (np.random.permutation(n) if seed is None else np.random.RandomState(seed).permutation(n)).astype(np.int64)
    if tie_break == "lexsort":
        return np.lexsort([perm, sizes]).astype(np.int64)
    return perm[np.argsort(sizes[perm], kind="mergesort")]


def filter_by_size(
    indices, sizes, max_positions: int | None, *, split: str = "train", skip_invalid: bool = False
) -> np.ndarray:
    """Drop indices whose size exceeds ``max_positions`` (order kept).

    Training always drops with a warning (fairseq sets ``ignore_invalid_inputs=True``); other splits raise
    unless ``skip_invalid`` (``--skip-invalid-size-inputs-valid-test``).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if max_positions is None:
        return indices
    sizes = np.asarray(sizes).reshape(-1)
    bad = sizes[indices] > max_positions
    if not bad.any():
        return indices
    ignored = indices[bad]
    if split != "train" and not skip_invalid:
        first = int(ignored[0])
        raise ValueError(
            f"{split}: sample #{first} has size {int(sizes[first])} > max_positions={max_positions} "
            f"({len(ignored)} such samples); set skip_invalid (--skip-invalid-size-inputs-valid-test) to drop them"
        )
    logger.warning(
        "%s: %d samples have invalid sizes and will be skipped, max_positions=%s, first few sample ids=%s",
        split, len(ignored), max_positions, ignored[:10].tolist(),
    )
    return indices[~bad]


def batch_by_size(
    indices,
    sizes,
    max_tokens: int | None = None,
    max_sentences: int | None = None,
    required_batch_size_multiple: int = 8,
) -> list[np.ndarray]:
    """Greedy batches of ``indices`` (in the given order), fairseq v0.12 ``batch_by_size_vec`` semantics.

    ``sizes[i]`` is the token count of dataset index ``i``. A batch's cost is its padded size
    ``n * max(sizes in batch)``, which must stay ``<= max_tokens``; ``n <= max_sentences``. When adding the next
    item would overflow, the batch is closed: if it holds more than ``required_batch_size_multiple`` (m) items it
    is cut down to a multiple of m and the remainder is carried into the next batch. The last batch is cut the
    same way (its remainder becomes a final, smaller batch; v0.12 keeps it). ``None``/<=0 limits mean no limit.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) == 0:
        return []
    ntok = np.asarray(sizes, dtype=np.int64).reshape(-1)[indices]
    max_tokens = int(max_tokens) if max_tokens is not None and max_tokens > 0 else 0
    max_sentences = int(max_sentences) if max_sentences is not None and max_sentences > 0 else 0
    mult = int(required_batch_size_multiple)
    if mult < 1:
        raise ValueError(f"required_batch_size_multiple must be >= 1, got {mult}")
    if max_tokens and ntok.max() > max_tokens:
        pos = int(ntok.argmax())
        raise ValueError(
            f"sample #{int(indices[pos])} has {int(ntok[pos])} tokens > max_tokens={max_tokens}; "
            "filter it by size first or raise max_tokens"
        )

    ntok_list = ntok.tolist()
    n = len(ntok_list)
    batches: list[np.ndarray] = []
    start = 0
    while start < n:
        # extend [start, end) while the padded cost and sentence count stay within limits
        end, longest = start, 0
        while end < n:
            cand = max(longest, ntok_list[end])
            count = end - start + 1
            if (max_tokens and cand * count > max_tokens) or (max_sentences and count > max_sentences):
                break
            longest, end = cand, end + 1
        count = end - start
        if count > mult:
            count -= count % mult  # close at the last multiple of m; the tail starts the next batch
        batches.append(indices[start : start + count])
        start += count
    return batches


def make_batches(
    dataset,
    *,
    seed: int | None,
    max_tokens: int | None,
    max_sentences: int | None = None,
    required_batch_size_multiple: int = 8,
    max_positions: int | None = None,
    split: str = "train",
    skip_invalid: bool = False,
) -> list[np.ndarray]:
    """fairseq ``get_batch_iterator``'s batch list for a dataset with ``.sizes`` and ``.ordered_indices(seed)``."""
    indices = dataset.ordered_indices(seed)
    indices = filter_by_size(indices, dataset.sizes, max_positions, split=split, skip_invalid=skip_invalid)
    return batch_by_size(indices, dataset.sizes, max_tokens, max_sentences, required_batch_size_multiple)
