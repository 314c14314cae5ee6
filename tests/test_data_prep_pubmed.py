"""PubMed / abstract-corpus preparation: streaming XML, unit files, resume, merge semantics, bad input, BPE learning,
the Hydra entry point, and the ids in the shards against Tokenizer.encode on real data (../shared/data)."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIOGPT_BPE, BIOGPT_DICT, REPO, SHARED_DATA, require_shared
from data_prep import pubmed
from data_prep.bpe_learn import count_words, learn_bpe, std_hash, unordered_map_order
from data_prep.pubmed_xml import Article, InputError, iter_pubmed_xml

SAMPLE = REPO / "data_prep" / "samples" / "pubmed_sample.xml"
XML_DIR = SHARED_DATA / "pubmed_xml"


# --- helpers --------------------------------------------------------------------------------------------------------

def article_xml(pmid, title="A title.", abstract="Some abstract text.", revised=(2019, 5, 1), labels=None):
    if abstract is None:
        abs_xml = ""
    elif labels:
        abs_xml = "<Abstract>" + "".join(f'<AbstractText Label="{l}">{t}</AbstractText>' for l, t in labels) + "</Abstract>"
    else:
        abs_xml = f"<Abstract><AbstractText>{abstract}</AbstractText></Abstract>"
    rev = "" if revised is None else (f"<DateRevised><Year>{revised[0]}</Year><Month>{revised[1]:02d}</Month>"
                                      f"<Day>{revised[2]:02d}</Day></DateRevised>")
    return (f'<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID>{rev}<Article><ArticleTitle>{title}'
            f"</ArticleTitle>{abs_xml}</Article></MedlineCitation></PubmedArticle>\n")


def xml_file(path: Path, body: str) -> Path:
    path.write_text(f'<?xml version="1.0"?>\n<PubmedArticleSet>\n{body}</PubmedArticleSet>\n', encoding="utf-8")
    return path


def delete_xml(*pmids) -> str:
    return "<DeleteCitation>" + "".join(f'<PMID Version="1">{p}</PMID>' for p in pmids) + "</DeleteCitation>\n"


def read_docs(prefix: Path) -> list[list[int]]:
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset

    return [ds.tolist() for ds in MMapIndexedDataset(str(prefix))]


def read_all(out: Path) -> tuple[list, list]:
    return read_docs(out / "train"), read_docs(out / "valid")


def is_subsequence(sub: list, seq: list) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


@pytest.fixture(scope="module")
def biogpt_tok():
    require_shared("tokenizer", "BioGPT", "dict.txt")
    from biogpt_train.data.tokenizer import Tokenizer

    return Tokenizer.from_files(BIOGPT_DICT, BIOGPT_BPE)


def run_prep(raw, out, **kw):
    kw.setdefault("tokenizer_dir", BIOGPT_DICT.parent)
    kw.setdefault("progress", False)
    return pubmed.run(raw, out, **kw)


# --- XML streaming --------------------------------------------------------------------------------------------------

def test_shared_xml_samples_parse():
    require_shared("pubmed_xml")
    recs = [r for p in sorted(XML_DIR.glob("*/*.xml")) for r in iter_pubmed_xml(p)]
    arts = [r for r in recs if isinstance(r, Article)]
    assert len(arts) == 28 and all(isinstance(r, Article) for r in recs)
    by = {a.pmid: a for a in arts}
    assert by[12091962].abstract is None  # biopython pubmed1: title only
    assert sum(a.abstract is None for a in arts) == 1
    # structured abstract: labels kept in order, inline markup keeps its text, whitespace normalised
    assert by[29768149].abstract.startswith("BACKGROUND: In patients with mild asthma")
    assert " METHODS: " in by[29768149].abstract and " CONCLUSIONS: " in by[29768149].abstract
    assert "TERT gene" in by[27797938].title and "<" not in by[27797938].title
    assert "\xa0" not in by[23874253].abstract and "(4.4 %)" in by[23874253].abstract
    assert by[23874253].revised == "2013-07-24"


def test_labels_option_and_empty_abstract(tmp_path):
    f = xml_file(tmp_path / "a.xml", article_xml(1, labels=[("AIM", "Find."), ("RESULTS", "Found.")])
                 + article_xml(2, abstract="   ") + article_xml(3, abstract=None))
    with_labels = list(iter_pubmed_xml(f))
    without = list(iter_pubmed_xml(f, labels=False))
    assert with_labels[0].abstract == "AIM: Find. RESULTS: Found." and without[0].abstract == "Find. Found."
    assert with_labels[1].abstract == "" and with_labels[2].abstract is None


def test_streaming_memory_is_bounded(tmp_path):
    """12,000 articles: parse memory stays at about one article (elements are cleared as we go)."""
    body = "".join(article_xml(i, abstract="word " * 60) for i in range(1, 12001))
    f = xml_file(tmp_path / "big.xml", body)
    assert f.stat().st_size > 5_000_000
    tracemalloc.start()
    n = sum(1 for _ in iter_pubmed_xml(f))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 12000
    assert peak < 3_000_000, f"peak {peak} bytes while parsing a {f.stat().st_size}-byte file"


def test_malformed_records_are_skipped_and_counted(tmp_path):
    body = (article_xml(1) + "<PubmedArticle><MedlineCitation><Article><ArticleTitle>no pmid</ArticleTitle>"
            "</Article></MedlineCitation></PubmedArticle>\n" + article_xml("12a") + article_xml(4)
            + "<DeleteCitation><PMID>x</PMID></DeleteCitation>\n")
    recs = list(iter_pubmed_xml(xml_file(tmp_path / "m.xml", body)))
    assert [type(r).__name__ for r in recs] == ["Article", "Malformed", "Malformed", "Article", "Malformed"]
    assert recs[1].record == 2 and "missing PMID" in recs[1].reason and "'12a'" in recs[2].reason
    counts, deleted = Counter(), []
    docs = list(pubmed.iter_documents(tmp_path / "m.xml", pubmed.Options(), counts, deleted))
    assert [k for k, _ in docs] == [1, 4] and counts["skipped_malformed"] == 3


def test_broken_inputs_raise_errors_naming_file_and_place(tmp_path):
    good = article_xml(7) + article_xml(8)
    bad_utf8 = tmp_path / "bad_utf8.xml"
    bad_utf8.write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n' + good.encode()
                         + b"<PubmedArticle><MedlineCitation><PMID>9</PMID><Article><ArticleTitle>caf\xe9 \xff"
                         b"</ArticleTitle></Article></MedlineCitation></PubmedArticle>\n</PubmedArticleSet>\n")
    with pytest.raises(InputError, match=r"invalid UTF-8 in .*bad_utf8\.xml: line 5.*last PMID 8"):
        list(iter_pubmed_xml(bad_utf8))
    mismatched = xml_file(tmp_path / "tags.xml", good + "<PubmedArticle><MedlineCitation></Article>\n")
    with pytest.raises(InputError, match=r"malformed XML in .*tags\.xml: line 5"):
        list(iter_pubmed_xml(mismatched))
    data = gzip.compress(xml_file(tmp_path / "t.xml", good * 50).read_bytes())
    (tmp_path / "trunc.xml.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated gzip file .*trunc\.xml\.gz"):
        list(iter_pubmed_xml(tmp_path / "trunc.xml.gz"))
    (tmp_path / "root.xml").write_text("<Other><x/></Other>")
    with pytest.raises(InputError, match=r"root\.xml: root element is <Other>"):
        list(iter_pubmed_xml(tmp_path / "root.xml"))


def test_no_inputs_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(InputError, match="no input files in .*empty"):
        pubmed.find_inputs(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        pubmed.find_inputs(tmp_path / "missing")
    with pytest.raises(InputError, match="no input files"):
        pubmed.find_inputs(str(tmp_path / "empty" / "*.xml.gz"))


# --- merge semantics --------------------------------------------------------------------------------------------------

def test_supersede_and_delete_in_file_order(tmp_path, biogpt_tok):
    raw = tmp_path / "raw"
    raw.mkdir()
    xml_file(raw / "u0001.xml", article_xml(1, abstract="First one.") + article_xml(2, abstract="Old two.")
             + article_xml(3, abstract="Three.") + article_xml(4, abstract="Four."))
    xml_file(raw / "u0002.xml", article_xml(2, abstract="New two.") + delete_xml(3, 4))
    xml_file(raw / "u0003.xml", article_xml(4, abstract="Four is back.") + article_xml(5, abstract=None))
    out = tmp_path / "out"
    s = run_prep(raw, out, options={"valid_fraction": 0.0, "valid_min_docs": 0})
    train, valid = read_all(out)
    assert valid == []
    enc = lambda t: biogpt_tok.encode(f"A title. {t}") + [2]  # noqa: E731
    assert train == [enc("First one."), enc("New two."), enc("Four is back.")]
    assert s["merge"]["superseded"] == 2 and s["merge"]["deleted"] == 1
    assert s["corpus"]["skipped_no_abstract"] == 1 and s["corpus"]["deletions_listed"] == 2


def test_select_documents_unit_semantics():
    keys = [np.array([1, 2, 2, 3]), np.array([3, 4]), np.array([5])]
    deleted = [np.array([2]), np.array([1, 5]), np.array([], dtype=np.int64)]
    masks, stats = pubmed.select_documents(keys, deleted, dedup=True)
    # 2 deleted in unit 0 (both copies: one superseded, the last deleted); 3 superseded by unit 1;
    # 1 deleted by unit 1; 5 appears in unit 2 after its deletion in unit 1 -> kept
    assert [m.tolist() for m in masks] == [[False, False, False, False], [True, True], [True]]
    assert stats == {"superseded": 2, "deleted": 2}


def test_split_is_per_key_and_deterministic():
    keys = np.arange(1, 200001, dtype=np.int64)
    v = pubmed.split_valid(keys, 0.01, 0, seed=0)
    assert 0.009 < v.mean() < 0.011
    # a key's side does not depend on the other keys present
    assert (pubmed.split_valid(keys[::7], 0.01, 0, 0) == v[::7]).all()
    assert (pubmed.split_valid(keys, 0.01, 0, seed=1) != v).any()
    small = pubmed.split_valid(np.arange(10, dtype=np.int64), 0.0, 5, 0)
    assert small.sum() == 5


# --- whole pipeline on real data ----------------------------------------------------------------------------------------

def test_shared_xml_and_sample_ids_equal_tokenizer_encode(tmp_path, biogpt_tok):
    # the real samples (8 files) plus the shipped sample, through one run
    raw = _units_raw(tmp_path)
    out = tmp_path / "out"
    s = run_prep(raw, out)
    expected = {}
    for p in pubmed.find_inputs(raw):
        for key, text in pubmed.iter_documents(p, pubmed.Options(), Counter(), []):
            expected[key] = biogpt_tok.encode(text) + [2]  # the sample's revision of 90100004 replaces the first
    del expected[90100010]  # listed in the sample's DeleteCitation
    train, valid = read_all(out)
    assert sorted(map(tuple, train + valid)) == sorted(map(tuple, expected.values()))
    assert s["merge"]["superseded"] == 1 and s["merge"]["deleted"] == 1
    assert s["kept"] == s["docs_written"] == 28 - 1 + 50 and s["skipped"] == {"no_abstract": 3}
    m = json.loads((out / "manifest.json").read_text())
    assert m["dictionary"]["sha256"] == hashlib.sha256(BIOGPT_DICT.read_bytes()).hexdigest()
    assert m["dictionary"]["vocab_size"] == 42384
    assert {i["name"] for i in m["inputs"]} == {p.name for p in raw.iterdir()}
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    outs = {o["path"]: o for o in m["outputs"]}
    assert set(outs) == {"train.bin", "train.idx", "valid.bin", "valid.idx", "dict.txt", "bpecodes"}
    assert outs["train.bin"]["sha256"] == hashlib.sha256((out / "train.bin").read_bytes()).hexdigest()
    assert m["counts"]["merge"]["train_docs"] == len(train) and m["settings"]["options"]["dedup"] is True
    assert (out / "dict.txt").read_bytes() == BIOGPT_DICT.read_bytes()


def _encode_all(texts):
    from biogpt_train.data.tokenizer import Tokenizer

    tok = Tokenizer.from_files(BIOGPT_DICT, BIOGPT_BPE)
    return [tok.encode(t) + [2] for t in texts]


@pytest.mark.slow
def test_8k_abstract_corpus_every_document(tmp_path):
    """~8.1k real abstracts (OHSUMED jsonl + sy-wada txt) with workers=2: every document's ids equal
    Tokenizer.encode(text) + [2], in input order within each split."""
    require_shared("pretrain_corpus", "ohsumed", "ohsumed_abstracts.jsonl")
    require_shared("tokenizer", "BioGPT", "dict.txt")
    raw = str(SHARED_DATA / "pretrain_corpus" / "*" / "*")
    t0 = time.perf_counter()
    s = run_prep(raw, tmp_path / "out", workers=2)
    t_prep = time.perf_counter() - t0
    inputs = pubmed.find_inputs(raw)
    assert [p.name for p in inputs] == ["PubMedAbstract_1MB.dedup.txt", "ohsumed_abstracts.jsonl"]
    docs = {}
    for p in inputs:
        for key, text in pubmed.iter_documents(p, pubmed.Options(), Counter(), []):
            docs[key] = text  # last occurrence wins
    assert len(docs) == s["merge"]["train_docs"] + s["merge"]["valid_docs"] >= 8000
    chunks = [list(docs.values())[i::2] for i in range(2)]
    with mp.get_context("fork").Pool(2) as pool:
        a, b = pool.map(_encode_all, chunks)
    expected = [x for pair in zip(a, b) for x in pair] + a[len(b):]
    train, valid = read_all(tmp_path / "out")
    assert sorted(map(tuple, train + valid)) == sorted(map(tuple, expected))
    assert is_subsequence(train, expected) and is_subsequence(valid, expected)
    assert s["merge"]["train_tokens"] + s["merge"]["valid_tokens"] == sum(map(len, expected))
    print(f"\n8k corpus: prep {t_prep:.1f}s ({s['docs_per_s']} docs/s, workers=2), total {time.perf_counter() - t0:.1f}s")


def test_gzip_input_gives_the_same_shards(tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "pubmed_sample.xml.gz").write_bytes(gzip.compress(SAMPLE.read_bytes()))
    run_prep(SAMPLE, tmp_path / "a")
    run_prep(tmp_path / "gz", tmp_path / "b")
    for f in ("train.bin", "train.idx", "valid.bin", "valid.idx"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


# --- resume / failures --------------------------------------------------------------------------------------------------

def _units_raw(tmp_path) -> Path:
    require_shared("pubmed_xml")
    raw = tmp_path / "raw"
    raw.mkdir()
    for p in XML_DIR.glob("*/*.xml"):
        (raw / p.name).symlink_to(p)
    (raw / "shipped_sample.xml").symlink_to(SAMPLE)  # the NEUVancouver file is also called pubmed_sample.xml
    return raw


def _outputs(out: Path) -> dict:
    return {f: (out / f).read_bytes() for f in ("train.bin", "train.idx", "valid.bin", "valid.idx", "dict.txt")}


def test_killed_run_resumes_to_identical_shards(tmp_path, monkeypatch):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    raw = _units_raw(tmp_path)
    run_prep(raw, tmp_path / "clean")
    out = tmp_path / "out"
    real, calls = pubmed.process_unit, []

    def dying(path, parts, *a, **k):
        if len(calls) == 3:
            # a half-written unit directory of a SIGKILLed process stays behind
            (parts / f".{path.name}.tmp-99999").mkdir(parents=True)
            (parts / f".{path.name}.tmp-99999" / "part.bin").write_bytes(b"\0" * 10)
            raise KeyboardInterrupt("killed")
        calls.append(path.name)
        return real(path, parts, *a, **k)

    monkeypatch.setattr(pubmed, "process_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        run_prep(raw, out)
    assert sorted(d.name for d in (out / "parts").iterdir() if not d.name.startswith(".")) == sorted(calls)
    assert not (out / "manifest.json").exists() and not (out / "train.idx").exists()
    monkeypatch.setattr(pubmed, "process_unit", real)
    s = run_prep(raw, out)
    assert s["units_already_complete"] == 3 and s["units_processed"] == 6
    assert not [d for d in (out / "parts").iterdir() if d.name.startswith(".")]
    assert _outputs(out) == _outputs(tmp_path / "clean")


def test_interrupted_merge_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    out = tmp_path / "out"
    run_prep(SAMPLE, out)
    before = _outputs(out)

    def boom(*a, **k):
        raise KeyboardInterrupt("killed during merge")

    monkeypatch.setattr(pubmed, "merge_units", boom)
    with pytest.raises(KeyboardInterrupt):
        run_prep(SAMPLE, out)
    from biogpt_train.data.indexed_dataset import dataset_exists

    assert not (out / "manifest.json").exists()
    assert not dataset_exists(out / "train") and not dataset_exists(out / "valid")
    monkeypatch.undo()
    run_prep(SAMPLE, out)
    assert _outputs(out) == before


def test_stale_unit_is_redone_when_settings_change(tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    out = tmp_path / "out"
    run_prep(SAMPLE, out)
    s = run_prep(SAMPLE, out, options={"abstract_labels": False})
    assert s["units_processed"] == 1 and s["units_already_complete"] == 0
    s = run_prep(SAMPLE, out, options={"abstract_labels": False})
    assert s["units_processed"] == 0 and s["units_already_complete"] == 1


def test_truncated_gz_fails_its_unit_only(tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    raw = tmp_path / "raw"
    raw.mkdir()
    data = gzip.compress(SAMPLE.read_bytes())
    (raw / "a_good.xml.gz").write_bytes(data)
    (raw / "b_trunc.xml.gz").write_bytes(data[: len(data) // 3])
    xml_file(raw / "c_good.xml", article_xml(5))
    out = tmp_path / "out"
    with pytest.raises(pubmed.DataPrepError, match=r"1 unit\(s\) failed.*b_trunc\.xml\.gz: truncated gzip file"):
        run_prep(raw, out)
    assert sorted(d.name for d in (out / "parts").iterdir()) == ["a_good.xml.gz", "c_good.xml"]
    assert not (out / "train.idx").exists() and not (out / "manifest.json").exists()
    with pytest.raises(pubmed.DataPrepError, match=r"cannot merge: 1 of 3 units.*b_trunc"):
        run_prep(raw, out, merge_only=True)
    (raw / "b_trunc.xml.gz").write_bytes(data)  # fixed input: only that unit runs
    s = run_prep(raw, out)
    assert s["units_processed"] == 1 and s["units_already_complete"] == 2


def test_file_range_jobs_then_merge_only_equal_one_run(tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    raw = _units_raw(tmp_path)
    run_prep(raw, tmp_path / "one")
    out = tmp_path / "cluster"
    for rng in ("0:4", "4:"):
        s = run_prep(raw, out, file_range=rng)
        assert "merge" not in s and not (out / "train.idx").exists()
    s = run_prep(raw, out, merge_only=True)
    assert s["units_processed"] == 0
    assert _outputs(out) == _outputs(tmp_path / "one")


def test_revised_before_filter(tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    f = xml_file(tmp_path / "r.xml", article_xml(1, revised=(2020, 12, 31)) + article_xml(2, revised=(2021, 1, 1))
                 + article_xml(3, revised=None))
    s = run_prep(f, tmp_path / "out", options={"revised_before": "2021-01-01", "valid_min_docs": 0})
    assert s["kept"] == 2 and s["skipped"] == {"revised_after_cutoff": 1}


def test_jsonl_and_txt_inputs(tmp_path, biogpt_tok):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text(json.dumps({"id": "17", "title": "T one.", "abstract": "A one."}) + "\n"
                                 + "{not json\n" + json.dumps({"id": "18", "title": "No abstract."}) + "\n"
                                 + json.dumps({"id": "19", "title": "T", "abstract": ""}) + "\n")
    (raw / "b.txt").write_text("Line one is a document.\n\nLine two.\nLine one is a document.\n")
    s = run_prep(raw, tmp_path / "out", options={"valid_min_docs": 0, "valid_fraction": 0.0})
    assert s["skipped"] == {"malformed": 1, "no_abstract": 1, "empty_abstract": 1}
    train, _ = read_all(tmp_path / "out")
    assert train == [biogpt_tok.encode(t) + [2] for t in ("T one. A one.", "Line two.", "Line one is a document.")]
    assert s["merge"]["superseded"] == 1  # the repeated txt line (same text -> same key)
    bad = raw / "c.txt"
    bad.write_bytes(b"fine\nnot \xff fine\n")
    with pytest.raises(pubmed.DataPrepError, match=r"invalid UTF-8 in .*c\.txt: line 2"):
        run_prep(raw, tmp_path / "out2")


# --- BPE learning ----------------------------------------------------------------------------------------------------

def test_std_hash_matches_libstdcxx():
    # values printed by a g++ 12 program: std::hash<std::string>{}(s)
    assert std_hash(b"") == 6142509188972423790
    assert std_hash(b"abc") == 3663726644998027833
    assert std_hash(b"hello world!") == 6594337730806245023


def test_learnbpe_matches_fastbpe_binary():
    # `fast learnbpe 10 tiny.txt` (glample/fastBPE, g++ 12): C++ then prints "b a</w> 0" lines; we stop instead
    wc = count_words(["aa ab ba", "ab ab ab"])
    assert learn_bpe(wc, 10) == [("a", "b</w>", 4), ("b", "a</w>", 1), ("a", "a</w>", 1)]
    # the shipped sample's title+abstract lines, 2000 merges (many ties at counts 3-4, broken by fastBPE's symbol ids,
    # which come from libstdc++'s unordered_map order): sha256 of `fast learnbpe 2000 lines.txt`. Regenerate with the
    # C++ binary if the sample changes.
    lines = [f"{a.title} {a.abstract}\n" for a in iter_pubmed_xml(SAMPLE) if isinstance(a, Article) and a.abstract]
    codes = "".join(f"{x} {y} {c}\n" for x, y, c in learn_bpe(count_words(lines), 2000))
    assert codes.count("\n") == 2000
    assert hashlib.sha256(codes.encode()).hexdigest() == \
        "a0268483e23047eb23dc48a3287b547be2a04e92ec24d13e450f69517ba88517"


def test_unordered_map_order_is_a_permutation():
    keys = [f"w{i}" for i in range(5000)]
    order = unordered_map_order(keys)
    assert sorted(order) == sorted(keys) and order != keys


def test_learned_vocabulary_end_to_end(tmp_path):
    """bpe.learn=true on the shipped sample: codes load in fastBPE, dict.txt equals fairseq-preprocess's dictionary of
    the BPE'd corpus (padding 8), the shards use it, and no external file is needed."""
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer

    out = tmp_path / "out"
    s = pubmed.run(SAMPLE, out, tokenizer_dir=tmp_path / "nowhere", bpe={"learn": True, "merges": 800},
                   progress=False)
    codes = (out / "bpecodes").read_text().splitlines()
    assert len(codes) == 800
    tok = Tokenizer.from_files(out / "dict.txt", out / "bpecodes")
    assert len(tok.dictionary) % 8 == 0
    texts = [t for _, t in pubmed.iter_documents(SAMPLE, pubmed.Options(), Counter(), [])]
    ref = Dictionary.build(tok.bpe_encode_batch(texts), padding_factor=8)
    # dict.txt holds symbols[4:] with counts (the specials' counts are not saved)
    assert ref.symbols == tok.dictionary.symbols and ref.count[4:] == tok.dictionary.count[4:]
    train, valid = read_all(out)
    assert s["unk_tokens"] == 0 and all(3 not in d for d in train + valid)
    assert len(train) + len(valid) == 48
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["bpe"]["learn"] is True and m["dictionary"]["path"] == str((out / "dict.txt").resolve())
    # rerun reuses the learned files
    t = (out / "bpecodes").stat().st_mtime_ns
    pubmed.run(SAMPLE, out, tokenizer_dir=tmp_path / "nowhere", bpe={"learn": True, "merges": 800}, progress=False)
    assert (out / "bpecodes").stat().st_mtime_ns == t


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(pubmed.DataPrepError, match=r"lacks .*dict\.txt.*data_prep\.download biogpt_tokenizer"):
        pubmed.run(SAMPLE, tmp_path / "out", tokenizer_dir=tmp_path / "none", progress=False)


# --- Hydra entry point -------------------------------------------------------------------------------------------------

def test_hydra_cli_writes_only_under_out_dir(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "data_prep", "dataset=pubmed", f"raw_dir={SAMPLE}", f"out_dir={out}",
                        "bpe.learn=true", "bpe.merges=300", "progress=false", "dataset.valid_fraction=0.1"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "merged: train" in r.stdout
    assert list(cwd.iterdir()) == []
    assert (out / ".hydra" / "config.yaml").exists() and (out / "manifest.json").exists()
    r = subprocess.run([sys.executable, "-m", "data_prep", "dataset=pubmed", f"raw_dir={tmp_path / 'nothing'}",
                        f"out_dir={tmp_path / 'o2'}", "progress=false"], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "raw_dir" in r.stderr and "does not exist" in r.stderr


def test_config_composes_for_every_dataset():
    from hydra import compose, initialize_config_dir

    from data_prep.__main__ import CONF_DIR, DATASETS, dataset_name

    names = sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml"))
    assert set(names) == set(DATASETS)
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        for name in names:
            cfg = compose(config_name="config", overrides=[f"dataset={name}", "raw_dir=r", "out_dir=o"])
            assert dataset_name(cfg) == name and cfg.workers == 1 and cfg.bpe.merges == 40000
        cfg = compose(config_name="config", overrides=["dataset=pubmed", "raw_dir=r", "out_dir=o", "file_range=0:10"])
        assert pubmed.parse_file_range(cfg.file_range, 100) == slice(0, 10)
        pubmed.Options.from_dict(cfg.dataset)  # every key of pubmed.yaml is a known option


def test_file_parallel_workers_equal_sequential(tmp_path):
    """workers=2 with many files: whole files per worker process; same bytes as workers=1; a broken file fails alone."""
    require_shared("tokenizer", "BioGPT", "dict.txt")
    raw = _units_raw(tmp_path)
    run_prep(raw, tmp_path / "seq")
    s = run_prep(raw, tmp_path / "par", workers=2)
    assert s["units_processed"] == 9
    assert _outputs(tmp_path / "par") == _outputs(tmp_path / "seq")
    data = gzip.compress(SAMPLE.read_bytes())
    (raw / "zz_trunc.xml.gz").write_bytes(data[:4000])
    with pytest.raises(pubmed.DataPrepError, match=r"zz_trunc\.xml\.gz: truncated gzip"):
        run_prep(raw, tmp_path / "par2", workers=2)
    assert len([d for d in (tmp_path / "par2" / "parts").iterdir()]) == 9


def test_binarize_lines_workers_and_empty_lines(tmp_path, biogpt_tok):
    from data_prep.binarize import binarize_lines

    lines = ["Naloxone reverses the antihypertensive effect of clonidine.", "", "p < 0.05 & [CI] 'x'"] * 70
    s1 = binarize_lines(lines, biogpt_tok, tmp_path / "w1", 1, chunk_size=16)
    s2 = binarize_lines(iter(lines), biogpt_tok, tmp_path / "w2", 2, chunk_size=16)
    assert s1["docs"] == s2["docs"] == 210 and s1["tokens"] == s2["tokens"]
    assert read_docs(tmp_path / "w1") == [biogpt_tok.encode(t) + [2] for t in lines]
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w1{ext}").read_bytes() == (tmp_path / f"w2{ext}").read_bytes()
    assert read_docs(tmp_path / "w1")[1] == [2]
