"""fairseq ``Dictionary`` (v0.12) and the ``dict.txt`` format (framework-notes §2.2, reference §2.3).

Ids: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, then line k (0-based) of dict.txt -> id 4+k.
Each dict.txt line is ``<symbol> <count>`` optionally followed by `` #fairseq:overwrite``; it is split on the
*last* space, so symbols may themselves contain spaces.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from typing import Iterable, Iterator, List, Optional, Sequence, TextIO, Union

from biogpt_train.utils import atomic_write

OVERWRITE_FLAG = "#fairseq:overwrite"
_SPACE_NORMALIZER = re.compile(r"\s+")


def tokenize_line(line: str) -> List[str]:
    """fairseq ``tokenize_line``: collapse whitespace runs (Unicode-aware, like ``\\s``), strip, split."""
    return _SPACE_NORMALIZER.sub(" ", line).strip().split()


def post_process(sentence: str, symbol: Optional[str]) -> str:
    """Remove subword markers from a detokenised id string (fairseq ``data_utils.post_process``, BPE subset)."""
    if symbol is None or symbol == "none":
        return sentence
    if symbol in ("subword_nmt", "fastbpe", "@@ ", "@@"):
        # fastBPE / subword-nmt mark non-final pieces with "@@"; appending a space also catches a trailing "@@".
        marker = "@@ " if symbol in ("subword_nmt", "fastbpe") else symbol
        return (sentence + " ").replace(marker, "").rstrip()
    if symbol == "sentencepiece":
        return sentence.replace(" ", "").replace("\u2581", " ").strip()
    raise ValueError(f"unknown bpe_symbol / post_process option {symbol!r} (use '@@ ', 'subword_nmt', 'sentencepiece')")


def count_words(lines: Iterable[str], counter: Optional[Counter] = None, eos_word: str = "</s>") -> Counter:
    """Count whitespace tokens of ``lines`` as fairseq-preprocess does (one ``</s>`` per line is counted too)."""
    counter = Counter() if counter is None else counter
    for line in lines:
        counter.update(tokenize_line(line))
        counter[eos_word] += 1
    return counter


class Dictionary:
    """Symbol <-> id mapping with counts; fairseq semantics (see module docstring)."""

    def __init__(
        self,
        *,
        bos: str = "<s>",
        pad: str = "<pad>",
        eos: str = "</s>",
        unk: str = "<unk>",
        extra_special_symbols: Optional[Sequence[str]] = None,
    ):
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = bos, pad, eos, unk
        self.symbols: List[str] = []
        self.count: List[int] = []
        self.indices: dict = {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        for sym in extra_special_symbols or ():
            self.add_symbol(sym)
        self.nspecial = len(self.symbols)

    # ---- lookup -------------------------------------------------------------------------------------------
    def bos(self) -> int:
        return self.bos_index

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def unk(self) -> int:
        return self.unk_index

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, sym) -> bool:
        return sym in self.indices

    def __getitem__(self, idx: int) -> str:
        # fairseq returns the unk word for ids past the end (e.g. a model with a larger vocab than the dict).
        idx = int(idx)
        if 0 <= idx < len(self.symbols):
            return self.symbols[idx]
        return self.unk_word

    def __eq__(self, other) -> bool:
        return isinstance(other, Dictionary) and self.indices == other.indices and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} symbols, nspecial={self.nspecial})"

    def index(self, sym: str) -> int:
        if not isinstance(sym, str):
            raise TypeError(f"Dictionary.index expects a str, got {type(sym).__name__}")
        return self.indices.get(sym, self.unk_index)

    def get_count(self, idx: int) -> int:
        return self.count[idx]

    def unk_string(self, escape: bool = False) -> str:
        return f"<{self.unk_word}>" if escape else self.unk_word

    # ---- building -----------------------------------------------------------------------------------------
    def add_symbol(self, word: str, n: int = 1, overwrite: bool = False) -> int:
        """Add ``word`` (or add ``n`` to its count) and return its id. ``overwrite`` gives it a fresh id."""
        if word in self.indices and not overwrite:
            idx = self.indices[word]
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[word] = idx
        self.symbols.append(word)
        self.count.append(n)
        return idx

    def update(self, new_dict: "Dictionary") -> None:
        """Merge counts of another dictionary into this one (fairseq ``Dictionary.update``)."""
        for word in new_dict.symbols:
            idx2 = new_dict.indices[word]
            if word in self.indices:
                idx = self.indices[word]
                self.count[idx] += new_dict.count[idx2]
            else:
                self.add_symbol(word, new_dict.count[idx2])

    def finalize(self, threshold: int = -1, nwords: int = -1, padding_factor: int = 8) -> None:
        """Sort non-specials by descending count (ties: ascending symbol), keep ``nwords`` (incl. specials) with
        count >= ``threshold``, then pad to a multiple of ``padding_factor`` with ``madeupwordNNNN`` (count 0)."""
        if nwords <= 0:
            nwords = len(self)
        new_symbols = self.symbols[: self.nspecial]
        new_count = self.count[: self.nspecial]
        new_indices = {s: i for i, s in enumerate(new_symbols)}
        # fairseq: Counter(dict(sorted(zip(symbols, counts)))).most_common(k); most_common is a stable sort on
        # count, so equal counts keep the ascending-symbol order. (A duplicated symbol keeps its largest count,
        # exactly as dict(...) does there.)
        items = list(dict(sorted(zip(self.symbols[self.nspecial :], self.count[self.nspecial :]))).items())
        items.sort(key=lambda kv: kv[1], reverse=True)
        for symbol, count in items[: max(nwords - self.nspecial, 0)]:
            if count < threshold:
                break
            new_indices[symbol] = len(new_symbols)
            new_symbols.append(symbol)
            new_count.append(count)
        self.symbols, self.count, self.indices = list(new_symbols), list(new_count), new_indices
        self.pad_to_multiple_(padding_factor)

    def pad_to_multiple_(self, padding_factor: int) -> None:
        if padding_factor > 1:
            i = 0
            while len(self) % padding_factor != 0:
                self.add_symbol(f"madeupword{i:04d}", n=0)
                i += 1

    def add_from_counter(self, counter: Counter) -> None:
        """Add counted words in sorted order (fairseq's ``add_file_to_dictionary`` merge step)."""
        for word, c in sorted(counter.items()):
            self.add_symbol(word, n=c)

    @classmethod
    def build(
        cls,
        lines: Iterable[str],
        threshold: int = -1,
        nwords: int = -1,
        padding_factor: int = 8,
    ) -> "Dictionary":
        """Build a finalized dictionary from whitespace-tokenised (Moses+BPE'd) text lines, like
        ``fairseq-preprocess`` without ``--srcdict``."""
        d = cls()
        d.add_from_counter(count_words(lines, eos_word=d.eos_word))
        d.finalize(threshold=threshold, nwords=nwords, padding_factor=padding_factor)
        return d

    @classmethod
    def build_from_files(cls, paths: Sequence[Union[str, os.PathLike]], **finalize_kwargs) -> "Dictionary":
        d = cls()
        counter: Counter = Counter()
        for path in paths:
            with open(path, "r", encoding="utf-8") as f:
                count_words(f, counter, eos_word=d.eos_word)
        d.add_from_counter(counter)
        d.finalize(**finalize_kwargs)
        return d

    # ---- dict.txt I/O -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, f: Union[str, os.PathLike, TextIO]) -> "Dictionary":
        d = cls()
        d.add_from_file(f)
        return d

    def add_from_file(self, f: Union[str, os.PathLike, TextIO]) -> None:
        if isinstance(f, (str, os.PathLike)):
            name = os.fspath(f)
            try:
                with open(name, "r", encoding="utf-8") as fd:
                    self._add_lines(fd, name)
            except UnicodeDecodeError as e:
                raise ValueError(f"{name}: not valid UTF-8 ({e}); is this a dict.txt?") from e
            return
        self._add_lines(f, getattr(f, "name", "<stream>"))

    def _add_lines(self, lines: Iterable[str], name: str) -> None:
        for lineno, raw in enumerate(lines, start=1):
            line = raw.rstrip()  # fairseq strips trailing whitespace (incl. "\n") before splitting
            try:
                word, field = line.rsplit(" ", 1)
                overwrite = field == OVERWRITE_FLAG
                if overwrite:
                    word, field = word.rsplit(" ", 1)
                count = int(field)
            except ValueError:
                raise ValueError(
                    f"{name}:{lineno}: malformed dictionary line {raw!r}; expected '<token> <count> [{OVERWRITE_FLAG}]'"
                ) from None
            if word in self.indices and not overwrite:
                raise ValueError(
                    f"{name}:{lineno}: duplicate symbol {word!r} (first at id {self.indices[word]}); add "
                    f"'{OVERWRITE_FLAG}' to the line if it is meant to replace the earlier entry"
                )
            self.add_symbol(word, n=count, overwrite=overwrite)

    def save(self, path: Union[str, os.PathLike, TextIO]) -> None:
        """Write ``symbols[nspecial:]`` with counts, one ``"{sym} {count}\\n"`` per line (atomic for paths).

        A symbol that repeats an earlier one (only possible via ``overwrite``) gets the overwrite flag so the
        file loads back; fairseq itself drops the flag.
        """
        text = self.to_text()
        if isinstance(path, (str, os.PathLike)):
            atomic_write(path, text)
        else:
            path.write(text)

    def to_text(self) -> str:
        out = io.StringIO()
        seen = set(self.symbols[: self.nspecial])
        for sym, c in zip(self.symbols[self.nspecial :], self.count[self.nspecial :]):
            flag = f" {OVERWRITE_FLAG}" if sym in seen else ""
            seen.add(sym)
            out.write(f"{sym} {c}{flag}\n")
        return out.getvalue()

    # ---- encode / decode ----------------------------------------------------------------------------------
    def encode_line(self, line: str, append_eos: bool = True, add_if_not_exist: bool = False) -> List[int]:
        """Whitespace-split ``line`` into ids (unknown -> unk, or added with ``add_if_not_exist``) + ``</s>``.

        Note: fairseq's default is ``add_if_not_exist=True``; ours is False so binarising never grows a dict
        by accident. BioGPT's learned prompts pass True explicitly.
        """
        words = tokenize_line(line)
        if add_if_not_exist:
            ids = [self.add_symbol(w) for w in words]
        else:
            get, unk = self.indices.get, self.unk_index
            ids = [get(w, unk) for w in words]
        if append_eos:
            ids.append(self.eos_index)
        return ids

    def string(
        self,
        ids,
        bpe_symbol: Optional[str] = None,
        escape_unk: bool = False,
        extra_symbols_to_ignore: Optional[Iterable[int]] = None,
        unk_string: Optional[str] = None,
        include_eos: bool = False,
        separator: str = " ",
    ) -> str:
        """Ids -> text, dropping bos, pad and (unless ``include_eos``) eos; ``bpe_symbol='@@ '`` removes BPE.

        A 2-D tensor/array gives one line per row. (fairseq keeps pad here; callers there strip it first.)
        """
        if getattr(ids, "ndim", 1) == 2:
            return "\n".join(
                self.string(row, bpe_symbol, escape_unk, extra_symbols_to_ignore, unk_string, include_eos, separator)
                for row in ids
            )
        ignore = {int(i) for i in (extra_symbols_to_ignore or ())}
        ignore.update((self.bos_index, self.pad_index))
        if not include_eos:
            ignore.add(self.eos_index)
        unk_word = unk_string if unk_string is not None else self.unk_string(escape_unk)

        def tok(i: int) -> str:
            return unk_word if i == self.unk_index else self[i]

        sent = separator.join(tok(i) for i in map(int, _iter_ids(ids)) if i not in ignore)
        return post_process(sent, bpe_symbol)


def _iter_ids(ids) -> Iterator:
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays: one conversion instead of per-item .item()
        return iter(ids.tolist())
    return iter(ids)
