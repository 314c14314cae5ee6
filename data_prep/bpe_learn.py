"""Learn fastBPE codes (`bpecodes`) and build a fairseq `dict.txt` from a Moses-tokenized corpus.

The `fastBPE` Python module (0.1.0) can only *apply* codes; `fast learnbpe` is a C++ binary that `pip install
fastBPE` does not build. This module re-implements `fastBPE::learnbpe` (glample/fastBPE, fastBPE.hpp) so that it
writes the same file, line for line:

- words are the runs of characters between ' ' and '\\n' (`readText`), counted per unique word;
- a word is split into UTF-8 characters and its last character gets "</w>" (`tokenize`);
- each step merges the most frequent pair; ties go to the pair with the smallest (left id, right id) (`find_maxp`),
  where symbol ids are handed out in the order `tokenize` meets them while iterating the word-count
  `std::unordered_map`. To get the same ids we replay libstdc++'s hash table (std::hash<std::string> =
  `_Hash_bytes` MurmurHash64A variant, seed 0xc70f6907; prime bucket counts 13, 29, 59, ... growing x2 at load factor
  1; a new bucket goes to the list front, a new node to the front of its bucket) — the iteration order of any
  GCC >= 5 build. Merged symbols get the next ids in merge order, as in C++;
- output lines are `left right count` (`count` = the pair frequency when it was merged).

Verified byte-identical against the compiled `fast learnbpe` (g++ 12) on OHSUMED (10k merges), the shipped sample (2k
merges; its sha256 is kept in tests/test_data_prep_pubmed.py) and 1,500 random small corpora.

Two deliberate departures, both where the C++ output would be unusable:
- C++ keeps printing "x y 0" lines once no pair is left; we stop early (and say so);
- if two merges build the same string (e.g. "a bc" then "ab c"), `fastBPE.apply` aborts on the codes file
  (assert in readCodes). We keep the first and skip the later merge (the symbol it would create already exists), and
  report how many were skipped (none in the corpora we tried).

`build_dictionary` then counts the BPE tokens of the corpus (each unique word segmented once with the learned codes,
weighted by its count), which is exactly what `fairseq-preprocess` counts, and finalizes with `padding_factor` 8
(madeupword padding; reference §2.3).
"""

from __future__ import annotations

import heapq
import logging
from pathlib import Path
from typing import Callable, Iterable, Mapping

log = logging.getLogger(__name__)

END_WORD = "</w>"

# --- libstdc++ std::unordered_map<std::string, ...> iteration order -----------------------------------------------

_MASK = (1 << 64) - 1
_MUL = (0xC6A4A793 << 32) + 0x5BD1E995
_SEED = 0xC70F6907
# Bucket counts an unordered_map goes through when filled one insert at a time (libstdc++ _Prime_rehash_policy:
# first 13, then the smallest listed prime >= 2 * current). Checked against g++ 12 up to 49,969,847 buckets.
_BUCKET_CHAIN = (
    13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061, 712697, 1447153,
    2938679, 5967347, 12117689, 24607243, 49969847, 101473717, 206062531, 418451333, 849749479, 1725587117,
    3504151727, 8589934583, 25769803693, 68719476731,
)


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def std_hash(data: bytes) -> int:
    """libstdc++ `std::_Hash_bytes(data, len, 0xc70f6907)` on 64-bit, i.e. `std::hash<std::string>`."""
    n = len(data)
    h = (_SEED ^ (n * _MUL)) & _MASK
    aligned = n & ~7
    for i in range(0, aligned, 8):
        k = int.from_bytes(data[i : i + 8], "little")
        h ^= (_shift_mix((k * _MUL) & _MASK) * _MUL) & _MASK
        h = (h * _MUL) & _MASK
    if n & 7:
        h ^= int.from_bytes(data[aligned:], "little")
        h = (h * _MUL) & _MASK
    h = (_shift_mix(h) * _MUL) & _MASK
    return _shift_mix(h)


def _insert(order: list[int], runs: dict[int, list[str]], key: str, bucket: int) -> None:
    """Record `key` in `bucket`, in insertion order (`_iterate` reads both lists backwards: front insertion)."""
    run = runs.get(bucket)
    if run is None:
        runs[bucket] = [key]
        order.append(bucket)
    else:
        run.append(key)


def _table_order(items: list[tuple[str, int]], n_bkt: int) -> tuple[list[int], dict[int, list[str]]]:
    """Insert (key, hash) pairs into an empty table of `n_bkt` buckets; return (bucket order, bucket runs)."""
    order: list[int] = []
    runs: dict[int, list[str]] = {}
    for key, h in items:
        _insert(order, runs, key, h % n_bkt)
    return order, runs


def _iterate(order: list[int], runs: dict[int, list[str]], hashes: dict[str, int]) -> list[tuple[str, int]]:
    # newest bucket first, newest node first within a bucket
    return [(k, hashes[k]) for b in reversed(order) for k in reversed(runs[b])]


def unordered_map_order(keys: Iterable[str]) -> list[str]:
    """Iteration order of a libstdc++ unordered_map<string, T> after inserting `keys` (unique, in this order)."""
    hashes: dict[str, int] = {}
    order: list[int] = []
    runs: dict[int, list[str]] = {}
    n_bkt, chain_pos, size = 1, 0, 0
    for key in keys:
        h = std_hash(key.encode("utf-8"))
        hashes[key] = h
        if size + 1 > (n_bkt if chain_pos else 0):  # _M_need_rehash: rehash re-inserts in iteration order
            n_bkt = _BUCKET_CHAIN[chain_pos]
            chain_pos += 1
            order, runs = _table_order(_iterate(order, runs, hashes), n_bkt)
        _insert(order, runs, key, h % n_bkt)
        size += 1
    return [k for k, _ in _iterate(order, runs, hashes)]


# --- pre-tokenization --------------------------------------------------------------------------------------------

class MosesPretokenizer:
    """`Tokenizer.tokenize` without a vocabulary (Moses en, aggressive dash splits, escaping; reference §3.2), for
    counting the words a vocabulary is learned from. Picklable for worker processes."""

    def __init__(self, lang: str = "en"):
        self.lang = lang
        self._init()

    def _init(self) -> None:
        from biogpt_train.data.tokenizer import moses_tokenizer  # sped-up, same output as sacremoses'

        self._moses = moses_tokenizer(self.lang)

    def tokenize(self, text: str) -> str:
        return self._moses.tokenize(text, aggressive_dash_splits=True, return_str=True, escape=True)

    def __getstate__(self):
        return {"lang": self.lang}

    def __setstate__(self, state):
        self.lang = state["lang"]
        self._init()


# --- word counts ----------------------------------------------------------------------------------------------------

def count_words(lines: Iterable[str], counts: dict[str, int] | None = None) -> dict[str, int]:
    """fastBPE `readText`: words are split on ' ' and newlines only; dict insertion order = first occurrence."""
    counts = {} if counts is None else counts
    for line in lines:
        for word in line.replace("\n", " ").split(" "):
            if word:
                counts[word] = counts.get(word, 0) + 1
    return counts


# --- learnbpe -------------------------------------------------------------------------------------------------------

def learn_bpe(
    word_counts: Mapping[str, int], n_merges: int, progress: Callable[[int], None] | None = None
) -> list[tuple[str, str, int]]:
    """fastBPE `learnbpe`: return up to `n_merges` (left, right, count) merges. `word_counts` must be in
    first-occurrence order (as `count_words` builds it)."""
    id_of: dict[str, int] = {}
    symbols: list[str] = []
    words: list[list[int]] = []
    counts: list[int] = []
    for word in unordered_map_order(word_counts):
        chars = list(word)
        chars[-1] += END_WORD
        ids = []
        for ch in chars:
            i = id_of.get(ch)
            if i is None:
                i = id_of[ch] = len(symbols)
                symbols.append(ch)
            ids.append(i)
        words.append(ids)
        counts.append(word_counts[word])

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, ids in enumerate(words):
        c = counts[wi]
        for pair in zip(ids, ids[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + c
            where.setdefault(pair, set()).add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str, int]] = []
    made: set[str] = set(symbols)
    skipped = 0
    while len(merges) < n_merges:
        best = _pop_best(heap, pair_count)
        if best is None:
            log.warning("learnbpe: no pair left after %d merges (asked for %d)", len(merges), n_merges)
            break
        (a, b), c = best
        new_sym = symbols[a] + symbols[b]
        new_id = len(symbols)
        symbols.append(new_sym)
        duplicate = new_sym in made
        if duplicate:
            skipped += 1
        else:
            made.add(new_sym)
            merges.append((symbols[a], symbols[b], c))
            if progress:
                progress(1)
        changed = _apply_merge(a, b, new_id, words, counts, where[(a, b)], pair_count, where)
        pair_count[(a, b)] = 0
        for pair in changed:
            n = pair_count[pair]
            if n > 0:
                heapq.heappush(heap, (-n, pair[0], pair[1]))
    if skipped:
        log.warning("learnbpe: skipped %d merges that rebuilt an existing symbol (fastBPE.apply would abort)", skipped)
    return merges


def _pop_best(heap: list, pair_count: dict) -> tuple[tuple[int, int], int] | None:
    """Highest count, then smallest (left id, right id): `find_maxp`. Stale heap entries are dropped lazily."""
    while heap:
        neg, a, b = heap[0]
        if pair_count.get((a, b)) == -neg and neg < 0:
            return (a, b), -neg
        heapq.heappop(heap)
    return None


def _apply_merge(a, b, new_id, words, counts, word_ids, pair_count, where) -> set:
    """Merge (a, b) left to right in every word that has it, updating neighbour pair counts like fastBPE."""
    changed = set()

    def change(pair, delta, wi):
        if pair in pair_count:
            pair_count[pair] += delta
        elif delta > 0:
            pair_count[pair] = delta
        else:
            return
        if delta > 0:
            where.setdefault(pair, set()).add(wi)
        changed.add(pair)

    for wi in list(word_ids):
        w = words[wi]
        if len(w) < 2:
            continue
        c = counts[wi]
        out: list[int] = []
        j, n = 0, len(w)
        while j < n:
            if j + 1 < n and w[j] == a and w[j + 1] == b:
                if out:
                    change((out[-1], a), -c, wi)
                    change((out[-1], new_id), c, wi)
                if j + 2 < n:
                    change((b, w[j + 2]), -c, wi)
                    change((new_id, w[j + 2]), c, wi)
                out.append(new_id)
                j += 2
            else:
                out.append(w[j])
                j += 1
        words[wi] = out
    return changed


def write_bpecodes(path: Path, merges: Iterable[tuple[str, str, int]]) -> None:
    from biogpt_train.utils import atomic_write

    text = "".join(f"{x} {y} {c}\n" for x, y, c in merges)
    atomic_write(Path(path), text)


# --- dict.txt -------------------------------------------------------------------------------------------------------

def bpe_token_counts(word_counts: Mapping[str, int], codes_path: Path, batch: int = 100_000) -> dict[str, int]:
    """Count BPE tokens over the corpus: segment each unique word once with fastBPE, weight by its count."""
    import fastBPE

    from biogpt_train.data.tokenizer import quiet_fastbpe  # silences fastBPE's "Loading codes" lines

    bpe = quiet_fastbpe(fastBPE, str(codes_path))
    words = list(word_counts)
    counts: dict[str, int] = {}
    for start in range(0, len(words), batch):
        chunk = words[start : start + batch]
        for word, pieces in zip(chunk, bpe.apply(chunk)):
            c = word_counts[word]
            for tok in pieces.split(" "):
                if tok:
                    counts[tok] = counts.get(tok, 0) + c
    return counts


def build_dictionary(word_counts: Mapping[str, int], codes_path: Path, padding_factor: int = 8):
    """fairseq-preprocess's dictionary of the BPE'd corpus: counts, then finalize(threshold=-1, nwords=-1, pad)."""
    from biogpt_train.data.dictionary import Dictionary

    d = Dictionary()
    for tok, c in bpe_token_counts(word_counts, codes_path).items():
        d.add_symbol(tok, n=c)
    d.finalize(threshold=-1, nwords=-1, padding_factor=padding_factor)
    return d


def main(argv: list[str] | None = None) -> None:
    """`python -m data_prep.bpe_learn learnbpe N FILE` prints codes to stdout, like `fast learnbpe N FILE`."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m data_prep.bpe_learn")
    p.add_argument("command", choices=["learnbpe", "getvocab"])
    p.add_argument("args", nargs="+")
    a = p.parse_args(argv)
    if a.command == "learnbpe":
        n, path = int(a.args[0]), a.args[1]
        with open(path, encoding="utf-8") as f:
            wc = count_words(f)
        for x, y, c in learn_bpe(wc, n):
            sys.stdout.write(f"{x} {y} {c}\n")
    else:
        with open(a.args[0], encoding="utf-8") as f:
            wc = count_words(f)
        for w, c in sorted(wc.items(), key=lambda kv: (-kv[1], kv[0].encode("utf-8"))):
            sys.stdout.write(f"{w} {c}\n")


if __name__ == "__main__":
    main()
