"""Epoch batch iterator: per-epoch shuffle, sharding with dummy batches, update_freq groups, exact resume."""

import numpy as np
import pytest

from biogpt_train.data.iterators import (
    EpochBatchIterator,
    group,
    shard,
    shuffle_batches,
    update_freq_for_epoch,
)

BATCHES = [[i, i + 100] for i in range(11)]  # 11 frozen batches of dataset indices


def lists(itr):
    return [b.tolist() if isinstance(b, np.ndarray) else b for b in itr]


def test_shard_pads_like_fairseq():
    x = list(range(10))
    assert shard(x, 1, 0) == x
    assert shard(x, 2, 1) == [1, 3, 5, 7, 9]
    assert shard(x, 3, 0) == [0, 3, 6, 9]
    assert shard(x, 3, 1) == [1, 4, 7, None]
    assert shard(x, 3, 2, fill_value=[]) == [2, 5, 8, []]
    with pytest.raises(ValueError):
        shard(x, 2, 2)


def test_group_like_fairseq():
    itr = EpochBatchIterator([[i] for i in range(10)], seed=1).next_epoch_itr(shuffle=False)
    assert [[b.tolist() for b in g] for g in group(itr, 4)] == [[[0], [1], [2], [3]], [[4], [5], [6], [7]], [[8], [9]]]
    itr = EpochBatchIterator([[i] for i in range(10)], seed=1).next_epoch_itr(shuffle=False)
    g = group(itr, 4, skip_remainder_batch=True)
    assert len(g) == 2 and len(list(g)) == 2


def test_epoch_shuffle_is_numpy_seed_plus_epoch():
    epoch_itr = EpochBatchIterator(BATCHES, seed=5)
    for epoch in (1, 2, 3):
        got = lists(epoch_itr.next_epoch_itr())
        expected = [np.asarray(b) for b in BATCHES]
        np.random.seed(5 + epoch)  # fairseq: with numpy_seed(seed + epoch): np.random.shuffle(batches)
        np.random.shuffle(expected)
        assert got == [b.tolist() for b in expected]
        assert epoch_itr.epoch == epoch
    assert shuffle_batches(BATCHES, 6) == [b.tolist() for b in map(np.asarray, shuffle_batches(BATCHES, 6))]
    assert lists(EpochBatchIterator(BATCHES).next_epoch_itr(shuffle=False)) == BATCHES


def test_ranks_cover_all_batches_with_dummy_padding():
    world = 3
    per_rank = [lists(EpochBatchIterator(BATCHES, seed=1, num_shards=world, shard_id=r).next_epoch_itr())
                for r in range(world)]
    assert [len(x) for x in per_rank] == [4, 4, 4]  # ceil(11 / 3)
    assert per_rank[2][-1] == []  # dummy batch
    real = sorted(tuple(b) for rank in per_rank for b in rank if b)
    assert real == sorted(tuple(b) for b in BATCHES)
    # interleaving: rank r gets shuffled[r::world]
    shuffled = [b.tolist() for b in map(np.asarray, shuffle_batches(BATCHES, 1 + 1))]
    assert per_rank[1] == shuffled[1::world]


def test_collate_and_dummy_batch():
    data = [{"x": i} for i in range(200)]

    def collate(samples):
        return {"xs": [s["x"] for s in samples]} if samples else {}

    itr = EpochBatchIterator(BATCHES[:3], dataset=data, collate_fn=collate, num_shards=2, shard_id=1)
    out = list(itr.next_epoch_itr(shuffle=False))
    assert out == [{"xs": [1, 101]}, {}]


def _run(epoch_itr, n_epochs, update_freq, stop_after=None):
    """Consume grouped batches; return the flat list of batches and, if stopped, the state dict."""
    seen = []
    groups = 0
    while epoch_itr.next_epoch_idx <= n_epochs:
        itr = group(epoch_itr.next_epoch_itr(), update_freq)
        for g in itr:
            seen.extend(tuple(b.tolist()) for b in g)
            groups += 1
            if stop_after is not None and groups == stop_after:
                return seen, epoch_itr.state_dict()
    return seen, None


@pytest.mark.parametrize("update_freq", [1, 4])  # 6 batches per epoch on this shard
@pytest.mark.parametrize("stop_after", [1, 2, 3, 5])
def test_resume_reproduces_uninterrupted_run(update_freq, stop_after):
    full, _ = _run(EpochBatchIterator(BATCHES, seed=3, num_shards=2, shard_id=1), 3, update_freq)
    first, state = _run(EpochBatchIterator(BATCHES, seed=3, num_shards=2, shard_id=1), 3, update_freq, stop_after)
    assert state is not None
    resumed_itr = EpochBatchIterator(BATCHES, seed=3, num_shards=2, shard_id=1)
    resumed_itr.load_state_dict(state)
    rest, _ = _run(resumed_itr, 3, update_freq)
    assert first + rest == full


def test_state_dict_at_end_of_epoch_points_to_next_epoch():
    epoch_itr = EpochBatchIterator(BATCHES, seed=1)
    assert epoch_itr.state_dict()["iterations_in_epoch"] == 0
    itr = epoch_itr.next_epoch_itr()
    next(itr), next(itr)
    assert epoch_itr.state_dict() == {"version": 2, "epoch": 1, "iterations_in_epoch": 2, "shuffle": True}
    list(itr)
    assert epoch_itr.end_of_epoch()
    assert epoch_itr.state_dict() == {"version": 2, "epoch": 2, "iterations_in_epoch": 0, "shuffle": True}
    assert epoch_itr.next_epoch_idx == 2


def test_load_state_with_impossible_offset_raises():
    epoch_itr = EpochBatchIterator(BATCHES, seed=1, num_shards=4)
    with pytest.raises(RuntimeError, match="cannot resume"):
        epoch_itr.load_state_dict({"epoch": 1, "iterations_in_epoch": 3})


def test_update_freq_for_epoch():
    assert update_freq_for_epoch(4, 9) == 4
    assert update_freq_for_epoch([1, 2, 8], 1) == 1
    assert update_freq_for_epoch([1, 2, 8], 3) == 8
    assert update_freq_for_epoch([1, 2, 8], 10) == 8
