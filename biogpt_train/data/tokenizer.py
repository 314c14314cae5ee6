"""BioGPT text <-> ids: Moses (sacremoses, en) + fastBPE + fairseq Dictionary (reference §3.1–§3.3).

encode:  text -> MosesTokenizer('en').tokenize(aggressive_dash_splits, escape) -> fastBPE ("@@ " pieces)
         -> dictionary ids (no leading </s>, no trailing eos; the model/dataset adds those).
decode:  ids -> symbols (bos/pad/eos dropped) -> remove "@@ " -> MosesDetokenizer('en').

The ids equal transformers.BioGptTokenizer's for vocab.json/merges.txt derived from the same files
(``write_hf_vocab``, reference §2.4); tests/test_tokenizer.py checks this on every text in ../shared/data.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from biogpt_train.data.dictionary import Dictionary
from biogpt_train.utils import atomic_write

PathLike = Union[str, os.PathLike]

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")

# Above this share of <unk> among encoded tokens the dict.txt / bpecodes pair is almost surely mismatched
# (BioGPT's own pair gives ~0% on PubMed text; codes whose pieces are absent from the dict give most of it).
UNK_WARN_RATE = 0.05


def read_bpecodes(path: PathLike) -> List[Tuple[str, str, int]]:
    """Parse and validate a fastBPE codes file: one ``left right count`` per line, in merge-rank order.

    fastBPE's C++ loader exits the interpreter on a missing file and segfaults on a malformed line, so every
    file is checked here first and a bad one raises with the file and line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"BPE codes file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e}); expected fastBPE codes") from e
    merges = []
    seen: Dict[Tuple[str, str], int] = {}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the empty string after the final newline
    for lineno, line in enumerate(lines, start=1):
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
            raise ValueError(f"{path}:{lineno}: malformed BPE code {line!r}; expected '<left> <right> <count>'")
        pair = (parts[0], parts[1])
        if pair in seen:
            raise ValueError(f"{path}:{lineno}: duplicate BPE merge {pair} (first on line {seen[pair]})")
        seen[pair] = lineno
        merges.append((parts[0], parts[1], int(parts[2])))
    if not merges:
        raise ValueError(f"{path}: empty BPE codes file")
    return merges


def hf_vocab(dictionary: Union[Dictionary, Sequence[str]]) -> Dict[str, int]:
    """fairseq dict (or its symbol list) -> HF BioGptTokenizer vocab (the converter's ``rewrite_dict_keys``;
    reference §2.4).

    ``piece@@`` (non-final BPE piece) -> ``piece``; any other symbol -> ``symbol</w>``; the four specials keep
    their names. Ids are unchanged. Added symbols such as learned1..N follow the same rule (``learned1</w>``).
    """
    symbols = dictionary.symbols if isinstance(dictionary, Dictionary) else list(dictionary)
    vocab: Dict[str, int] = {}
    for idx, sym in enumerate(symbols):
        if idx < 4 and sym in SPECIALS:
            key = sym
        elif sym.endswith("@@"):
            key = sym[:-2]
        else:
            key = sym + "</w>"
        if key in vocab:
            # The HF converter would silently keep the later id; refuse instead (ids would diverge).
            raise ValueError(
                f"dictionary symbols {symbols[vocab[key]]!r} (id {vocab[key]}) and {sym!r} (id {idx}) "
                f"both map to HF vocab key {key!r}"
            )
        vocab[key] = idx
    return vocab


def write_hf_vocab(dictionary: Union[Dictionary, PathLike], bpecodes: PathLike, out_dir: PathLike) -> Tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for transformers.BioGptTokenizer into ``out_dir`` (atomic).

    ``merges.txt`` is the codes file byte for byte (HF reads the first two fields of each line, the line order is
    the rank). It must end with a newline: HF drops the text after the last "\\n".
    """
    if not isinstance(dictionary, Dictionary):
        dictionary = Dictionary.load(dictionary)
    read_bpecodes(bpecodes)  # validate
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    atomic_write(vocab_path, json.dumps(hf_vocab(dictionary), ensure_ascii=False, indent=2) + "\n")
    codes = Path(bpecodes).read_bytes()
    if not codes.endswith(b"\n"):
        codes += b"\n"
    atomic_write(merges_path, codes)
    return vocab_path, merges_path


class Tokenizer:
    """Moses + fastBPE + Dictionary. Build with ``Tokenizer.from_files(dict_txt, bpecodes)``.

    Picklable (re-creates the fastBPE and sacremoses objects), so it can go to DataLoader / pool workers.
    """

    # Words whose BPE is memoised by encode_batch / bpe_encode_batch before the memo is cleared.
    WORD_CACHE_SIZE = 1 << 20

    def __init__(self, dictionary: Dictionary, bpecodes: PathLike, lang: str = "en"):
        self.dictionary = dictionary
        self.bpecodes = Path(bpecodes)
        self.lang = lang
        self.dict_path = None  # the dict.txt it came from, when known (for messages; set by from_files)
        read_bpecodes(self.bpecodes)  # fastBPE would exit/segfault on a bad file
        self._init_backends()

    @classmethod
    def from_files(cls, dict_txt: PathLike, bpecodes: PathLike, lang: str = "en") -> "Tokenizer":
        tok = cls(Dictionary.load(dict_txt), bpecodes, lang=lang)
        tok.dict_path = Path(dict_txt)
        return tok

    def _init_backends(self) -> None:
        import fastBPE
        from sacremoses import MosesDetokenizer

        # Built once: sacremoses compiles its regexes and loads non-breaking prefixes per object.
        self._moses = moses_tokenizer(self.lang)
        self._detok = MosesDetokenizer(lang=self.lang)
        self._bpe = quiet_fastbpe(fastBPE, str(self.bpecodes))
        self._word_bpe: Dict[str, str] = {}
        self._word_ids: Dict[str, List[int]] = {}  # encode_tokenized's memo, valid for a dictionary size
        self._word_ids_vocab = len(self.dictionary)

    def __getstate__(self):
        return {"dictionary": self.dictionary, "bpecodes": self.bpecodes, "lang": self.lang,
                "dict_path": self.dict_path}

    def __setstate__(self, state):
        self.__dict__.update({"dict_path": None, **state})
        self._init_backends()

    # ---- text -> ids ---------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> str:
        """Moses-tokenised text, tokens joined by single spaces (``tokenizer.perl -l en -a``, escaping on)."""
        return self._moses.tokenize(text, aggressive_dash_splits=True, return_str=True, escape=True)

    def apply_bpe(self, lines: Sequence[str]) -> List[str]:
        """fastBPE over already-tokenised lines (one C++ call for the whole list); pieces joined with "@@ "."""
        if isinstance(lines, str):
            raise TypeError("apply_bpe takes a list of lines; wrap a single line as [line]")
        return self._bpe.apply(list(lines))

    def bpe_encode(self, text: str) -> str:
        """Raw text -> the BPE'd line fairseq-preprocess would read (``*.tok.bpe``)."""
        return self.bpe_encode_batch([text])[0]

    def bpe_encode_batch(self, texts: Sequence[str]) -> List[str]:
        """Like ``[bpe_encode(t) for t in texts]``, faster.

        Moses runs once per text: its rules look at neighbouring tokens and at the end of the text, so neither
        splitting nor joining texts is safe, and whole texts rarely repeat. BPE then goes through
        ``bpe_tokenized`` (memoised per Moses token).
        """
        return self.bpe_tokenized([self.tokenize(t) for t in texts])

    def bpe_tokenized(self, lines: Sequence[str]) -> List[str]:
        """BPE for already Moses-tokenised lines; same output as ``apply_bpe``, memoised per token.

        fastBPE segments every space-separated token independently, so a token's pieces can be cached; the
        batch's unseen tokens go to fastBPE in one C++ call (biomedical text is Zipfian: most tokens of a batch
        were seen before).
        """
        token_lists = [[w for w in line.split(" ") if w] for line in lines]  # fastBPE splits on " " only
        memo = self._word_bpe
        _fill_memo(memo, {w for words in token_lists for w in words}, self._bpe.apply, self.WORD_CACHE_SIZE)
        return [" ".join([memo[w] for w in words]) for words in token_lists]

    def encode_tokenized(self, lines: Sequence[str]) -> List[List[int]]:
        """Ids for already Moses-tokenised lines (e.g. ``*.tok`` files): ``_ids(bpe_tokenized(lines))``, with each
        token's ids memoised (no "@@ " strings joined and split again, one dict lookup per token)."""
        token_lists = [line.split(" ") for line in lines]  # fastBPE splits on " " only; "" maps to no ids
        memo = self._word_ids
        if self._word_ids_vocab != len(self.dictionary):  # symbols were added: <unk> pieces may be known now
            memo.clear()
            self._word_ids_vocab = len(self.dictionary)
        get, unk = self.dictionary.indices.get, self.dictionary.unk_index
        needed = set().union(*token_lists)
        needed.discard("")
        _fill_memo(memo, needed, lambda words: [[get(piece, unk) for piece in pieces.split()]
                                                for pieces in self._bpe.apply(words)], self.WORD_CACHE_SIZE)
        memo[""] = []
        chain, lookup = itertools.chain.from_iterable, memo.__getitem__
        return [list(chain(map(lookup, words))) for words in token_lists]

    def _ids(self, bpe_line: str) -> List[int]:
        get, unk = self.dictionary.indices.get, self.dictionary.unk_index
        return [get(w, unk) for w in bpe_line.split()]

    def encode(self, text: str) -> List[int]:
        return self._ids(self.bpe_encode_batch([text])[0])

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return self.encode_tokenized([self.tokenize(t) for t in texts])

    # ---- ids -> text ---------------------------------------------------------------------------------------
    def detokenize_bpe(self, bpe_text: str) -> str:
        """A BPE'd (or generated) line -> plain text: ``sed 's/@@ //g'`` then the Moses detokenizer."""
        text = (bpe_text + " ").replace("@@ ", "").rstrip()
        return self._detok.detokenize(text.split())

    def decode(self, ids) -> str:
        # Dictionary.string drops bos/pad/eos; <unk> stays visible as "<unk>" (as fairseq's hub decode).
        return self.detokenize_bpe(self.dictionary.string(ids))

    def __len__(self) -> int:
        return len(self.dictionary)

    @property
    def prefix_token_id(self) -> int:
        # BioGPT reads every sequence after a leading </s> (fairseq's eos-first convention); the log-likelihood
        # harness puts this id before the context
        return self.dictionary.eos()

    # ---- <unk> check ---------------------------------------------------------------------------------------
    def unk_count(self, ids) -> tuple[int, int]:
        """(number of <unk>, number of ids) in ``ids``: one id sequence or a batch of them (lists, tuples or
        numpy/torch arrays). Cheap: one pass, no decoding."""
        import numpy as np

        if hasattr(ids, "numpy") and callable(ids.numpy):  # torch tensors, without importing torch
            ids = ids.detach().cpu().numpy()
        unk = self.dictionary.unk_index
        if isinstance(ids, np.ndarray):
            return int(np.count_nonzero(ids == unk)), int(ids.size)
        ids = list(ids)
        if ids and not isinstance(ids[0], (int, np.integer)):  # a batch
            pairs = [self.unk_count(seq) for seq in ids]
            return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        return ids.count(unk), len(ids)

    def unk_rate(self, ids) -> float:
        """Share of ``<unk>`` among ``ids`` (see ``unk_count``); 0.0 when there are none."""
        unk, total = self.unk_count(ids)
        return unk / total if total else 0.0

    def unk_warning(self, unk: int, total: int, where: str, threshold: float = UNK_WARN_RATE) -> Optional[str]:
        """One line for a log when more than ``threshold`` of ``total`` tokens are ``<unk>`` (else None).

        ``where`` names what was encoded (a file, a split). A high rate nearly always means the dict.txt and
        bpecodes come from different vocabularies, and the model would see (and decode) mostly ``<unk>``."""
        if total <= 0 or unk / total <= threshold:
            return None
        dict_name = self.dict_path if self.dict_path is not None else "the dictionary"
        return (f"{where}: {unk} of {total} tokens ({100.0 * unk / total:.1f}%) encode to <unk> with {dict_name} "
                f"and {self.bpecodes}: the dict.txt/bpecodes pair is probably mismatched; use the two files of one "
                "vocabulary (e.g. both from assets/BioGPT, or both from one bpe.learn=true output)")

    def check_unk(self, ids, where: str, logger=None, threshold: float = UNK_WARN_RATE) -> float:
        """``unk_rate(ids)``; logs ``unk_warning`` (once, on ``logger`` or this module's) when it is too high."""
        unk, total = self.unk_count(ids)
        message = self.unk_warning(unk, total, where, threshold)
        if message is not None:
            (logger or logging.getLogger(__name__)).warning("%s", message)
        return unk / total if total else 0.0


def _fill_memo(memo: dict, needed: set, compute, limit: int) -> None:
    """Add ``compute(missing)`` (one batched call, results in order) for the words of ``needed`` not in ``memo``;
    past ``limit`` entries the memo starts over (bounded memory) and the batch's own words are recomputed."""
    missing = [w for w in needed if w not in memo]
    if len(memo) + len(missing) > limit:
        memo.clear()
        missing = list(needed)
    if missing:
        memo.update(zip(missing, compute(missing)))


class _Guarded:
    """A (pattern, replacement) rule's pattern that skips texts without a character every match needs: the same
    result as ``pattern.sub`` (no match, no change) without scanning the text with a large character class."""

    def __init__(self, pattern, needs: str):
        self.pattern, self.needs = pattern, needs

    def sub(self, repl, text):
        return self.pattern.sub(repl, text) if self.needs in text else text


class _Whitespace:
    """``re.sub(r"\s+", " ", text)`` with str.split (``\s`` and str.split agree: both are str.isspace)."""

    @staticmethod
    def sub(repl, text):
        core = repl.join(text.split())
        if not core:
            return repl if text else ""
        return (repl if text[0].isspace() else "") + core + (repl if text[-1].isspace() else "")


def _guard(rules, needs: str):
    return [(_Guarded(pattern, needs), repl) for pattern, repl in rules]


@functools.lru_cache(maxsize=None)
def _moses_class():
    """sacremoses' MosesTokenizer with the same output, faster (tests/test_tokenizer.py compares it with the
    stock class and BioGptTokenizer):

    * ``set(IsLower)`` / ``set(IsAlpha)`` (thousands of characters) are frozen once instead of rebuilt per call
      (~40% of tokenisation time on PubMed abstracts);
    * the non-breaking-prefix pass looks at tokens ending in "." only, with set lookups instead of per-token
      ``re.search`` calls and list scans;
    * the apostrophe, comma, hyphen and XML-escape rules are skipped for texts without their character (most
      abstracts have no apostrophe: five 20k-character-class scans saved per text); whitespace runs collapse
      with str.split.
    """
    from sacremoses import MosesTokenizer as Stock

    class FastMosesTokenizer(Stock):
        _LOWER = frozenset(Stock.IsLower)
        _ALPHA = frozenset(Stock.IsAlpha)
        DEDUPLICATE_SPACE = (_Whitespace, Stock.DEDUPLICATE_SPACE[1])
        AGGRESSIVE_HYPHEN_SPLIT = _guard([Stock.AGGRESSIVE_HYPHEN_SPLIT], "-")[0]
        COMMA_SEPARATE_1 = _guard([Stock.COMMA_SEPARATE_1], ",")[0]
        COMMA_SEPARATE_2 = _guard([Stock.COMMA_SEPARATE_2], ",")[0]
        COMMA_SEPARATE_3 = _guard([Stock.COMMA_SEPARATE_3], ",")[0]
        ENGLISH_SPECIFIC_APOSTROPHE = _guard(Stock.ENGLISH_SPECIFIC_APOSTROPHE, "'")
        TRAILING_DOT_APOSTROPHE = _guard([Stock.TRAILING_DOT_APOSTROPHE], "'")[0]
        MOSES_ESCAPE_XML_REGEXES = [(_Guarded(pattern, pattern.pattern[-1]), repl)
                                    for pattern, repl in Stock.MOSES_ESCAPE_XML_REGEXES]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._prefixes = frozenset(self.NONBREAKING_PREFIXES)
            self._numeric_only = frozenset(self.NUMERIC_ONLY_PREFIXES)

        def islower(self, text):  # stock: not set(text).difference(set(self.IsLower))
            return self._LOWER.issuperset(text)

        def isanyalpha(self, text):  # stock: any(set(text).intersection(set(self.IsAlpha)))
            return not self._ALPHA.isdisjoint(text)

        def handles_nonbreaking_prefixes(self, text):
            # stock: every token is tested with re.search(r"^(\S+)\.$"); only "<prefix>." tokens can change:
            # "<prefix>." -> "<prefix> ." unless the prefix has an inner "." and a letter, is a known prefix (not
            # numeric-only), precedes a lowercase-initial token, or is numeric-only and precedes a digit.
            tokens = text.split()
            last = len(tokens) - 1
            for i, token in enumerate(tokens):
                if len(token) < 2 or token[-1] != ".":
                    continue
                prefix = token[:-1]
                nxt = tokens[i + 1] if i < last else ""
                if (("." in prefix and self.isanyalpha(prefix))
                        or (prefix in self._prefixes and prefix not in self._numeric_only)
                        or (nxt and self.islower(nxt[0]))
                        or (prefix in self._numeric_only and nxt[:1] in _ASCII_DIGITS)):
                    continue
                tokens[i] = prefix + " ."
            return " ".join(tokens)

    for name, (pattern, _) in [("AGGRESSIVE_HYPHEN_SPLIT", Stock.AGGRESSIVE_HYPHEN_SPLIT),
                               ("COMMA_SEPARATE_1", Stock.COMMA_SEPARATE_1),
                               ("TRAILING_DOT_APOSTROPHE", Stock.TRAILING_DOT_APOSTROPHE),
                               *(("EN", rule) for rule in Stock.ENGLISH_SPECIFIC_APOSTROPHE)]:
        needs = {"AGGRESSIVE_HYPHEN_SPLIT": "\\-", "COMMA_SEPARATE_1": "[,]"}.get(name, "'")
        if needs not in pattern.pattern:  # a sacremoses whose rules changed: the guards would be wrong
            raise RuntimeError(f"sacremoses' {name} rule changed ({pattern.pattern[:40]!r}...); update "
                               "biogpt_train/data/tokenizer.py:_moses_class")
    return FastMosesTokenizer


_ASCII_DIGITS = frozenset("0123456789")


def moses_tokenizer(lang: str):
    return _moses_class()(lang=lang)


def quiet_fastbpe(fastBPE_module, codes_path: str):
    """Construct fastBPE without its two "Loading codes ..." lines (C++ writes them to fd 2 on every rank)."""
    import sys

    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): just let it print
        return fastBPE_module.fastBPE(codes_path)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            return fastBPE_module.fastBPE(codes_path)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
