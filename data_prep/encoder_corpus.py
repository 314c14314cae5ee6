"""ELECTRA pretraining data from the PubMed pipeline: `python -m data_prep dataset=pubmed raw_dir=... out_dir=...
tokenizer=wordpiece vocab=VOCAB.txt` (or `wordpiece.train=true wordpiece.vocab_size=N` to learn one first).

The streaming, resumable unit/merge machinery of data_prep/pubmed.py is reused unchanged; two things differ:

1. Units (one per input file) hold each document as its WordPiece ids with every *sentence* terminated by [SEP]:
   ``s1 [SEP] s2 [SEP] ... sN [SEP]`` (``SentenceWordPiece`` plays the BPE tokenizer's part: its "eos" is [SEP]).
   Sentences come from a rule-based splitter (``split_sentences``: a period, ! or ? followed by whitespace and an
   upper-case letter, digit or bracket starts a new sentence, except after common abbreviations such as "e.g.",
   "et al.", "Fig."); special tokens typed in the text ("[SEP]", "[CLS]", ...) are dropped, so a [SEP] id always
   marks a sentence end. ELECTRA's build_pretraining_dataset.py reads one sentence per line; this is the same input.
2. The merge turns each kept document into blocks as ELECTRA's ``ExampleBuilder`` does (``document_blocks``):
   sentences are accumulated until they reach the target length (``blocks.max_length`` = 512, or with probability
   ``random_length_prob`` = 0.05 a random length in [5, max_length] for the next block); the block's sentences are
   split into segment A and B (A gets sentences while it stays under (target - 3) // 2 tokens, or with
   probability 0.5 the one that crosses it; with probability ``one_segment_prob`` = 0.1 everything is A), both
   are cut to fit, and the block is ``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` without B). A block never
   crosses a document boundary (ELECTRA starts a new example at every blank line). The random draws use a
   generator seeded by (split_seed, document key), so a document's blocks do not depend on the other files.
   train.bin / valid.bin items are these blocks; token types are recovered from the first [SEP] at load time.

out_dir gets vocab.txt (no dict.txt / bpecodes) and manifest.json whose ``settings.tokenizer`` records
``{"kind": "wordpiece", "vocab", "vocab_sha256", "lowercase", "blocks"}``.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import numpy as np

SPLITTER_VERSION = 1
_ABBREV = {"e.g", "i.e", "et al", "fig", "figs", "vs", "approx", "ca", "cf", "dr", "mr", "mrs", "ms", "no", "nos",
           "ref", "refs", "resp", "sp", "spp", "st", "vol", "al", "eq", "etc"}
_BOUNDARY = re.compile(r"[.!?]\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split (module docstring)."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        words = text[start:m.start()].split()
        last = words[-1].lower().rstrip(".").lstrip("([{\"'") if words else ""
        two = " ".join(words[-2:]).lower().rstrip(".").lstrip("([{\"'") if len(words) >= 2 else last
        if last in _ABBREV or two in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue  # "e.g. The", "et al. In", initials ("J. Smith")
        out.append(text[start:m.start() + 1].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


class SentenceWordPiece:
    """Documents -> WordPiece ids with [SEP] after each sentence (the final [SEP] is appended by the writer)."""

    def __init__(self, vocab_txt, lowercase: bool = True):
        from biogpt_train.data.vocab import WordPieceVocab
        from biogpt_train.data.wordpiece import WordPieceTokenizer

        self.vocab_txt, self.lowercase = str(vocab_txt), lowercase
        self.tok = WordPieceTokenizer(vocab_txt, lowercase=lowercase)
        self.special = set(self.tok.special_ids)
        self.dictionary = WordPieceVocab(vocab_txt)  # what the unit writer reads: len, eos ([SEP]), unk, pad

    def __getstate__(self):  # worker processes rebuild the Rust tokenizer
        return {"vocab_txt": self.vocab_txt, "lowercase": self.lowercase}

    def __setstate__(self, state):
        self.__init__(state["vocab_txt"], state["lowercase"])

    def unk_warning(self, unk: int, total: int, where: str, threshold: float = 0.01) -> Optional[str]:
        """One log line when more than ``threshold`` of the tokens are [UNK] (a vocab.txt of another casing or
        corpus), else None (the pipeline's check, as the BPE tokenizer's)."""
        if total <= 0 or unk / total <= threshold:
            return None
        return (f"{where}: {unk} of {total} tokens ({100.0 * unk / total:.1f}%) are [UNK] with {self.vocab_txt} "
                f"(lowercase={self.lowercase}): is this the vocab.txt of the model, with its casing?")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        out = []
        for text in texts:
            sentences = split_sentences(text)
            ids: list[int] = []
            for s_ids in self.tok.encode_batch(sentences) if sentences else []:
                s_ids = [i for i in s_ids if i not in self.special]
                if s_ids:
                    if ids:
                        ids.append(self.tok.sep_id)
                    ids.extend(s_ids)
            out.append(ids)
        return out


@dataclass
class BlockOptions:
    max_length: int = 512
    random_length_prob: float = 0.05
    one_segment_prob: float = 0.1

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "BlockOptions":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown blocks option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        opts = cls(**d)
        if opts.max_length < 8:
            raise ValueError(f"blocks.max_length={opts.max_length} is too small (>= 8)")
        return opts


def document_blocks(doc: np.ndarray, cls_id: int, sep_id: int, opts: BlockOptions, rng: random.Random) -> list:
    """ELECTRA's ExampleBuilder over one document's [SEP]-terminated sentences (module docstring)."""
    doc = np.asarray(doc)
    ends = np.flatnonzero(doc == sep_id)
    starts = np.r_[0, ends[:-1] + 1]
    sentences = [doc[s:e] for s, e in zip(starts, ends) if e > s]
    blocks, current, length = [], [], 0
    target = opts.max_length

    def emit():
        nonlocal current, length, target
        first_target = 100000 if rng.random() < opts.one_segment_prob else (target - 3) // 2
        a: list = []
        b: list = []
        for sent in current:
            if not a or len(a) + len(sent) < first_target or (not b and len(a) < first_target and rng.random() < 0.5):
                a.extend(sent.tolist())
            else:
                b.extend(sent.tolist())
        a = a[: opts.max_length - 2]
        b = b[: max(0, opts.max_length - len(a) - 3)]
        block = [cls_id] + a + [sep_id] + (b + [sep_id] if b else [])
        blocks.append(np.asarray(block, dtype=np.int64))
        current, length = [], 0
        target = rng.randint(5, opts.max_length) if rng.random() < opts.random_length_prob else opts.max_length

    for sent in sentences:
        current.append(sent)
        length += len(sent)
        if length >= target:
            emit()
    if current:
        emit()
    return blocks


def block_maker(vocab_txt, opts: BlockOptions, seed: int):
    """``fn(ids, key) -> list of blocks`` for pubmed.merge_units."""
    from biogpt_train.data.wordpiece import read_vocab_txt

    vocab = read_vocab_txt(vocab_txt)
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]

    def fn(ids, key: int) -> list:
        return document_blocks(ids, cls_id, sep_id, opts, random.Random(f"{seed}:{int(key)}"))

    return fn


def tokenizer_settings(vocab_txt, lowercase: bool, opts: BlockOptions) -> dict:
    from biogpt_train.utils import sha256_file

    return {"kind": "wordpiece", "vocab": str(vocab_txt), "vocab_sha256": sha256_file(vocab_txt),
            "lowercase": lowercase, "sentence_splitter": SPLITTER_VERSION, "blocks": asdict(opts)}


def train_vocab(texts, out_dir, *, vocab_size: int, lowercase: bool, min_frequency: int = 2):
    """Learn a WordPiece vocab.txt into out_dir (data/wordpiece.train_wordpiece)."""
    from biogpt_train.data.wordpiece import train_wordpiece

    return train_wordpiece(texts, out_dir, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency)
