"""Language-modelling samples over token blocks, and their collate (fairseq ``MonolingualDataset``, targets=future).

A sample is ``{"id", "source", "target"}`` where ``source`` is ``target`` shifted right by one (see
``token_block.py``). Batches are right-padded with ``pad`` (1); the loss ignores pad targets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from biogpt_train.data.batching import ordered_indices
from biogpt_train.data.token_block import TokenBlockDataset


def pad_right(seqs: Sequence, pad: int) -> torch.Tensor:
    """``[B, max_len]`` int64 tensor of the sequences, right-padded with ``pad``."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for row, s in enumerate(seqs):
        if len(s):
            out[row, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return out


def collate_lm(samples: list[dict], pad: int = 1) -> dict:
    """Batch of LM samples. ``{}`` for an empty list (a dummy batch of an uneven shard, as fairseq).

    ``ntokens`` = number of non-pad target tokens (= sum of target lengths, fairseq's ``sum(len(source))``).
    """
    if not samples:
        return {}
    src = pad_right([s["source"] for s in samples], pad)
    tgt = pad_right([s["target"] for s in samples], pad)
    lengths = torch.tensor([len(s["target"]) for s in samples], dtype=torch.long)
    return {
        "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
        "nsentences": len(samples),
        "ntokens": int(lengths.sum()),
        "net_input": {"src_tokens": src, "src_lengths": lengths},
        "target": tgt,
    }


class LMDataset:
    """LM samples from a :class:`TokenBlockDataset` built with ``include_targets=True``.

    ``sizes`` (block lengths) drive batching; ``ordered_indices(seed)`` is fairseq's
    ``np.lexsort([permutation, sizes])`` under ``numpy_seed(seed)``.
    """

    def __init__(self, blocks: TokenBlockDataset, *, pad: int = 1, shuffle: bool = True):
        if not blocks.include_targets:
            raise ValueError("LMDataset needs a TokenBlockDataset built with include_targets=True")
        self.blocks = blocks
        self.pad = pad
        self.shuffle = shuffle
        self.sizes = blocks.sizes

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        source, target = self.blocks[i]
        return {"id": int(i), "source": source, "target": target}

    def num_tokens(self, i: int) -> int:
        return int(self.sizes[i])

    def ordered_indices(self, seed: int | None) -> np.ndarray:
        return ordered_indices(self.sizes, seed, shuffle=self.shuffle, tie_break="lexsort")

    def collater(self, samples: list[dict]) -> dict:
        return collate_lm(samples, self.pad)
