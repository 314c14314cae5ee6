"""PubMedQA (reasoning-required PQA-L): BioGPT's answer extraction plus the PubMedQA ``evaluation.py`` metrics.

Extraction (the original ``examples/QA-PubMedQA/postprocess.py``, reference §7.4, §7.6): line cleanup (one final
``.`` removed), prefix stripping, then the text after ``the answer to the question given the context is``
(``re.search``, case-sensitive), stripped. No match gives ``failed``. The label is kept as written, so
``yes, because ...`` and ``yes.`` (from ``yes..``) are wrong answers, and a capitalised ``The answer ...`` fails.

Metrics (``pubmedqa/evaluation.py``): accuracy = exact string match; macro-F1 = sklearn
``f1_score(average='macro')`` whose classes are the union of gold and predicted strings, so every distinct
unparsable output forms its own class with F1 0 and pulls the macro average down.

Alignment: without ``pmids`` line i is the i-th entry of ``test_ground_truth.json`` (its file order). With
``pmids`` (one per line) predictions are matched by id and, as ``evaluation.py`` asserts, the ids must be exactly
the gold ids.
"""

from __future__ import annotations

import re
import warnings
from typing import Optional, Sequence

from biogpt_train.scoring.files import PathLike, read_json
from biogpt_train.scoring.prefix import answer_text

ANSWER = re.compile(r"the answer to the question given the context is(.*)")


def extract_answer(line: str) -> str:
    m = ANSWER.search(answer_text(line, "pubmedqa"))
    return m.group(1).strip() if m is not None else "failed"


def _aligned(preds: list[str], gold: dict, gold_path: PathLike, pmids: Optional[Sequence[str]]) -> list[str]:
    if pmids is None:
        if len(preds) != len(gold):
            raise ValueError(f"pubmedqa: {len(preds)} prediction lines but {len(gold)} gold answers in {gold_path}; "
                             "pass pmids= to align by id")
        return preds
    if len(pmids) != len(preds):
        raise ValueError(f"pubmedqa: {len(preds)} prediction lines but {len(pmids)} PMIDs")
    by_id = dict(zip(pmids, preds))
    if len(by_id) != len(pmids):
        raise ValueError("pubmedqa: the PMID list has duplicates")
    if set(by_id) != set(gold):
        extra, absent = sorted(set(by_id) - set(gold)), sorted(set(gold) - set(by_id))
        raise ValueError(f"pubmedqa: predict all and only the gold instances of {gold_path} "
                         f"({len(absent)} gold ids unpredicted, e.g. {absent[:3]}; {len(extra)} ids not in gold, "
                         f"e.g. {extra[:3]})")
    return [by_id[pmid] for pmid in gold]


def score_pubmedqa(pred_lines: Sequence[str], gold_path: PathLike, pmids: Optional[Sequence[str]] = None) -> dict:
    from sklearn.metrics import f1_score

    gold = read_json(gold_path)
    if not isinstance(gold, dict) or not all(isinstance(v, str) for v in gold.values()):
        raise ValueError(f"{gold_path}: expected test_ground_truth.json format, {{pmid: 'yes'|'no'|'maybe'}}")
    preds = _aligned([extract_answer(line) for line in pred_lines], gold, gold_path, pmids)
    truth = list(gold.values())
    if not truth:
        raise ValueError(f"{gold_path}: no gold answers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes seen only in predictions: sklearn warns, the value is 0 anyway
        macro = f1_score(truth, preds, average="macro")
    correct = [int(p == t) for p, t in zip(preds, truth)]
    return {
        "accuracy": 100.0 * sum(correct) / len(truth),
        "macro_f1": 100.0 * float(macro),
        "n": len(truth),
        "failed": sum(p == "failed" for p in preds),
        "units": {"kind": "mean", "values": correct},
    }
