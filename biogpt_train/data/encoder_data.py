"""Data of the encoder tasks, shaped for the trainer's batching (`make_batches`: `.sizes`, `.ordered_indices`,
`.collater`) and its dictionary interface.

A prepared encoder directory (``task.data``) holds ``vocab.txt`` (the WordPiece vocabulary the ids refer to) and

- QA (``task.name=squad|bioasq``): ``{split}.json`` in SQuAD v1.1/v2.0 format. Features (``[CLS] question [SEP]
  window [SEP]``, data/squad.py) are made when the split is loaded: tokenizing BioASQ takes about a second and
  SQuAD about a minute, and the JSON stays the single prepared artifact (no feature cache to go stale when
  max_seq_length / doc_stride change). One feature = one batch row; ``ntokens`` = rows (the QA loss is a mean
  over examples).
- ELECTRA pretraining (``task.name=electra_pretraining``): ``{split}.{bin,idx}`` whose items are finished
  ``[CLS] A [SEP] B [SEP]`` blocks (data_prep/encoder_corpus.py builds them from sentences); token types are 0
  up to the first [SEP] and 1 after it. ``ntokens`` = non-pad tokens (the discriminator loss is a mean over them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from biogpt_train.data.batching import ordered_indices
from biogpt_train.data.vocab import WordPieceVocab

QA_TASKS = ("squad", "bioasq")
ENCODER_TASKS = QA_TASKS + ("electra_pretraining",)


def is_encoder_task(cfg) -> bool:
    return str(cfg.task.get("name", "")) in ENCODER_TASKS


def vocab_path(cfg) -> Path:
    path = Path(str(cfg.task.data).split(":")[0]) / "vocab.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: prepare the encoder data first (`python -m data_prep "
                                f"dataset=... tokenizer=wordpiece vocab=VOCAB.txt`), or point task.data at it")
    return path


# --------------------------------------------------------------------------------------------------- QA


class QADataset:
    """Windowed SQuAD features of one split; item i is feature i."""

    def __init__(self, examples, features, pad_id: int, shuffle: bool):
        self.examples, self.features, self.pad_id, self.shuffle = examples, features, pad_id, shuffle
        self.sizes = np.array([len(f.input_ids) for f in features], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return {"id": int(i), "feature": self.features[i]}

    def num_tokens(self, i: int) -> int:
        return int(self.sizes[i])

    def ordered_indices(self, seed) -> np.ndarray:
        return ordered_indices(self.sizes, seed, shuffle=self.shuffle, tie_break="stable")

    def collater(self, samples: list[dict]) -> dict:
        from biogpt_train.data.squad import collate

        if not samples:
            return {}
        batch = collate([s["feature"] for s in samples], self.pad_id)
        n = len(samples)
        return {"id": torch.tensor([s["id"] for s in samples]), "ntokens": n, "nsentences": n, **batch}


def qa_tokenizer(cfg):
    from biogpt_train.data.wordpiece import WordPieceTokenizer

    return WordPieceTokenizer(vocab_path(cfg), lowercase=bool(cfg.task.do_lower_case))


def qa_examples(cfg, split: str):
    from biogpt_train.data.squad import read_squad

    path = Path(str(cfg.task.data).split(":")[0]) / f"{split}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found ({cfg.task.name} task, split {split!r}): prepare it with "
                                f"`python -m data_prep dataset={cfg.task.name} ...` or copy a SQuAD-format file there")
    return read_squad(path)


def qa_features(cfg, examples, tokenizer, training: bool):
    from biogpt_train.data.squad import make_features

    t = cfg.task
    return make_features(examples, tokenizer, max_seq_length=int(t.max_seq_length), doc_stride=int(t.doc_stride),
                         max_query_length=int(t.max_query_length), training=training)


def load_qa_split(cfg, vocab: WordPieceVocab, split: str) -> QADataset:
    examples = qa_examples(cfg, split)
    train = split == cfg.task.train_subset
    # answer positions: always for training, and for other splits when they are labelled (a validation loss)
    labelled = train or all(ex.answers or ex.is_impossible for ex in examples)
    features = qa_features(cfg, examples, qa_tokenizer(cfg), training=labelled)
    return QADataset(examples, features, vocab.pad(), shuffle=train)


# --------------------------------------------------------------------------------------------------- pretraining


class BlockDataset:
    """Prepared ``[CLS] A [SEP] B [SEP]`` blocks (an MMapIndexedDataset), batched with padding."""

    def __init__(self, blocks, *, pad_id: int, sep_id: int, shuffle: bool):
        self.blocks, self.pad_id, self.sep_id, self.shuffle = blocks, pad_id, sep_id, shuffle
        self.sizes = np.asarray(blocks.sizes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"id": int(i), "ids": self.blocks[i]}

    def num_tokens(self, i: int) -> int:
        return int(self.sizes[i])

    def ordered_indices(self, seed) -> np.ndarray:
        return ordered_indices(self.sizes, seed, shuffle=self.shuffle, tie_break="lexsort")

    def collater(self, samples: list[dict]) -> dict:
        if not samples:
            return {}
        return collate_blocks([s["ids"] for s in samples], self.pad_id, self.sep_id,
                              ids=[s["id"] for s in samples])


def collate_blocks(blocks, pad_id: int, sep_id: int, ids=None) -> dict:
    """input_ids / attention_mask / token_type_ids (1 after the first [SEP]) of right-padded blocks."""
    width = max(len(b) for b in blocks)
    input_ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(blocks), width), dtype=torch.long)
    types = torch.zeros((len(blocks), width), dtype=torch.long)
    for row, b in enumerate(blocks):
        b = np.asarray(b, dtype=np.int64)
        n = len(b)
        input_ids[row, :n] = torch.from_numpy(b)
        mask[row, :n] = 1
        seps = np.flatnonzero(b == sep_id)
        if len(seps) and seps[0] + 1 < n:
            types[row, seps[0] + 1:n] = 1
    out = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types,
           "ntokens": int(mask.sum()), "nsentences": len(blocks)}
    if ids is not None:
        out["id"] = torch.tensor(ids)
    return out


def load_block_split(cfg, vocab: WordPieceVocab, split: str, epoch: int = 1) -> BlockDataset:
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset, dataset_exists

    dirs = [Path(p) for p in str(cfg.task.data).split(":") if p]
    root = dirs[(epoch - 1) % len(dirs)] if split == cfg.task.train_subset else dirs[0]
    prefix = root / split
    if not dataset_exists(prefix):
        raise FileNotFoundError(f"{prefix}.idx/.bin not found (electra_pretraining task, split {split!r}): "
                                "prepare it with `python -m data_prep dataset=pubmed tokenizer=wordpiece ...`")
    return BlockDataset(MMapIndexedDataset(prefix), pad_id=vocab.pad(), sep_id=vocab.eos(),
                        shuffle=split == cfg.task.train_subset)


def load_encoder_split(cfg, vocab: WordPieceVocab, split: str, epoch: int = 1):
    if str(cfg.task.name) in QA_TASKS:
        return load_qa_split(cfg, vocab, split)
    return load_block_split(cfg, vocab, split, epoch)


__all__ = ["ENCODER_TASKS", "QA_TASKS", "is_encoder_task", "QADataset", "BlockDataset",
           "collate_blocks", "load_encoder_split", "load_qa_split", "load_block_split", "qa_examples",
           "qa_features", "qa_tokenizer", "vocab_path"]
