"""KD-DTI and DDI: BioGPT's post-processing plus ``hard_match_evaluation.py`` (reference §7.2, §7.6).

Post-processing: line cleanup, prefix stripping, then the target-format parser (``formats``; ``rel-is`` is the
original). A line with no triple is "failed". The evaluator then discards *every* triple of a line whose first
drug is literally ``failed`` (which also hits a generated drug named ``failed``); a later triple named ``failed``
is scored normally.

Evaluation, per document aligned by position with the PMID list. The original ``zip``s lines and ids and skips
ids absent from the gold file; here a count mismatch, an id absent from the gold file, or a gold document without
a line is an error (``alignment``), unless ``allow_missing`` scores unpredicted documents as empty predictions:
  * each of drug, target, relation: ``.strip().lower().replace(' ', '')``; triples go into sets;
  * two normalised variants of each set: ``rm_abbr`` (drop a final ``(...)``) and ``get_abbr`` (keep only it),
    each followed by ``normalize_name`` (final single digit -> upper-case Roman numeral, ``-type`` removed,
    non-alphanumerics removed); precision and recall each take the max over the two variants *separately*;
  * precision = |P&G|/|P|, recall = |P&G|/|G|; an empty set on the denominator side gives int(P == G);
  * F1 = 2PR/(P+R), 0 when P + R = 0.
Reported: the averages over documents of P, R and F1 (the paper's numbers: ``tp p``, ``tp r``, ``tp micro f1``),
``macro_f1`` = F1 of the averaged P and R (the script's ``tp macro f1``), and under ``corpus`` the "Ontology" line:
P/R/F1 over the union sets of all predicted and all gold triples (document identity ignored).
The original crashes (ZeroDivisionError) when no document is scored; we raise a clear error instead.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

from biogpt_train.scoring.alignment import align
from biogpt_train.scoring.files import PathLike, read_json
from biogpt_train.scoring.formats import Triple, canonical_format, parse_triples
from biogpt_train.scoring.prefix import answer_text

_ROMAN = {"0": "0", "1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI", "7": "VII", "8": "VIII",
          "9": "IX"}


# -------------------------------------------------------------------------------------------- normalising


def squash(s: str) -> str:
    """The first normalisation, applied when the sets are built."""
    return s.strip().lower().replace(" ", "")


def normalize_name(s: str) -> str:
    s = s.strip()
    # A final single digit becomes a Roman numeral. The input is already lower-cased, so "type 2" -> "typeII"
    # never equals "type ii" -> "typeii": that is the original's behaviour, kept on purpose.
    if len(s) > 2 and s[-1].isnumeric() and not s[-2].isnumeric() and s[-1] in _ROMAN:
        s = s[:-1] + _ROMAN[s[-1]]
    s = s.replace("-type", "")
    return re.sub("[^a-zA-Z0-9]+", "", s)


def _has_abbr(s: str) -> bool:
    return "(" in s and s[-1] == ")"


def without_abbr(s: str) -> str:
    """``rm_abbr`` on one string: ``aaa(bb)`` -> ``aaa`` (the last ``(``), then ``normalize_name``."""
    s = s.strip()
    return normalize_name(s[: s.rfind("(")].strip() if _has_abbr(s) else s)


def only_abbr(s: str) -> str:
    """``get_abbr`` on one string: ``aaa(bb)`` -> ``bb``, then ``normalize_name``."""
    s = s.strip()
    return normalize_name(s[s.rfind("(") + 1 : -1].strip() if _has_abbr(s) else s)


def _variant(triples: set[Triple], fn) -> set[Triple]:
    return {(fn(d), fn(t), fn(r)) for d, t, r in triples}


# ------------------------------------------------------------------------------------------------ metrics


def precision(pred: set, gold: set) -> float:
    return int(pred == gold) if not pred else len(pred & gold) / len(pred)


def recall(pred: set, gold: set) -> float:
    return int(pred == gold) if not gold else len(pred & gold) / len(gold)


def normed(pred: set[Triple], gold: set[Triple], metric) -> float:
    """The metric on both abbreviation variants, the larger one."""
    return max(metric(_variant(pred, only_abbr), _variant(gold, only_abbr)),
               metric(_variant(pred, without_abbr), _variant(gold, without_abbr)))


def get_f1(p: float, r: float) -> float:
    return 0 if p + r == 0 else 2.0 * p * r / (p + r)


def evaluate(pred_docs: Sequence[Optional[list[Triple]]], pmids: Sequence[str], gold: Mapping) -> dict:
    """Hard-match evaluation (fractions in [0, 1]).

    ``pred_docs[i]`` is the parsed triple list of line i (empty or None for a failed line); ``gold`` is the raw
    BioGPT JSON (id -> {"triples": [{"drug", "target", "interaction"}]}).
    """
    ps, rs, fs = [], [], []
    all_pred: set[Triple] = set()
    all_gold: set[Triple] = set()
    missing = num_pred = num_gold = 0
    for triples, pmid in zip(pred_docs, pmids):
        pred_set: set[Triple] = set()
        if triples and triples[0][0] != "failed":
            pred_set = {(squash(d), squash(t), squash(r)) for d, t, r in triples}
        if pmid not in gold:
            missing += 1
            continue
        gold_set = {(squash(g["drug"]), squash(g["target"]), squash(g["interaction"]))
                    for g in (gold[pmid].get("triples") or [])}
        ps.append(normed(pred_set, gold_set, precision))
        rs.append(normed(pred_set, gold_set, recall))
        fs.append(get_f1(ps[-1], rs[-1]))
        all_pred |= pred_set
        all_gold |= gold_set
        num_pred += len(pred_set)
        num_gold += len(gold_set)
    if not ps:
        raise ValueError("hard-match evaluation: no prediction line lines up with a gold document (every PMID is "
                         "absent from the gold file, or there are no lines); the original divides by zero here")
    avg_p, avg_r, avg_f = sum(ps) / len(ps), sum(rs) / len(rs), sum(fs) / len(fs)
    corpus_p, corpus_r = normed(all_pred, all_gold, precision), normed(all_pred, all_gold, recall)
    return {
        "precision": avg_p, "recall": avg_r, "f1": avg_f, "macro_f1": get_f1(avg_p, avg_r),
        "corpus": {"precision": corpus_p, "recall": corpus_r, "f1": get_f1(corpus_p, corpus_r)},
        "docs": len(ps), "missing": missing, "num_pred": num_pred, "num_gold": num_gold,
        "per_doc_f1": fs,
    }


# ------------------------------------------------------------------------------------------------- score


def gold_pmids(gold: Mapping) -> list[str]:
    """The order ``rebuild_data.py`` writes ``relis_{split}.pmid``: JSON order, documents without triples dropped."""
    return [pmid for pmid, doc in gold.items() if doc.get("triples")]


def _gold_relations(gold: Mapping) -> list[str]:
    seen: dict[str, None] = {}
    for doc in gold.values():
        for t in doc.get("triples") or []:
            seen.setdefault(str(t.get("interaction", "")).lower(), None)
    return list(seen)


def _check_gold(gold, path) -> None:
    if not isinstance(gold, Mapping):
        raise ValueError(f"{path}: expected a JSON object keyed by document id (BioGPT raw format)")
    for pmid, doc in gold.items():
        if not isinstance(doc, Mapping):
            raise ValueError(f"{path}: document {pmid!r} is {type(doc).__name__}, expected an object with 'triples'")
        for i, t in enumerate(doc.get("triples") or []):
            if not all(isinstance(t.get(k), str) for k in ("drug", "target", "interaction")):
                raise ValueError(f"{path}: document {pmid!r}, triple {i}: needs string 'drug', 'target' and "
                                 f"'interaction', got {t!r}")


def score_hard_match(pred_lines: Sequence[str], gold_path: PathLike, pmids: Optional[Sequence[str]] = None,
                     target_format: str = "rel-is", task: str = "kd_dti", allow_missing: bool = False,
                     pred_name: str = "the predictions", pmids_name: str = "pmids") -> dict:
    """Post-process decoded lines and evaluate; percentages. Without ``pmids`` the gold file's order is used.

    Lines and gold documents must correspond one to one (``alignment.align``); with ``allow_missing`` the gold
    documents without a line are scored as empty predictions (``unpredicted_docs`` counts them)."""
    fmt = canonical_format(target_format)
    gold = read_json(gold_path)
    _check_gold(gold, gold_path)
    ids, unpredicted = align(task, len(pred_lines), pmids, gold_pmids(gold), gold, gold_path=gold_path,
                             pred_name=pred_name, pmids_name=pmids_name, allow_missing=allow_missing)
    relations = _gold_relations(gold) if fmt in ("svo", "is-of") else ()  # label vocabulary only
    pred_docs = [parse_triples(answer_text(line, task), fmt, relations) for line in pred_lines]
    res = evaluate(pred_docs + [[] for _ in unpredicted], ids + unpredicted, gold)
    pct = lambda x: 100.0 * x  # noqa: E731
    return {
        "precision": pct(res["precision"]), "recall": pct(res["recall"]), "f1": pct(res["f1"]),
        "macro_f1": pct(res["macro_f1"]),
        "corpus": {k: pct(v) for k, v in res["corpus"].items()},
        "format": fmt,
        "lines": len(pred_lines), "failed_lines": sum(1 for d in pred_docs if not d),
        "docs": res["docs"], "unpredicted_docs": len(unpredicted), "num_pred": res["num_pred"],
        "num_gold": res["num_gold"],
        "units": {"kind": "mean", "values": res["per_doc_f1"]},
    }
