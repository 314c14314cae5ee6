"""Scoring the gold targets themselves, built from ../shared/data with the reference's template rules (§7.1-7.3).

The reference (§7.6) says gold targets do not score 100 everywhere: names containing " and " are cut at the last
" and ", and BC5CDR maps names through the corpus-wide entity map. These tests pin the values on the splits we have.
"""

import json
import re

import pytest

from biogpt_train.scoring import score
from tests.conftest import require_shared

pytestmark = pytest.mark.shared_data

P9 = " ".join(f"learned{i}" for i in range(1, 10))


def _content(doc):
    # rebuild_data.py: title + (" " if the title ends in a non-word character else ". ") + abstract, lowercased;
    # DDI has no title: the abstract, stripped, newlines -> spaces, lowercased
    if "title" not in doc:
        return doc["abstract"].strip().replace("\n", " ").lower()
    sep = " " if re.search(r"\W$", doc["title"]) else ". "
    return (doc["title"] + sep + doc["abstract"]).lower()


def _relis_lines(gold):
    """Decoded-looking lines (source, 9 prompt tokens, target) for every document with triples, in JSON order."""
    lines = []
    for doc in gold.values():
        if not doc["triples"]:
            continue
        content = _content(doc)
        triples = sorted(doc["triples"], key=lambda t: content.find(t["drug"]))
        target = "; ".join(f"the interaction between {t['drug'].lower()} and {t['target'].lower()} is "
                           f"{t['interaction'].lower()}" for t in triples) + "."
        lines.append(f"{content} {P9} {target}")
    return lines


def test_ddi_valid_gold_targets_score_100():
    path = require_shared("DDI", "raw", "valid.json")
    lines = _relis_lines(json.loads(path.read_text(encoding="utf-8")))
    assert len(lines) == 41  # 50 documents, 9 without triples dropped
    r = score("ddi", lines, path)
    assert r["docs"] == 41 and r["failed_lines"] == 0
    assert r["precision"] == r["recall"] == r["f1"] == 100.0
    assert r["corpus"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0}


def test_kd_dti_valid_gold_targets_lose_the_names_with_and():
    path = require_shared("KD-DTI", "raw", "valid.json")
    gold = json.loads(path.read_text(encoding="utf-8"))
    r = score("kd_dti", _relis_lines(gold), path)
    assert r["docs"] == 1000 and r["failed_lines"] == 0
    # Below 100 only because of the greedy " and " split (the reference measured 99.83 on the test split).
    # On valid exactly one document (25974391: two triples, one with target "Bromodomain and PHD finger
    # containing 1 (BRPF1)") is cut at the wrong " and ", scoring P = R = 0.5 -> average 1 - 0.5/1000.
    assert 99 < r["f1"] < 100
    assert r["precision"] == pytest.approx(99.95) and r["recall"] == pytest.approx(99.95)
    assert r["f1"] == pytest.approx(99.95)
    names_with_and = [t for t in gold["25974391"]["triples"] if " and " in t["target"]]
    assert names_with_and


def test_kd_dti_valid_gold_targets_in_the_ablation_formats():
    from biogpt_train.scoring.formats import render_target

    path = require_shared("KD-DTI", "raw", "valid.json")
    gold = json.loads(path.read_text(encoding="utf-8"))
    results = {}
    for fmt in ("is-of", "htr", "svo"):
        lines = [f"src {P9} " + render_target([(t["drug"], t["target"], t["interaction"]) for t in d["triples"]], fmt)
                 for d in gold.values() if d["triples"]]
        results[fmt] = score("kd_dti", lines, path, target_format=fmt)["f1"]
    assert results["is-of"] == 100.0 and results["htr"] == 100.0
    # svo is lossy by construction: "other" and "other/unknown" share the verb "randomly works with"
    assert 99 < results["svo"] < 100


def _longest_names(name2id):
    """unify_ent2id(method='max'): the longest mention per id, the first seen on ties."""
    id2name = {}
    for name, cid in name2id.items():
        if cid not in id2name or len(name) > len(id2name[cid]):
            id2name[cid] = name
    return id2name


def test_bc5cdr_dev_gold_targets_score_below_100():
    raw = require_shared("BC5CDR", "raw", "valid.json")
    entities = require_shared("BC5CDR", "raw", "valid.entities.json")
    pubtator = require_shared("BC5CDR", "CDR_Data", "CDR.Corpus.v010516", "CDR_DevelopmentSet.PubTator.txt")
    docs = json.loads(raw.read_text(encoding="utf-8"))
    lines, pmids = [], []
    for pmid, doc in docs.items():
        chem, dis = _longest_names(doc["chemical2id"]), _longest_names(doc["disease2id"])
        target = "; ".join(f"the relation between {chem[r['chemical']]} and {dis[r['disease']]} exists"
                           for r in doc["relations"]) + "."
        lines.append(f"{_content(doc)} {P9} {target}")
        pmids.append(pmid)
    r = score("bc5cdr", lines, pubtator, pmids=pmids, entities=entities)
    # 1009 JSON relations; the PubTator file has 1012 CID pairs (3 are absent from valid.json -> FN).
    # FP 9: 7 longest mentions map to another MeSH id in the corpus-wide map, and 2 names containing " and "
    # are split at the last " and " and then map to -1 (unmapped, null ids).
    assert (r["tp"], r["fp"], r["fn"]) == (1000, 9, 12)
    assert r["unmapped_pairs"] == 2 and r["failed_lines"] == 0
    assert r["precision"] == pytest.approx(100 * 1000 / 1009)  # 99.108
    assert r["recall"] == pytest.approx(100 * 1000 / 1012)  # 98.814
    assert r["f1"] == pytest.approx(100 * 2000 / 2021)  # 98.961
