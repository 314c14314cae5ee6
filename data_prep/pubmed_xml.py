"""Streaming reader for PubMed/MEDLINE XML (`PubmedArticleSet`, plain `.xml` or `.xml.gz`).

`iter_pubmed_xml(path)` yields one record per top-level element, in file order, holding only that element in
memory: `ElementTree.iterparse` plus clearing the root after every record, so a 30,000-article baseline file is never
held whole.

Records:
- `Article(pmid, title, abstract, revised)`: a `PubmedArticle` (or `PubmedBookArticle`). `abstract` is None when the
  item has no `Abstract`/`AbstractText`, "" when its AbstractText elements are all empty; the caller decides what to
  keep.
- `Deletion(pmids)`: a `DeleteCitation` block (NLM update files list PMIDs to remove).
- `Malformed(record, reason)`: an article we cannot use (no PMID, non-numeric PMID, no Article) — skipped and counted
  by the caller, never fatal.

Text decisions (documented in data_prep/README.md):
- inline markup (`<i>`, `<sup>`, `<sub>`, ...) keeps its text: "<i>TERT</i> gene" -> "TERT gene";
- all whitespace runs (newlines, tabs, NO-BREAK SPACE, ...) become one space — BioGPT's dict.txt has no token with a
  Unicode space in it, so its corpus was normalised the same way;
- structured abstracts keep their section labels as "LABEL: text" (`labels=True`, the default). (inferred) BioGPT's
  corpus had them: its dict.txt counts RESULTS 2.66M, METHODS 2.26M, CONCLUSIONS+CONCLUSION 2.75M times, capitalised
  words that almost only occur as PubMed section labels.

XML-level damage (truncated gzip, invalid UTF-8, mismatched tags) cannot be skipped by a streaming parser: it raises
`InputError` naming the file, the position and the last good PMID, and the caller fails that unit only.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union


class InputError(Exception):
    """A raw input file that cannot be read; the message names the file (and the record where known)."""


@dataclass(frozen=True)
class Article:
    pmid: int
    title: str
    abstract: str | None  # None: no Abstract/AbstractText at all; "": AbstractText present but empty
    revised: str | None  # "YYYY-MM-DD" from MedlineCitation/DateRevised, None when absent


@dataclass(frozen=True)
class Deletion:
    pmids: tuple[int, ...]


@dataclass(frozen=True)
class Malformed:
    record: int  # 1-based position of the element among the file's top-level records
    reason: str


Record = Union[Article, Deletion, Malformed]

# article tag -> the child that holds its PMID, title and abstract
_ARTICLE_BODY = {"PubmedArticle": "MedlineCitation", "PubmedBookArticle": "BookDocument"}
ARTICLE_TAGS = tuple(_ARTICLE_BODY)


def open_binary(path: Path) -> BinaryIO:
    """Open `.gz` files transparently (detected by magic bytes, not only by name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def norm_space(text: str) -> str:
    return " ".join(text.split())


def element_text(elem: ET.Element | None) -> str:
    """All text inside `elem`, inline markup included, whitespace normalised."""
    if elem is None:
        return ""
    return norm_space("".join(elem.itertext()))


def abstract_text(abstract: ET.Element | None, labels: bool = True) -> str | None:
    sections = [] if abstract is None else abstract.findall("AbstractText")
    if not sections:
        return None
    parts = []
    for at in sections:
        text = element_text(at)
        if not text:
            continue
        label = norm_space(at.get("Label") or "")
        parts.append(f"{label}: {text}" if labels and label else text)
    return " ".join(parts)


def parse_pmid(elem: ET.Element | None) -> int | None:
    if elem is None or elem.text is None:
        return None
    text = elem.text.strip()
    return int(text) if text.isdigit() else None


def date_of(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    y, m, d = (elem.findtext(k, "").strip() for k in ("Year", "Month", "Day"))
    if not y.isdigit():
        return None
    return f"{int(y):04d}-{int(m) if m.isdigit() else 1:02d}-{int(d) if d.isdigit() else 1:02d}"


def parse_article(elem: ET.Element, record: int, labels: bool = True) -> Article | Malformed:
    body_tag = _ARTICLE_BODY[elem.tag]
    body = elem.find(body_tag)
    if body is None:
        return Malformed(record, f"{elem.tag} without {body_tag}")
    pmid_el = body.find("PMID")
    if elem.tag == "PubmedBookArticle":
        title_el = body.find("ArticleTitle")
        if title_el is None:
            title_el = body.find("Book/BookTitle")
        abstract_el, revised = body.find("Abstract"), None
    else:
        art = body.find("Article")
        if art is None:
            return Malformed(record, f"no Article element (PMID {pmid_el.text if pmid_el is not None else '?'})")
        title_el, abstract_el = art.find("ArticleTitle"), art.find("Abstract")
        revised = date_of(body.find("DateRevised"))
    pmid = parse_pmid(pmid_el)
    if pmid is None:
        raw = None if pmid_el is None else pmid_el.text
        return Malformed(record, "missing PMID" if raw is None else f"invalid PMID {raw.strip()!r}")
    return Article(pmid, element_text(title_el), abstract_text(abstract_el, labels), revised)


def parse_deletion(elem: ET.Element, record: int) -> Deletion | Malformed:
    pmids = []
    for p in elem.findall("PMID"):
        pmid = parse_pmid(p)
        if pmid is None:
            return Malformed(record, f"DeleteCitation with invalid PMID {p.text!r}")
        pmids.append(pmid)
    return Deletion(tuple(pmids))


def _position_error(path: Path, err: ET.ParseError, record: int, last_pmid: int | None) -> InputError:
    line, col = err.position
    where = f"{path}: line {line}, column {col} (after record {record}, last PMID {last_pmid})"
    if err.code == 4:  # XML_ERROR_INVALID_TOKEN: tell invalid UTF-8 apart from other junk
        if _line_is_bad_utf8(path, line):
            return InputError(f"invalid UTF-8 in {where}")
    return InputError(f"malformed XML in {where}: {err}")


def _line_is_bad_utf8(path: Path, line_no: int) -> bool:
    try:
        with open_binary(path) as f:
            for i, raw in enumerate(f, 1):
                if i == line_no:
                    raw.decode("utf-8")
                    return False
    except UnicodeDecodeError:
        return True
    except (OSError, EOFError, zlib.error):
        return False
    return False


def iter_pubmed_xml(path: str | Path, labels: bool = True) -> Iterator[Record]:
    """Yield the records of one PubMed XML file in order; `InputError` (naming the file) on unreadable input."""
    path = Path(path)
    record, last_pmid = 0, None
    try:
        with open_binary(path) as f:
            depth, root = 0, None
            for event, elem in ET.iterparse(f, events=("start", "end")):
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag != "PubmedArticleSet":
                            raise InputError(f"{path}: root element is <{elem.tag}>, expected <PubmedArticleSet>")
                    depth += 1
                    continue
                depth -= 1
                if depth != 1:
                    continue
                record += 1
                if elem.tag in ARTICLE_TAGS:
                    rec = parse_article(elem, record, labels)
                    if isinstance(rec, Article):
                        last_pmid = rec.pmid
                    yield rec
                elif elem.tag == "DeleteCitation":
                    yield parse_deletion(elem, record)
                root.clear()  # drop the finished record: memory stays at one article
    except ET.ParseError as err:
        raise _position_error(path, err, record, last_pmid) from None
    except EOFError as err:
        raise InputError(f"truncated gzip file {path} (after record {record}, last PMID {last_pmid}): {err}") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"corrupt gzip file {path} (after record {record}, last PMID {last_pmid}): {err}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}") from None
