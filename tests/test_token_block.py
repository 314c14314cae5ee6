"""Token blocks (fairseq break modes, cases ported from fairseq's tests/test_token_block_dataset.py) and LM collate."""

import numpy as np
import pytest
import torch

from biogpt_train.data.lm_dataset import LMDataset, collate_lm
from biogpt_train.data.token_block import TokenBlockDataset, block_slices, block_to_item_index


def blocks(data, **kw):
    ds = TokenBlockDataset(data, include_targets=False, **kw)
    return [ds[i].tolist() for i in range(len(ds))]


# --- fairseq's own tiny cases (eos=1, pad=0) ------------------------------------------------------------------


def test_eos_break_mode_fairseq_cases():
    assert blocks([[5, 4, 3, 2, 1], [1], [8, 7, 6, 1]], block_size=None, break_mode="eos", eos=1, pad=0) == [
        [5, 4, 3, 2, 1], [1], [8, 7, 6, 1]]
    assert blocks([[5, 4, 3, 2, 1], [8, 7, 6, 1], [1]], block_size=None, break_mode="eos", eos=1, pad=0) == [
        [5, 4, 3, 2, 1], [8, 7, 6, 1], [1]]


def test_none_break_mode_fairseq_case():
    data = [[5, 4, 3, 2, 1], [8, 7, 6, 1], [9, 1]]
    assert blocks(data, block_size=3, break_mode="none", eos=1, pad=0) == [[5, 4, 3], [2, 1, 8], [7, 6, 1], [9, 1]]


def test_complete_break_mode_fairseq_cases():
    data = [[5, 4, 3, 2, 1], [8, 7, 6, 1], [9, 1]]
    assert blocks(data, block_size=6, break_mode="complete", eos=1, pad=0) == [[5, 4, 3, 2, 1], [8, 7, 6, 1, 9, 1]]
    data = [[4, 3, 2, 1], [5, 1], [1], [6, 1]]
    # the over-long first sentence becomes a block of its own
    assert blocks(data, block_size=3, break_mode="complete", eos=1, pad=0) == [[4, 3, 2, 1], [5, 1, 1], [6, 1]]


def test_large_offsets_stay_integer():
    # fairseq's 4-billion-token regression: offsets beyond uint32 stay exact int64
    sl = block_slices([2**31, 2**31, 5], 6, "complete")
    assert sl.dtype == np.int64 and sl.tolist() == [[0, 2**31], [2**31, 2**32], [2**32, 2**32 + 5]]


# --- complete_doc and the defaults of our data (eos = 2, an empty line = [2]) ----------------------------------


def test_complete_doc_packs_within_documents_and_skips_separators():
    data = [[5, 6, 2], [7, 2], [2], [8, 9, 10, 2], [2], [11, 2]]
    assert blocks(data, block_size=5, break_mode="complete_doc") == [[5, 6, 2, 7, 2], [8, 9, 10, 2], [11, 2]]
    assert blocks(data, block_size=4, break_mode="complete_doc") == [[5, 6, 2], [7, 2], [8, 9, 10, 2], [11, 2]]
    # plain complete mode crosses the document boundary and keeps the separators
    assert blocks(data, block_size=5, break_mode="complete") == [[5, 6, 2, 7, 2], [2, 8, 9, 10, 2], [2, 11, 2]]


def test_complete_doc_drops_blocks_of_one_token():
    # with a 2-token separator, the lone 1-token item closes into a block of size 1, which fairseq drops
    data = [[7], [2, 2], [5, 6, 2]]
    assert blocks(data, block_size=4, break_mode="complete_doc", document_sep_len=2) == [[5, 6, 2]]


def test_none_mode_block_count_and_last_block():
    sl = block_slices([3, 4, 4], 4, "none")
    assert sl.tolist() == [[0, 4], [4, 8], [8, 11]]
    assert block_slices([], 4, "none").shape == (0, 2)


def test_block_to_item_index():
    sizes = [5, 4, 2]
    sl = block_slices(sizes, 3, "none")
    assert block_to_item_index(sizes, sl).tolist() == [[0, 0, 0], [0, 3, 1], [1, 1, 1], [2, 0, 2]]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="break_mode"):
        block_slices([1, 2], 4, "sentence")
    with pytest.raises(ValueError, match="block_size"):
        block_slices([1, 2], None, "none")


# --- (source, target) shift --------------------------------------------------------------------------------------


def pairs(data, **kw):
    ds = TokenBlockDataset(data, include_targets=True, **kw)
    return [(s.tolist(), t.tolist()) for s, t in (ds[i] for i in range(len(ds)))]


def test_shift_none_mode_uses_previous_stream_token():
    data = [[5, 4, 3, 2, 1], [8, 7, 6, 1], [9, 1]]
    assert pairs(data, block_size=3, break_mode="none", eos=1, pad=0) == [
        ([1, 5, 4], [5, 4, 3]),   # first block starts with eos
        ([3, 2, 1], [2, 1, 8]),   # previous token of the stream
        ([8, 7, 6], [7, 6, 1]),
        ([1, 9], [9, 1]),         # block at an item start: eos (= the previous stream token here)
    ]


def test_shift_at_item_start_is_eos_even_if_item_lacks_eos():
    # fairseq's rule is "offset 0 within the first item -> eos", not "previous stream token"
    assert pairs([[5, 4, 3], [8, 7]], block_size=3, break_mode="none", eos=1, pad=0) == [
        ([1, 5, 4], [5, 4, 3]), ([1, 8], [8, 7])]


def test_shift_complete_doc():
    data = [[5, 6, 2], [7, 2], [2], [8, 9, 10, 2]]
    assert pairs(data, block_size=5, break_mode="complete_doc") == [
        ([2, 5, 6, 2, 7], [5, 6, 2, 7, 2]), ([2, 8, 9, 10], [8, 9, 10, 2])]


class FakeIndexed:
    """Minimal MMapIndexedDataset stand-in: .sizes (int32) and [i] -> int64 array; counts reads."""

    def __init__(self, items):
        self.items = [np.asarray(x, dtype=np.int64) for x in items]
        self.sizes = np.asarray([len(x) for x in items], dtype=np.int32)
        self.reads = []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.items[i]


def test_indexed_dataset_input_reads_only_needed_items():
    fake = FakeIndexed([[5, 4, 3, 2, 1], [8, 7, 6, 1], [9, 1]])
    ds = TokenBlockDataset(fake, 3, "none", eos=1, pad=0)
    assert ds.sizes.tolist() == [3, 3, 3, 2]
    src, tgt = ds[1]
    assert (src.tolist(), tgt.tolist()) == ([3, 2, 1], [2, 1, 8])
    assert fake.reads == [0, 1]
    assert src.dtype == np.int64


# --- LM samples and collate -----------------------------------------------------------------------------------


def test_lm_collate_right_pads_and_counts_target_tokens():
    ds = LMDataset(TokenBlockDataset([[5, 4, 3, 2], [8, 2]], 4, "complete"))
    assert ds.sizes.tolist() == [4, 2]
    batch = ds.collater([ds[0], ds[1]])
    assert batch["net_input"]["src_tokens"].tolist() == [[2, 5, 4, 3], [2, 8, 1, 1]]
    assert batch["target"].tolist() == [[5, 4, 3, 2], [8, 2, 1, 1]]
    assert batch["ntokens"] == 6 and batch["nsentences"] == 2
    assert batch["id"].tolist() == [0, 1]
    assert batch["target"].dtype == torch.long
    assert collate_lm([]) == {}  # dummy batch


def test_lm_dataset_needs_targets():
    with pytest.raises(ValueError, match="include_targets"):
        LMDataset(TokenBlockDataset([[1, 2]], 2, include_targets=False))
