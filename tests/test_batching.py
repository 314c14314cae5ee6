"""ordered_indices / filter_by_size / batch_by_size with fairseq v0.12 semantics."""

import logging

import numpy as np
import pytest

from biogpt_train.data.batching import batch_by_size, filter_by_size, make_batches, ordered_indices


def as_lists(batches):
    return [b.tolist() for b in batches]


# --- batch_by_size: hand-made cases ---------------------------------------------------------------------------


def test_remainder_of_multiple_becomes_its_own_batch():
    assert as_lists(batch_by_size(np.arange(10), [1] * 10, max_tokens=1000)) == [list(range(8)), [8, 9]]


def test_multiple_of_8_carry():
    # 10 items of 10 tokens fit in 100; the batch is closed at 8 and the 2 extra items start the next batch
    got = as_lists(batch_by_size(np.arange(20), [10] * 20, max_tokens=100, required_batch_size_multiple=8))
    assert got == [list(range(0, 8)), list(range(8, 16)), list(range(16, 20))]
    got = as_lists(batch_by_size(np.arange(20), [10] * 20, max_tokens=100, required_batch_size_multiple=1))
    assert got == [list(range(0, 10)), list(range(10, 20))]


def test_batches_below_the_multiple_are_not_cut():
    # only 5 fit (5 * 10 = 50): fewer than 8, so the batch stays at 5
    got = as_lists(batch_by_size(np.arange(12), [10] * 12, max_tokens=50, required_batch_size_multiple=8))
    assert got == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]


def test_cost_is_padded_size():
    # [2,3] costs 2*3=6; adding 5 would cost 3*5=15 > 10; [5,5] costs 10; adding 6 costs 18
    got = as_lists(batch_by_size(np.arange(5), [2, 3, 5, 5, 6], max_tokens=10, required_batch_size_multiple=1))
    assert got == [[0, 1], [2, 3], [4]]


def test_max_sentences():
    got = as_lists(batch_by_size(np.arange(10), [1] * 10, max_sentences=3, required_batch_size_multiple=1))
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    got = as_lists(batch_by_size(np.arange(12), [1] * 12, max_sentences=10, required_batch_size_multiple=8))
    assert got == [list(range(8)), [8, 9, 10, 11]]


def test_follows_given_index_order_and_sizes_by_dataset_index():
    sizes = [4, 1, 1, 4]  # indexed by dataset index
    got = as_lists(batch_by_size([1, 2, 0, 3], sizes, max_tokens=4, required_batch_size_multiple=1))
    assert got == [[1, 2], [0], [3]]


def test_item_longer_than_max_tokens_raises():
    with pytest.raises(ValueError, match="#2 has 11 tokens"):
        batch_by_size([0, 1, 2], [3, 4, 11], max_tokens=10)


def test_empty():
    assert batch_by_size([], [], max_tokens=10) == []


def _reference_vec(ntok, max_tokens, max_sentences, mult):
    """Independent streaming formulation (running batch + tail since the last multiple-of-m boundary)."""
    batches, batch, tail = [], [], []
    for pos, n in enumerate(ntok):
        cand = batch + tail + [pos]
        longest = max(ntok[i] for i in cand)
        over = (max_tokens > 0 and longest * len(cand) > max_tokens) or (0 < max_sentences < len(cand))
        if over:
            if batch:
                batches.append(batch)
            # the carried tail plus this item start the new running batch, unless the tail itself overflows
            new = tail + [pos]
            if max_tokens > 0 and max(ntok[i] for i in new) * len(new) > max_tokens:
                batches.append(tail)
                new = [pos]
            batch, tail = new, []
        elif len(cand) < mult or len(cand) % mult == 0:
            batch, tail = cand, []
        else:
            tail = tail + [pos]
    if batch:
        batches.append(batch)
    if tail:
        batches.append(tail)
    return batches


def test_matches_streaming_reference_on_random_grid():
    rng = np.random.RandomState(0)
    for _ in range(600):
        n = int(rng.randint(0, 14))
        max_tokens = int(rng.randint(0, 12))
        max_sentences = int(rng.randint(0, 7))
        mult = int(rng.randint(1, 6))
        ntok = rng.randint(1, max(max_tokens, 1) + 1, size=n).tolist()
        want = _reference_vec(ntok, max_tokens, max_sentences, mult)
        got = as_lists(batch_by_size(np.arange(n), ntok, max_tokens or None, max_sentences or None, mult))
        assert got == want, (ntok, max_tokens, max_sentences, mult)


# --- ordered_indices ------------------------------------------------------------------------------------------


def test_ordered_indices_sorts_by_size_with_seeded_random_ties():
    sizes = np.array([3, 1, 3, 1, 2, 3])
    a = ordered_indices(sizes, seed=1)
    assert sizes[a].tolist() == [1, 1, 2, 3, 3, 3]
    assert a.tolist() == ordered_indices(sizes, seed=1).tolist()
    # fairseq: `with numpy_seed(seed): np.lexsort([np.random.permutation(n), sizes])`
    np.random.seed(7)
    want = np.lexsort([np.random.permutation(len(sizes)), sizes])
    assert ordered_indices(sizes, seed=7).tolist() == want.tolist()
    assert ordered_indices(sizes, seed=0, shuffle=False).tolist() == [1, 3, 4, 0, 2, 5]


def test_ordered_indices_stable_tie_break_is_biogpts():
    sizes = np.array([2, 2, 2, 2, 1, 1, 1, 1])
    np.random.seed(3)
    perm = np.random.permutation(len(sizes))
    want = perm[np.argsort(sizes[perm], kind="mergesort")]
    assert ordered_indices(sizes, seed=3, tie_break="stable").tolist() == want.tolist()
    differs = any(
        ordered_indices(sizes, s, tie_break="stable").tolist() != ordered_indices(sizes, s).tolist() for s in range(5)
    )
    assert differs  # the two fairseq-family conventions are different orders


# --- filter_by_size --------------------------------------------------------------------------------------------


def test_filter_train_drops_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        kept = filter_by_size([4, 0, 1, 2, 3], [5, 1, 9, 2, 7], 6, split="train")
    assert kept.tolist() == [0, 1, 3]
    assert "2 samples have invalid sizes" in caplog.text


def test_filter_valid_raises_unless_skip_invalid():
    with pytest.raises(ValueError, match="sample #2 has size 9"):
        filter_by_size([0, 1, 2], [1, 2, 9], 6, split="valid")
    assert filter_by_size([0, 1, 2], [1, 2, 9], 6, split="valid", skip_invalid=True).tolist() == [0, 1]
    assert filter_by_size([0, 1, 2], [1, 2, 9], None, split="valid").tolist() == [0, 1, 2]


def test_make_batches_pipeline():
    class DS:
        sizes = np.array([4, 1, 9, 2, 3])

        def ordered_indices(self, seed):
            return ordered_indices(self.sizes, seed)

    got = as_lists(make_batches(DS(), seed=1, max_tokens=6, max_positions=8, required_batch_size_multiple=1))
    assert got == [[1, 3], [4], [0]]
