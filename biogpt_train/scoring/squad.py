"""SQuAD v1.1 and v2.0 exact match / F1, the semantics of the official ``evaluate-v1.1.py`` and
``evaluate-v2.0.py`` scripts (seed-systems.md §A.3).

Normalisation (both versions): lower-case, drop every ``string.punctuation`` character, replace the whole words
``a``/``an``/``the`` by a space, then collapse whitespace (``" ".join(s.split())``). EM is 1 when the normalised
strings are equal; F1 is the bag-of-tokens overlap F1 of the normalised strings. Each question takes the maximum
over its gold answers.

The two scripts differ in ways that change numbers, and both are kept:

- v1.1: a question without a prediction counts 0 (it stays in the denominator); F1 of two empty strings is 0;
  every listed gold answer is used.
- v2.0: gold answers whose normalised text is empty are dropped, and a question left without any gold scores
  against ``[""]`` (so an empty prediction is right, EM = F1 = 1). A question *has an answer* (``HasAns_``) when
  its ``answers`` list is non-empty, as written in the file. F1 of two empty strings is 1. Every question needs a
  prediction (the official script fails with a KeyError otherwise; here: a clear error).
  With ``na_probs`` a question whose no-answer probability is above ``na_prob_thresh`` is scored as if "" had
  been predicted; ``best_exact``/``best_f1`` sweep that threshold over the sorted ``na_probs`` (ties keep the
  order of the ``na_probs`` dict, like ``sorted``) and report the best score and the threshold that gives it.

All scores are percentages, unrounded.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Optional

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower-case, strip punctuation, remove articles, collapse whitespace (the official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_score(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str, version: int = 2) -> float:
    """Token-overlap F1. For v2 two empty answers agree (1.0); v1.1 has no such case and gives 0."""
    gold_toks = normalize_answer(gold).split()
    pred_toks = normalize_answer(pred).split()
    if version == 2 and (not gold_toks or not pred_toks):
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def iter_questions(dataset_json: dict):
    """Yield each ``qa`` dict of a SQuAD JSON (``{"data": [{"paragraphs": [{"qas": [...]}]}]}``)."""
    data = dataset_json.get("data") if isinstance(dataset_json, dict) else None
    if not isinstance(data, list):
        raise ValueError('gold: not a SQuAD JSON file (expected {"data": [{"paragraphs": [{"qas": [...]}]}]})')
    for article in data:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                if "id" not in qa or not isinstance(qa.get("answers", []), list):
                    raise ValueError(f"gold: question {qa.get('id', '<no id>')!r} lacks an id or an answers list")
                yield qa


def _answer_texts(qa: dict) -> list[str]:
    answers = qa.get("answers", [])
    if not all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
        raise ValueError(f"gold: question {qa['id']!r} has an answer without a text string")
    return [a["text"] for a in answers]


def _check_predictions(predictions: dict) -> None:
    if not isinstance(predictions, dict):
        raise ValueError("predictions: expected a JSON object {question id: answer text}")
    for qid, text in predictions.items():
        if not isinstance(text, str):
            raise ValueError(f"predictions: the answer for {qid!r} is {type(text).__name__}, expected a string")


def _percent(values) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values)


def squad_v1_scores(dataset_json: dict, predictions: dict[str, str]) -> dict:
    """``evaluate-v1.1.py``: ``exact``, ``f1`` over every gold question (missing predictions count 0)."""
    _check_predictions(predictions)
    exact, f1, missing = [], [], 0
    for qa in iter_questions(dataset_json):
        golds = _answer_texts(qa)
        if not golds:
            raise ValueError(f"gold: question {qa['id']!r} has no gold answer; SQuAD v1.1 scoring needs one "
                             "(score unanswerable questions with squad_v2)")
        pred = predictions.get(qa["id"])
        if pred is None:
            missing += 1
            exact.append(0)
            f1.append(0.0)
            continue
        exact.append(max(exact_score(g, pred) for g in golds))
        f1.append(max(f1_score(g, pred, version=1) for g in golds))
    if not exact:
        raise ValueError("gold: the file holds no questions")
    return {"exact": _percent(exact), "f1": _percent(f1), "total": len(exact), "missing": missing}


def _best_thresh(predictions, scores, na_probs, has_ans) -> tuple[float, float]:
    """Sweep the no-answer threshold: start from "everything abstains" and admit questions by ascending na_prob."""
    cur = best = sum(1 for qid in has_ans if not has_ans[qid])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif predictions[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_scores(dataset_json: dict, predictions: dict[str, str], na_probs: Optional[dict] = None,
                    na_prob_thresh: float = 1.0) -> dict:
    """``evaluate-v2.0.py``: ``exact``, ``f1``, ``total``, ``HasAns_*``/``NoAns_*`` (when present) and, with
    ``na_probs``, ``best_exact``/``best_exact_thresh``/``best_f1``/``best_f1_thresh``."""
    _check_predictions(predictions)
    has_ans, exact_raw, f1_raw, missing = {}, {}, {}, []
    for qa in iter_questions(dataset_json):
        qid = qa["id"]
        has_ans[qid] = bool(qa.get("answers"))
        golds = [t for t in _answer_texts(qa) if normalize_answer(t)] or [""]
        if qid not in predictions:
            missing.append(qid)
            continue
        pred = predictions[qid]
        exact_raw[qid] = max(exact_score(g, pred) for g in golds)
        f1_raw[qid] = max(f1_score(g, pred, version=2) for g in golds)
    if not has_ans:
        raise ValueError("gold: the file holds no questions")
    if missing:
        raise ValueError(f"predictions: {len(missing)} of {len(has_ans)} questions have no prediction "
                         f"(e.g. {missing[:3]}); SQuAD v2 needs one per question (\"\" for no answer)")
    probs = {qid: 0.0 for qid in predictions} if na_probs is None else na_probs
    absent = [qid for qid in exact_raw if qid not in probs]
    if absent:
        raise ValueError(f"na_probs: no probability for {len(absent)} predicted questions (e.g. {absent[:3]})")

    def thresholded(scores):
        return {qid: float(not has_ans[qid]) if probs[qid] > na_prob_thresh else s for qid, s in scores.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out = {"exact": _percent(exact.values()), "f1": _percent(f1.values()), "total": len(exact)}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, h in has_ans.items() if h is wanted]
        if qids:
            out[f"{prefix}_exact"] = _percent(exact[q] for q in qids)
            out[f"{prefix}_f1"] = _percent(f1[q] for q in qids)
            out[f"{prefix}_total"] = len(qids)
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(predictions, exact_raw, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(predictions, f1_raw, probs, has_ans)
    return out


def squad_scores(dataset_json: dict, predictions: dict[str, str], version: int, na_probs: Optional[dict] = None,
                 na_prob_thresh: float = 1.0) -> dict:
    """SQuAD EM/F1 in percent for ``version`` 1 (v1.1) or 2 (v2.0); see the module docstring."""
    if version == 1:
        if na_probs is not None:
            raise ValueError("na_probs applies to SQuAD v2 only")
        return squad_v1_scores(dataset_json, predictions)
    if version == 2:
        return squad_v2_scores(dataset_json, predictions, na_probs, na_prob_thresh)
    raise ValueError(f"SQuAD version must be 1 or 2, got {version!r}")


def score_squad_files(pred_path, gold_path, version: int, na_probs_path=None) -> dict:
    """The CLI entry: predictions JSON ``{id: text}``, the SQuAD gold file, optional na_probs JSON ``{id: p}``."""
    from biogpt_train.scoring.files import read_json

    na_probs = None
    if na_probs_path is not None:
        na_probs = read_json(na_probs_path)
        if not isinstance(na_probs, dict) or not all(isinstance(v, (int, float)) for v in na_probs.values()):
            raise ValueError(f"{na_probs_path}: expected a JSON object {{question id: no-answer probability}}")
    predictions = read_json(pred_path)
    try:
        return squad_scores(read_json(gold_path), predictions, version, na_probs)
    except ValueError as e:  # name the file the problem is in
        msg = str(e)
        for tag, path in (("gold:", gold_path), ("predictions:", pred_path), ("na_probs:", na_probs_path)):
            if msg.startswith(tag):
                msg = f"{path}:{msg[len(tag):]}"
        raise ValueError(msg) from None
