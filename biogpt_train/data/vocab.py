"""Tokenizer vocabularies seen through the fairseq `Dictionary` interface the datasets and the trainer use
(BioGPT's own dict.txt is `data.dictionary.Dictionary`).

`WordPieceVocab(vocab_txt)`: a BERT/ELECTRA vocab.txt (ids = line numbers; eos = [SEP], bos = [CLS]).

`TokenizerVocab(tokenizer)` wraps a `SentencePieceTokenizer` (a prepared directory's `tokenizer.model`):
`pad() eos() bos() unk() __len__ symbols index(sym) string(ids) add_symbol(sym)` plus `encode(text)` and
`prefix_token_id`. Ids are the model's piece ids: `<unk>`=0, `<s>`=1, `</s>`=2 for Llama models.

Choices (Llama has no pad piece):
- pad = `<unk>` (id 0), the Llama/BioMedGPT convention (`pad_token_id` 0). The loss ignores pad targets, so a
  `<unk>` target never counts; with byte fallback (Llama's and `train_sentencepiece`'s models) text never
  encodes to `<unk>`, so no real token is lost.
- The sequence start (what a Llama sequence reads first; `prefix_token_id`) is `<s>` (id 1), where BioGPT's is
  `</s>`. Prepared pretraining documents are `<s> text </s>` (data_prep), so LM blocks keep fairseq's rule (the
  first input of a block at the very start of the stream is `</s>`, elsewhere the previous token) and every
  document is read after `<s>`, as Llama's tokenizer presents text. Fine-tuning sequences
  (`source prompt target </s>`) get `<s>` as their first input (`sequence_start`).
- Symbols added after the model's pieces (learned prompt tokens, `<seqsep>`) get the next ids, as
  `Dictionary.add_symbol` gives them; the trainer grows the embedding for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

from biogpt_train.data.wordpiece import read_vocab_txt

TOKENIZER_FILE = "tokenizer.model"  # a prepared directory's SentencePiece model (instead of dict.txt + bpecodes)


class TokenizerVocab:
    """Dictionary-like view of a SentencePiece tokenizer (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        sp = tokenizer.sp
        self.base_size = sp.get_piece_size()
        self.symbols: List[str] = [sp.id_to_piece(i) for i in range(self.base_size)]
        self.extra: dict[str, int] = {}  # added symbols -> ids >= base_size

    @classmethod
    def load(cls, model_file: Union[str, os.PathLike]) -> "TokenizerVocab":
        from biogpt_train.data.sentencepiece_tokenizer import SentencePieceTokenizer

        return cls(SentencePieceTokenizer(model_file))

    @property
    def model_file(self) -> Path:
        return Path(self.tokenizer.model_file)

    # --- special ids ---------------------------------------------------------------------------------------
    def bos(self) -> int:
        return self.tokenizer.bos_id

    def eos(self) -> int:
        return self.tokenizer.eos_id

    def unk(self) -> int:
        return self.tokenizer.unk_id

    def pad(self) -> int:
        return self.tokenizer.pad_id  # the model's pad piece if it has one, else <unk> (0)

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id

    # --- symbols -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, sym) -> bool:
        return sym in self.extra or self.tokenizer.sp.piece_to_id(sym) != self.unk() or sym == self.symbols[self.unk()]

    def __getitem__(self, idx: int) -> str:
        idx = int(idx)
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else self.symbols[self.unk()]

    def index(self, sym: str) -> int:
        """The id of piece (or added symbol) `sym`; else of `▁sym`; else the single id `sym` encodes to; else
        <unk> (as `Dictionary.index`). So `index("...")` finds the ellipsis however the model spells it."""
        if not isinstance(sym, str):
            raise TypeError(f"TokenizerVocab.index expects a str, got {type(sym).__name__}")
        if sym in self.extra:
            return self.extra[sym]
        sp, unk = self.tokenizer.sp, self.unk()
        for piece in (sym, "\u2581" + sym):
            i = sp.piece_to_id(piece)
            if i != unk or piece == self.symbols[unk]:
                return i
        ids = sp.encode(sym)  # no prefix space: the spelling of `sym` inside a word
        return ids[0] if len(ids) == 1 else unk

    def add_symbol(self, word: str, n: int = 1, overwrite: bool = False) -> int:
        """Append `word` after the model's pieces (learned prompts, separators); an existing one keeps its id."""
        if word in self.extra:
            return self.extra[word]
        i = self.tokenizer.sp.piece_to_id(word)
        if i != self.unk() or word == self.symbols[self.unk()]:
            return i
        self.extra[word] = len(self.symbols)
        self.symbols.append(word)
        return self.extra[word]

    # --- text ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> List[int]:
        """Token ids of `text` (no <s>/</s>; a prefix space as Llama's tokenizer adds one)."""
        return self.tokenizer.encode(text)

    def string(self, ids, bpe_symbol=None, escape_unk: bool = False, extra_symbols_to_ignore=None,
               unk_string=None, include_eos: bool = False, separator: str = " ") -> str:
        """Ids -> text; special tokens and pad dropped, added symbols written as themselves. (The BPE options of
        `Dictionary.string` do not apply: SentencePiece decodes to plain text.)"""
        if getattr(ids, "ndim", 1) == 2:
            return "\n".join(self.string(row, include_eos=include_eos) for row in ids)
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        ignore = {int(i) for i in (extra_symbols_to_ignore or ())}
        out: List[str] = []
        run: List[int] = []
        for i in map(int, ids):
            if i in ignore:
                continue
            if i >= self.base_size:  # an added symbol: flush the pieces before it
                out.append(self.tokenizer.decode(run))
                run = []
                out.append(self.symbols[i] if i < len(self.symbols) else self.symbols[self.unk()])
            else:
                run.append(i)
        out.append(self.tokenizer.decode(run))
        return " ".join(t for t in out if t)


class WordPieceVocab:
    """vocab.txt as the trainer's dictionary: ids are line numbers, no fairseq specials. ``eos`` is [SEP] (what
    ends a sequence), ``bos`` [CLS]; ``count`` is all zeros (a vocab.txt has no frequencies)."""

    def __init__(self, path):
        self.path = Path(path)
        vocab = read_vocab_txt(self.path)
        self.symbols = sorted(vocab, key=vocab.__getitem__)
        self.indices = vocab
        self.count = [0] * len(self.symbols)
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
        self.mask_id = vocab.get("[MASK]")

    def __len__(self) -> int:
        return len(self.symbols)

    def pad(self) -> int:
        return self.pad_id

    def eos(self) -> int:
        return self.sep_id

    def bos(self) -> int:
        return self.cls_id

    def unk(self) -> int:
        return self.unk_id

    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, self.unk_id)


def is_tokenizer_dir(path: Union[str, os.PathLike]) -> bool:
    """Whether a prepared directory holds a SentencePiece model (rather than a fairseq dict.txt)."""
    return (Path(path) / TOKENIZER_FILE).is_file()


def sequence_start(vocab) -> int:
    """The first input token of a sequence: the vocabulary's `prefix_token_id` (Llama: <s>), else fairseq's
    </s> (BioGPT: `move_eos_to_beginning`)."""
    return int(getattr(vocab, "prefix_token_id", vocab.eos()))
