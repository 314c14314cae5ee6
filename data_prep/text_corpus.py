"""Readers for pretraining corpora that are not PubMed XML, yielding the same records as `pubmed_xml`.

- `jsonl`: one JSON object per line (e.g. ../shared/data/pretrain_corpus/ohsumed/ohsumed_abstracts.jsonl).
  `fields[0]` is the title, the other fields the abstract; `id_field` gives the document key.
- `txt`: one document per line (e.g. the sy-wada "one article per line" file); the whole line is the abstract.

Keys: a digit-only id is used as it is (PMIDs stay PMIDs); any other id, and every `txt` line, is keyed by a 63-bit
hash of its text, so exact duplicate lines collapse under `dedup` and the train/valid split stays a function of the
content. A line that is not valid JSON (or not an object) is a `Malformed` record (skipped and counted); bytes that are
not UTF-8 raise `InputError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

from data_prep.pubmed_xml import Article, InputError, Malformed, Record, norm_space, open_binary


def key_of(text: str) -> int:
    """Stable 63-bit key of a string (non-negative, fits int64)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open_binary(path) as f:
            for no, raw in enumerate(f, 1):
                try:
                    yield no, raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(f"invalid UTF-8 in {path}: line {no}, byte {err.start}") from None
    except EOFError as err:
        raise InputError(f"truncated gzip file {path}: {err}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}") from None


def iter_jsonl(path: str | Path, fields: Sequence[str] = ("title", "abstract"), id_field: str = "id") -> Iterator[Record]:
    path = Path(path)
    for no, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Malformed(no, f"invalid JSON on line {no}: {err.msg}")
            continue
        if not isinstance(obj, dict):
            yield Malformed(no, f"line {no} is a JSON {type(obj).__name__}, not an object")
            continue
        parts = [norm_space(str(obj.get(k) or "")) for k in fields]
        raw_id = str(obj.get(id_field, "")).strip()
        key = int(raw_id) if raw_id.isdigit() and len(raw_id) < 19 else key_of(raw_id or " ".join(parts))
        present = any(k in obj and obj[k] is not None for k in fields[1:])
        abstract = " ".join(p for p in parts[1:] if p) if present else None
        yield Article(key, parts[0] if parts else "", abstract, None)


def iter_txt(path: str | Path) -> Iterator[Record]:
    path = Path(path)
    for _, line in _lines(path):
        text = norm_space(line)
        if text:
            yield Article(key_of(text), "", text, None)
