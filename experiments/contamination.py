"""Test-set contamination: shared word n-grams between a pretraining corpus and each task's test inputs.

    python -m experiments.contamination --corpus CORPUS [CORPUS ...] --tests hoc=PATH ddi=PATH [--n 13] \
        [--out report.md]

CORPUS: PubMed XML (.xml/.xml.gz), JSONL with title/abstract (or text) fields, a text file with one
document per line, or a binarized shard prefix (PREFIX.bin/.idx with dict.txt beside it).
A test PATH is a text file with one example per line (e.g. a prepared `test.x`), a prepared task
directory (its `test.x` is used), or a raw JSON file of records keyed by id (title/abstract/text/QUESTION/CONTEXTS
fields, e.g. ../shared/data/BC5CDR/raw/test_inputs.json or PubMedQA/test_set_inputs.json).

Words are lower-cased alphanumeric runs after HTML un-escaping, so cased PubMed text, lower-cased
task sources and Moses-escaped shards compare alike. Only the test n-grams are held in memory; the
corpus is streamed, so a full PubMed baseline can be checked.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterator

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(html.unescape(text).lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i:i + n])


# text fields of the raw task files (BioGPT's BC5CDR/KD-DTI/DDI JSON, PubMedQA's JSON); other fields are labels/ids
TEXT_FIELDS = ("title", "abstract", "text", "QUESTION", "CONTEXTS")


def read_test_docs(path: Path) -> list[str]:
    """One string per test example: lines of a text file, a prepared task directory's `test.x`, or the records of a
    raw JSON file keyed by document id (BC5CDR/KD-DTI/DDI `test_inputs.json`, PubMedQA `test_set_inputs.json`),
    whose TEXT_FIELDS are joined."""
    if path.is_dir():
        path = path / "test.x"
    if not path.exists():
        raise FileNotFoundError(f"test inputs not found: {path}")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        records = data.values() if isinstance(data, dict) else data
        docs = []
        for rec in records:
            parts = []
            for field in TEXT_FIELDS:
                value = rec.get(field) if isinstance(rec, dict) else None
                parts += value if isinstance(value, list) else [value] if isinstance(value, str) else []
            if not parts:
                raise ValueError(f"{path}: a record has none of the text fields {TEXT_FIELDS}")
            docs.append(" ".join(parts))
        return docs
    return path.read_text(encoding="utf-8").splitlines()


def iter_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """Yield (document id, text) for every document of one corpus source."""
    name = path.name
    if name.endswith((".xml", ".xml.gz")):
        from data_prep.pubmed_xml import iter_articles

        for article in iter_articles(path):
            yield f"PMID:{article.pmid}", f"{article.title} {article.abstract}"
    elif name.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                record = json.loads(line)
                text = record.get("text") or f"{record.get('title', '')} {record.get('abstract', '')}"
                yield str(record.get("id", record.get("pmid", lineno))), text
    elif Path(str(path) + ".idx").exists():
        yield from _iter_shard(path)
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                yield f"{name}:{lineno}", line


def _iter_shard(prefix: Path) -> Iterator[tuple[str, str]]:
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset

    dictionary = Dictionary.load(prefix.parent / "dict.txt")
    dataset = MMapIndexedDataset(str(prefix))
    for i in range(len(dataset)):
        yield f"{prefix.name}[{i}]", dictionary.string(dataset[i].tolist(), bpe_symbol="@@ ")


def find_overlaps(corpus_paths: list[Path], tests: dict[str, list[str]], n: int = 13) -> dict:
    index: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for task, docs in tests.items():
        for line_no, doc in enumerate(docs):
            for gram in set(ngrams(words(doc), n)):
                index[gram].append((task, line_no))
    hits: dict[str, dict[int, list[dict]]] = {task: defaultdict(list) for task in tests}
    corpus_docs = 0
    for path in corpus_paths:
        for doc_id, text in iter_corpus(path):
            corpus_docs += 1
            seen = set()
            for gram in ngrams(words(text), n):
                for task, line_no in index.get(gram, ()):
                    if (task, line_no) not in seen:
                        seen.add((task, line_no))
                        hits[task][line_no].append({"corpus_doc": doc_id, "ngram": " ".join(gram)})
    return {
        "n": n,
        "corpus_documents": corpus_docs,
        "tasks": {
            task: {
                "test_documents": len(tests[task]),
                "contaminated": len(hits[task]),
                "overlaps": {str(k): v for k, v in sorted(hits[task].items())},
            }
            for task in tests
        },
    }


def to_markdown(report: dict) -> str:
    lines = [
        f"# Test-set contamination ({report['n']}-gram overlap, {report['corpus_documents']} corpus documents)",
        "",
        "| task | test documents | with any overlap | % |",
        "|---|---:|---:|---:|",
    ]
    for task, r in report["tasks"].items():
        pct = 100.0 * r["contaminated"] / max(r["test_documents"], 1)
        lines.append(f"| {task} | {r['test_documents']} | {r['contaminated']} | {pct:.2f} |")
    for task, r in report["tasks"].items():
        for line_no, overlaps in r["overlaps"].items():
            docs = sorted({o["corpus_doc"] for o in overlaps})
            lines.append(f"\n- {task} test line {int(line_no) + 1}: {', '.join(docs[:10])}"
                         f"{' …' if len(docs) > 10 else ''} (e.g. “{overlaps[0]['ngram']}”)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", required=True, type=Path)
    parser.add_argument("--tests", nargs="+", required=True, metavar="TASK=PATH")
    parser.add_argument("--n", type=int, default=13)
    parser.add_argument("--out", type=Path, help="write the Markdown report here (and .json beside it)")
    args = parser.parse_args(argv)
    tests = {}
    for item in args.tests:
        if "=" not in item:
            parser.error(f"--tests takes TASK=PATH, got {item!r}")
        task, path = item.split("=", 1)
        tests[task] = read_test_docs(Path(path))
    report = find_overlaps(args.corpus, tests, args.n)
    markdown = to_markdown(report)
    print(markdown)
    if args.out:
        from biogpt_train.utils import atomic_write

        atomic_write(args.out, markdown)
        atomic_write(args.out.with_suffix(".json"), json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
