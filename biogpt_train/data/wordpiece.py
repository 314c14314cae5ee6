"""BERT/ELECTRA WordPiece text <-> ids over HF ``tokenizers`` (the vocab.txt of BioM-ELECTRA, BERT, ...).

The pipeline is BERT's: BertNormalizer (clean text, CJK spacing, lowercase and accent stripping when
``lowercase``), BertPreTokenizer (whitespace and punctuation), WordPiece with "##" continuations, [UNK] for
words longer than 100 characters or not coverable. ``encode`` returns ids without [CLS]/[SEP], equal to
``transformers.BertTokenizerFast(vocab, do_lower_case=...)(text, add_special_tokens=False)`` (tests check this on
every text in ../shared/data). ``encode_with_offsets`` also gives character offsets into the original text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece

from biogpt_train.utils import atomic_write

PathLike = Union[str, os.PathLike]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in a vocab trained here
REQUIRED = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


class VocabError(ValueError):
    pass


def read_vocab_txt(path: PathLike) -> dict:
    """token -> id (line number) from a BERT vocab.txt, read as BertTokenizer does, with the checks it lacks."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"WordPiece vocab not found: {path}") from None
    except UnicodeDecodeError as e:
        raise VocabError(f"{path}: not valid UTF-8 ({e}); expected a BERT vocab.txt (one token per line)") from e
    vocab = {}
    for i, line in enumerate(lines):
        token = line.rstrip("\n")
        if not token:
            raise VocabError(f"{path}:{i + 1}: empty line; a BERT vocab.txt has one token per line")
        if token in vocab:
            raise VocabError(f"{path}:{i + 1}: token {token!r} repeats line {vocab[token] + 1}; ids would be ambiguous")
        vocab[token] = i
    if not vocab:
        raise VocabError(f"{path}: empty file; expected a BERT vocab.txt (one token per line)")
    missing = [t for t in REQUIRED if t not in vocab]
    if missing:
        raise VocabError(f"{path}: not a BERT WordPiece vocab.txt: missing special tokens {missing} "
                         f"(needs {list(REQUIRED)}; first line is {lines[0].rstrip()!r})")
    return vocab


def _bert_tokenizer(vocab: dict, lowercase: bool) -> Tokenizer:
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    # strip_accents=None: follows lowercase, as in BERT
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    # Special tokens typed in the text stay whole, as with transformers' tokenizer.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t in vocab])
    return tok


class WordPieceTokenizer:
    def __init__(self, vocab_txt: PathLike, lowercase: bool = True):
        self.path = Path(vocab_txt)
        self.lowercase = lowercase
        self.vocab = read_vocab_txt(self.path)
        self.tokenizer = _bert_tokenizer(self.vocab, lowercase)
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.mask_id = self.vocab.get("[MASK]")
        self.prefix_token_id = self.cls_id  # what a sequence starts with
        self.special_ids = tuple(self.vocab[t] for t in SPECIAL_TOKENS if t in self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> Tuple[List[int], List[Tuple[int, int]]]:
        """ids and (start, end) character offsets into ``text`` (a "##" piece covers only its own characters)."""
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return enc.ids, list(enc.offsets)

    def tokens(self, text: str) -> List[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        return self.tokenizer.id_to_token(i)


def train_wordpiece(files_or_iterator: Union[Sequence[PathLike], Iterable[str]], out_dir: PathLike, *,
                    vocab_size: int = 30000, lowercase: bool = True, min_frequency: int = 2,
                    limit_alphabet: int = 1000) -> Path:
    """Train a BERT WordPiece vocabulary (tokenizers' WordPieceTrainer, the defaults of BertWordPieceTokenizer)
    and write ``out_dir/vocab.txt`` atomically; [PAD] [UNK] [CLS] [SEP] [MASK] get ids 0..4.

    ``files_or_iterator``: text files (one document or sentence per line) or an iterable of strings."""
    tok = Tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        limit_alphabet=limit_alphabet, special_tokens=list(SPECIAL_TOKENS),
                                        continuing_subword_prefix="##", show_progress=False)
    if isinstance(files_or_iterator, (str, os.PathLike)):
        files_or_iterator = [files_or_iterator]
    items = files_or_iterator if not isinstance(files_or_iterator, (list, tuple)) else list(files_or_iterator)
    if isinstance(items, list) and items and all(isinstance(p, (str, os.PathLike)) and Path(p).is_file()
                                                 for p in items):
        tok.train([str(p) for p in items], trainer)
    else:
        tok.train_from_iterator(items, trainer)
    vocab = tok.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in ordered] != list(range(len(ordered))):
        raise VocabError("trained WordPiece ids are not contiguous; refusing to write an ambiguous vocab.txt")
    out = Path(out_dir) / "vocab.txt"
    atomic_write(out, "".join(t + "\n" for t in ordered))
    return out


__all__ = ["WordPieceTokenizer", "train_wordpiece", "read_vocab_txt", "VocabError", "SPECIAL_TOKENS"]
