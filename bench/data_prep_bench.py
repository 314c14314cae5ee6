"""data_prep throughput: abstracts/s and tokens/s of `python -m data_prep dataset=pubmed` with 1 and 2 workers on
real abstracts (../shared/data/pretrain_corpus when present, else the shipped sample), next to
`transformers.BioGptTokenizer` encoding the same texts in one process; plus PubMed XML parsing alone, and the
full-baseline estimate that data_prep/README.md quotes.

"units" = parse + Moses + BPE + write the per-file parts (the part that scales with workers); "end to end" adds the
merge into train/valid and the manifest. Nothing is asserted; the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SAMPLE = REPO / "data_prep" / "samples" / "pubmed_sample.xml"
BASELINE_DOCS = 15_000_000      # BioGPT's corpus: ~15M title+abstract items (reference §4)
BASELINE_RECORDS = 36_000_000   # records in ~1,200 baseline files (~30k each), about half without an abstract
BASELINE_XML_GB = 216           # assumed: ~6 KB of uncompressed XML per record (refine with a real baseline file)


def _corpus(tmp: Path, quick: bool) -> tuple[Path, str]:
    """A raw_dir with the benchmark texts (jsonl), and its description."""
    from data_prep import pubmed

    src = [SHARED / "pretrain_corpus" / "ohsumed" / "ohsumed_abstracts.jsonl",
           SHARED / "pretrain_corpus" / "sy-wada" / "PubMedAbstract_1MB.dedup.txt"]
    raw = tmp / "raw"
    raw.mkdir()
    limit = 600 if quick else None
    if src[0].exists():
        texts = []
        for p in src:
            if p.exists():
                texts += [t for _, t in pubmed.iter_documents(p, pubmed.Options(), Counter(), [])]
        what = "OHSUMED + sy-wada abstracts (../shared/data/pretrain_corpus)"
    else:
        texts = [t for _, t in pubmed.iter_documents(SAMPLE, pubmed.Options(), Counter(), [])] * 20
        what = "the shipped sample (x20)"
    texts = texts[:limit] if limit else texts
    with open(raw / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i + 1), "title": "", "abstract": t}) + "\n")
    return raw, f"{len(texts):,} {what}"


def _tokenizer_dir(tmp: Path) -> tuple[Path, str]:
    d = SHARED / "tokenizer" / "BioGPT"
    if (d / "dict.txt").exists() and (d / "bpecodes").exists():
        return d, "BioGPT dict.txt + bpecodes"
    from data_prep import pubmed

    out = tmp / "learned"
    pubmed.run(SAMPLE, out, bpe={"learn": True, "merges": 2000}, progress=False)
    return out, "vocabulary learned on the shipped sample (BioGPT's files not found)"


def _xml_parse_rate(tmp: Path, quick: bool) -> tuple[float, float]:
    """(records/s, MB/s) of the streaming parser alone, on real PubMed records (full metadata) when present."""
    from data_prep.pubmed_xml import iter_pubmed_xml

    real = SHARED / "pubmed_xml" / "NEUVancouver_DBMSPracticum2" / "pubmed_sample.xml"
    src = real if real.exists() else SAMPLE
    text = src.read_text(encoding="utf-8")
    end = text.index("<DeleteCitation>") if "<DeleteCitation>" in text else text.rindex("</PubmedArticleSet>")
    body = text[text.index("<PubmedArticle>") : end]
    reps = 20 if quick else 200
    f = tmp / "parse.xml"
    f.write_text('<?xml version="1.0"?>\n<PubmedArticleSet>\n' + body * reps + "</PubmedArticleSet>\n", encoding="utf-8")
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_pubmed_xml(f))
    dt = time.perf_counter() - t0
    return n / dt, f.stat().st_size / dt / 1e6


def run(quick: bool = False) -> str:
    from data_prep import pubmed

    title = "## data_prep: abstracts/s and tokens/s (`python -m data_prep dataset=pubmed`), vs BioGptTokenizer"
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        raw, what = _corpus(tmp, quick)
        tok_dir, tok_what = _tokenizer_dir(tmp)
        results = {}
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            t0 = time.perf_counter()
            s = pubmed.run(raw, out, tokenizer_dir=tok_dir, workers=workers, progress=False)
            total = time.perf_counter() - t0
            results[workers] = s
            docs, toks = s["docs_written"], s["tokens_written"]
            rows.append(f"| data_prep units, {workers} worker{'s' if workers > 1 else ''} | {docs:,} | "
                        f"{s['docs_per_s']:,.0f} | {s['tokens_per_s']:,.0f} | {s['docs_per_s'] / workers:,.0f} |")
            rows.append(f"| data_prep end to end (+ merge, manifest), {workers} worker{'s' if workers > 1 else ''} | "
                        f"{docs:,} | {docs / total:,.0f} | {toks / total:,.0f} | {docs / total / workers:,.0f} |")
        texts = [t for _, t in pubmed.iter_documents(raw / "corpus.jsonl", pubmed.Options(), Counter(), [])]
        hf_rate = None
        try:
            from transformers import BioGptTokenizer

            from biogpt_train.data.tokenizer import write_hf_vocab

            vocab, merges = write_hf_vocab(tok_dir / "dict.txt", tok_dir / "bpecodes", tmp / "hf")
            hf = BioGptTokenizer(str(vocab), str(merges))
            t0 = time.perf_counter()
            ids = hf(texts, add_special_tokens=False)["input_ids"]
            dt = time.perf_counter() - t0
            hf_tokens = sum(len(i) + 1 for i in ids)  # + </s>, as in the shards
            hf_rate = len(texts) / dt
            rows.append(f"| transformers BioGptTokenizer, 1 process | {len(texts):,} | {hf_rate:,.0f} | "
                        f"{hf_tokens / dt:,.0f} | {hf_rate:,.0f} |")
            if hf_tokens != results[1]["tokens_written"]:
                notes.append(f"token counts differ: ours {results[1]['tokens_written']:,}, HF {hf_tokens:,}")
        except ImportError as err:
            notes.append(f"transformers not available ({err}); no reference row")
        parse_rate, parse_mb = _xml_parse_rate(tmp, quick)
    per_core = results[1]["docs_per_s"]
    lines = [title, "", f"Corpus: {what}; tokenizer: {tok_what}; {os.cpu_count()} CPU(s) visible.", "",
             "| pipeline | documents | abstracts/s | tokens/s | abstracts/s per worker |", "|---|---:|---:|---:|---:|",
             *rows, ""]
    if hf_rate:
        lines.append(f"Ratio (units, 1 worker / BioGptTokenizer): **{per_core / hf_rate:.2f}x**; "
                     f"2 workers: **{results[2]['docs_per_s'] / hf_rate:.2f}x**.")
    parse_h = BASELINE_XML_GB * 1000 / parse_mb / 3600
    encode_h = BASELINE_DOCS / per_core / 3600
    core_h = encode_h + parse_h
    lines += [
        f"PubMed XML parsing alone (real records, full metadata): {parse_rate:,.0f} records/s, {parse_mb:,.1f} MB/s "
        "(one core, in the main process while workers encode).",
        "",
        f"Full-baseline estimate (~{BASELINE_DOCS / 1e6:.0f}M abstracts, ~{BASELINE_RECORDS / 1e6:.0f}M records, "
        f"~{BASELINE_XML_GB} GB of XML in ~1,200 files): encoding {BASELINE_DOCS / 1e6:.0f}M / {per_core:,.0f} "
        f"abstracts/s ≈ {encode_h:,.1f} core-hours + parsing ≈ {parse_h:,.1f} core-hours ≈ **{core_h:,.1f} "
        f"core-hours**: ≈ {core_h / 8:,.1f} h with workers=8 on one node, ≈ {core_h / 64:,.1f} h as file_range jobs "
        "on 64 cores, plus the merge (I/O bound, minutes).",
    ]
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
