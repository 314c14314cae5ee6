"""`load_tokenizer(path)`: the tokenizer of any model family, from a folder, a file or a checkpoint.

    dict.txt + bpecodes (or an HF BioGPT folder: vocab.json + merges.txt)  -> BioGPT's Moses + BPE `Tokenizer`
    tokenizer.model                                                         -> `SentencePieceTokenizer` (Llama)
    vocab.txt                                                               -> `WordPieceTokenizer` (ELECTRA/BERT)
    a checkpoint (.pt; native ones carry their tokenizer files)             -> whichever of the above it holds

Every tokenizer has `encode(text) -> list[int]` without special tokens (HF's `add_special_tokens=False`),
`decode(ids)`, `__len__`, and `prefix_token_id`: the token a sequence starts with for language-model scoring
(BioGPT: `</s>`, Llama: `<s>`, encoders: `[CLS]`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]


class TokenizerNotFound(FileNotFoundError):
    pass


def _cache_file(name: str, data: bytes) -> Path:
    """Tokenizer bytes stored in a checkpoint, as a file (fastBPE and sentencepiece read paths)."""
    from biogpt_train.utils import atomic_write

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "biogpt_train" / "tokenizers"
    path = root / hashlib.sha256(data).hexdigest()[:16] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    return path


def _wordpiece(vocab_txt: Path):
    from biogpt_train.data.wordpiece import WordPieceTokenizer

    lowercase = True
    config = vocab_txt.parent / "tokenizer_config.json"
    if config.is_file():  # HF's record of how the vocabulary is meant to be used
        lowercase = bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
    return WordPieceTokenizer(vocab_txt, lowercase=lowercase)


def _bpe(symbols_or_dict, bpecodes: Path):
    from biogpt_train.checkpoint.io import dictionary_from_symbols
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer

    if isinstance(symbols_or_dict, (str, os.PathLike)):
        return Tokenizer.from_files(symbols_or_dict, bpecodes)
    d = symbols_or_dict if isinstance(symbols_or_dict, Dictionary) else dictionary_from_symbols(symbols_or_dict)
    return Tokenizer(d, bpecodes)


def _from_folder(folder: Path):
    if (folder / "tokenizer.model").is_file():
        from biogpt_train.data.sentencepiece_tokenizer import SentencePieceTokenizer

        return SentencePieceTokenizer(folder / "tokenizer.model")
    if (folder / "vocab.txt").is_file():
        return _wordpiece(folder / "vocab.txt")
    codes = next((folder / n for n in ("bpecodes", "merges.txt") if (folder / n).is_file()), None)
    if codes is not None and (folder / "dict.txt").is_file():
        return _bpe(folder / "dict.txt", codes)
    if codes is not None and (folder / "vocab.json").is_file():
        from biogpt_train.checkpoint.io import symbols_from_hf_vocab

        vocab = folder / "vocab.json"
        return _bpe(symbols_from_hf_vocab(json.loads(vocab.read_text(encoding="utf-8")), vocab), codes)
    return None


def _from_checkpoint(path: Path):
    from biogpt_train.checkpoint.io import load_dictionary, read_checkpoint

    loaded = read_checkpoint(path)
    files = loaded.tokenizer_files or {}
    if "tokenizer.model" in files:
        from biogpt_train.data.sentencepiece_tokenizer import SentencePieceTokenizer

        return SentencePieceTokenizer(_cache_file("tokenizer.model", files["tokenizer.model"]))
    if "vocab.txt" in files:
        return _wordpiece(_cache_file("vocab.txt", files["vocab.txt"]))
    beside = _from_folder(path.parent)
    if loaded.family != "biogpt" or not any(k in files for k in ("bpecodes", "merges.txt")):
        return beside
    codes = _cache_file("bpecodes", files.get("bpecodes", files.get("merges.txt")))
    return _bpe(load_dictionary(loaded), codes)


def load_tokenizer(path: PathLike):
    """The tokenizer for `path` (module docstring): a folder, a tokenizer file, or a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise TokenizerNotFound(f"{path}: no such file or directory")
    tok = None
    if path.is_dir():
        tok = _from_folder(path)
    elif path.name.endswith(".model"):
        from biogpt_train.data.sentencepiece_tokenizer import SentencePieceTokenizer

        tok = SentencePieceTokenizer(path)
    elif path.name == "vocab.txt":
        tok = _wordpiece(path)
    elif path.name.startswith("dict") and path.suffix == ".txt":
        codes = next((path.parent / n for n in ("bpecodes", "merges.txt") if (path.parent / n).is_file()), None)
        if codes is None:
            raise TokenizerNotFound(f"{path}: no bpecodes (or merges.txt) beside it; a BioGPT tokenizer needs both")
        tok = _bpe(path, codes)
    else:
        tok = _from_checkpoint(path)
    if tok is None:
        raise TokenizerNotFound(
            f"{path}: no tokenizer found (looked for dict.txt + bpecodes, vocab.json + merges.txt, tokenizer.model, "
            "vocab.txt, or tokenizer files stored in a native checkpoint)")
    return tok
