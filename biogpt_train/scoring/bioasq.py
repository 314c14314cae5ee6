"""BioASQ Task B factoid metrics (strict accuracy, lenient accuracy, MRR) and BioBERT's n-best merge.

Semantics of the official evaluator (``BioASQ/Evaluation-Measures``, ``evaluation.EvaluatorTask1b -phaseB -e 5``,
classes ``Task1bData``, ``ExactAnswer``, ``QuestionAnswerEvaluator``; seed-systems.md §A.3):

- **Matching.** Every gold and submitted string is lower-cased when read (Java ``toLowerCase``; here
  ``str.lower``) and nothing else: no trimming, no punctuation or article removal. A submitted answer is correct
  when it *equals* one of the gold strings. Gold ``exact_answer`` may be a list of synonyms or a list of lists
  (one inner list per answer); for factoids both read as one pool of synonyms, any of which is correct.
- **Submissions.** Only the first string of each submitted inner list counts (synonyms are not read since BioASQ5).
  Here a prediction is a ranked list whose items are strings, or lists whose first string is the answer (an empty
  list keeps its rank and matches nothing). Only the first ``max_answers`` = 5 items are scored, as the BioASQ rules
  allow five; the Java evaluator itself would read more if given.
- **Per question.** strict = 1 if the first answer is correct; lenient = 1 if any is; MRR = 1/rank of the first
  correct answer, 0 if none. An empty list scores 0 on all three.
- **Averages** run over the *gold factoid questions that have a prediction*: a gold question missing from the
  predictions is skipped, not counted as wrong (``if(resp==null) continue``). ``missing`` reports how many.
  Only questions whose gold ``type`` is ``factoid`` are scored; the prediction's type is not read.
- **Protocols.** BioASQ reports each test batch separately; BioBERT/BioM report the mean of the per-batch scores
  (``bioasq_factoid_batches``, ``per_batch`` and the top-level means). The "unofficial" HF-card protocol
  concatenates all batches into one set (``concatenated``).

``merge_nbest`` is BioBERT's ``biocodes/transform_nbset2bioasqform.py``: the n-best lists of all snippets of a
question (snippet ids ``<question id>_<k>``) are pooled and sorted by probability; empty texts and texts longer
than 100 characters are dropped; texts equal after ``lower()`` are merged, their probabilities **summed**, keeping
the casing of the most probable one; the merged list is sorted by summed probability and cut to the top 5.
Ties keep file order (BioBERT sorts with pandas' default quicksort, whose order for exact ties is unspecified).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

MAX_ANSWERS = 5
MAX_TEXT_CHARS = 100  # transform_nbset2bioasqform drops longer n-best texts


# ------------------------------------------------------------------------------------------------ gold


def gold_synonyms(exact_answer, qid: str = "?") -> list[str]:
    """The lower-cased synonym pool of a factoid ``exact_answer`` (list of strings or list of lists)."""
    if not isinstance(exact_answer, list):
        raise ValueError(f"golden: question {qid!r} exact_answer is {type(exact_answer).__name__}, expected a "
                         "list of synonyms or a list of lists")
    pool = []
    for item in exact_answer:
        for s in item if isinstance(item, list) else [item]:
            if not isinstance(s, str):
                raise ValueError(f"golden: question {qid!r} exact_answer holds {type(s).__name__}, expected strings")
            pool.append(s.lower())
    return pool


def factoid_golds(golden: dict) -> list[tuple[str, list[str]]]:
    """(id, synonym pool) for every factoid question of a BioASQ golden dict, in file order."""
    questions = golden.get("questions") if isinstance(golden, dict) else None
    if not isinstance(questions, list):
        raise ValueError('golden: not a BioASQ file (expected {"questions": [{"id", "type", "exact_answer"}]})')
    out = []
    for q in questions:
        if not isinstance(q, dict) or "id" not in q:
            raise ValueError("golden: a question has no id")
        if q.get("type") == "factoid":
            if "exact_answer" not in q:
                raise ValueError(f"golden: factoid question {q['id']!r} has no exact_answer")
            out.append((q["id"], gold_synonyms(q["exact_answer"], q["id"])))
    return out


# ------------------------------------------------------------------------------------------------ scoring


def ranked_answers(pred, qid: str = "?", max_answers: int = MAX_ANSWERS) -> list[Optional[str]]:
    """The scored, lower-cased answers of one prediction (None marks an empty inner list: a rank that never
    matches)."""
    if not isinstance(pred, list):
        raise ValueError(f"predictions: the answers for {qid!r} are {type(pred).__name__}, expected a ranked list")
    out = []
    for item in pred[:max_answers]:
        if isinstance(item, list):
            item = item[0] if item else None
        if item is not None and not isinstance(item, str):
            raise ValueError(f"predictions: an answer for {qid!r} is {type(item).__name__}, expected a string")
        out.append(None if item is None else item.lower())
    return out


def _question_scores(synonyms: list[str], answers: list[Optional[str]]) -> tuple[float, float, float]:
    pool = set(synonyms)
    for rank, answer in enumerate(answers, start=1):
        if answer is not None and answer in pool:
            return float(rank == 1), 1.0, 1.0 / rank
    return 0.0, 0.0, 0.0


def score_factoids(golds: Iterable[tuple[str, list[str]]], predictions: dict,
                   max_answers: int = MAX_ANSWERS) -> dict:
    strict = lenient = mrr = 0.0
    n = missing = 0
    for qid, synonyms in golds:
        if qid not in predictions:
            missing += 1
            continue
        s, l, r = _question_scores(synonyms, ranked_answers(predictions[qid], qid, max_answers))
        strict, lenient, mrr, n = strict + s, lenient + l, mrr + r, n + 1
    if n == 0:
        raise ValueError(f"predictions: none of the {missing} gold factoid questions has a prediction"
                         if missing else "golden: no factoid question to score")
    return {"strict": 100.0 * strict / n, "lenient": 100.0 * lenient / n, "mrr": 100.0 * mrr / n, "n": n,
            "missing": missing}


def bioasq_factoid_scores(golden: dict, predictions: dict, max_answers: int = MAX_ANSWERS) -> dict:
    """Strict/lenient accuracy and MRR (percent) of ``predictions`` ``{id: [ranked answers]}`` on one golden
    BioASQ dict; ``n`` is the number of factoid questions scored, ``missing`` those without a prediction."""
    if not isinstance(predictions, dict):
        raise ValueError("predictions: expected a JSON object {question id: [ranked answers]}")
    return score_factoids(factoid_golds(golden), predictions, max_answers)


def bioasq_factoid_batches(goldens: Sequence[dict], predictions: dict, max_answers: int = MAX_ANSWERS) -> dict:
    """Both protocols over test batches: top-level ``strict``/``lenient``/``mrr`` are the means of the per-batch
    scores (``n``: questions scored in all), ``per_batch`` lists each batch, ``concatenated`` scores all batches
    as one set."""
    per_batch = [bioasq_factoid_scores(g, predictions, max_answers) for g in goldens]
    if not per_batch:
        raise ValueError("golden: no batch given")
    pooled = [pair for g in goldens for pair in factoid_golds(g)]
    out = {key: sum(b[key] for b in per_batch) / len(per_batch) for key in ("strict", "lenient", "mrr")}
    out["n"] = sum(b["n"] for b in per_batch)
    out["missing"] = sum(b["missing"] for b in per_batch)
    out["per_batch"] = per_batch
    out["concatenated"] = score_factoids(pooled, predictions, max_answers)
    return out


# ------------------------------------------------------------------------------------------------ n-best merge


def question_id(snippet_id: str) -> str:
    """``<question id>_<k>`` -> ``<question id>`` (BioBERT slices off the last 4 characters, ``_001``)."""
    qid, sep, k = snippet_id.rpartition("_")
    if not sep or not qid or not k.isdigit():
        raise ValueError(f"nbest: snippet id {snippet_id!r} is not <question id>_<number>")
    return qid


def merge_nbest(nbest: dict, top_k: int = MAX_ANSWERS) -> dict[str, list[str]]:
    """Per question, the ranked top ``top_k`` answers from per-snippet n-best lists
    ``{snippet id: [{"text", "probability", ...}, ...]}`` (see the module docstring)."""
    pooled: dict[str, list[tuple[float, str]]] = {}
    for sid, entries in nbest.items():
        if not isinstance(entries, list):
            raise ValueError(f"nbest: the entry for {sid!r} is not a list")
        bucket = pooled.setdefault(question_id(sid), [])
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("text"), str) or "probability" not in e:
                raise ValueError(f"nbest: an entry of {sid!r} lacks a text or a probability")
            bucket.append((float(e["probability"]), e["text"]))
    merged = {}
    for qid, entries in pooled.items():
        entries.sort(key=lambda pt: -pt[0])  # stable: equal probabilities keep file order
        total: dict[str, float] = {}
        shown: dict[str, str] = {}
        for prob, text in entries:
            if not text or len(text) > MAX_TEXT_CHARS:
                continue
            key = text.lower()
            shown.setdefault(key, text)
            total[key] = total.get(key, 0.0) + prob
        ranked = sorted(total, key=lambda k: -total[k])
        merged[qid] = [shown[k] for k in ranked[:top_k]]
    return merged


def bioasq_answer_json(ranked: dict[str, list[str]]) -> dict:
    """The BioASQ submission JSON that BioBERT writes for the official jar: ``{"questions": [{"id", "type",
    "ideal_answer", "exact_answer": [[answer], ...]}]}``."""
    return {"questions": [{"type": "factoid", "id": qid, "ideal_answer": "Dummy",
                           "exact_answer": [[a] for a in answers]} for qid, answers in ranked.items()]}


# ------------------------------------------------------------------------------------------------ files (CLI)


def read_predictions(data) -> dict:
    """``{id: [answers]}`` as is, or a BioASQ submission ``{"questions": [{"id", "exact_answer"}]}`` converted."""
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        out = {}
        for q in data["questions"]:
            if not isinstance(q, dict) or "id" not in q:
                raise ValueError("predictions: a question has no id")
            out.setdefault(q["id"], q.get("exact_answer", []))  # the evaluator uses the first entry of an id
        return out
    if not isinstance(data, dict):
        raise ValueError("predictions: expected {id: [ranked answers]} or a BioASQ submission {\"questions\": [...]}")
    return data


def score_bioasq_files(pred_path, gold_paths: Sequence) -> dict:
    """The CLI entry: one golden file gives ``bioasq_factoid_scores``; several (test batches) give
    ``bioasq_factoid_batches``."""
    from biogpt_train.scoring.files import read_json

    def named(path, fn, *args):
        try:
            return fn(*args)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    predictions = named(pred_path, read_predictions, read_json(pred_path))
    goldens = [read_json(p) for p in gold_paths]
    for path, golden in zip(gold_paths, goldens):
        if not named(path, factoid_golds, golden):
            raise ValueError(f"{path}: no factoid question in this golden file")
    if len(goldens) == 1:
        return named(gold_paths[0], bioasq_factoid_scores, goldens[0], predictions)
    return bioasq_factoid_batches(goldens, predictions)
