"""BioASQ factoid QA for extractive (SQuAD-style) fine-tuning (seed-systems.md §A.2, SOURCES.md §8).

Two inputs:

- BioASQ's own JSON (training file or a golden batch): ``{"questions": [{"id", "body", "type", "exact_answer",
  "snippets": [{"text", ...}]}]}``. ``bioasq_to_squad`` turns each *factoid* question into one SQuAD item per
  snippet, ids ``<question id>_<k>`` with k = 001, 002, ... (BioBERT's numbering, 1-based, 3 digits), question =
  ``body``, context = the snippet text as is. The answer is the first case-insensitive occurrence in the snippet of
  the first synonym (in ``exact_answer`` order, flattened from a list of strings or a list of lists) that occurs as
  a whole word (not glued to a letter or digit), else of the first that occurs at all; the answer text is the
  snippet's own characters there. A snippet with no synonym in it becomes an
  unanswerable item (``answers: []``, ``is_impossible: true``; BioM-ELECTRA's ``qa_tasks.py`` instead forces every
  BioASQ training item to be answerable, and the HF card's SQuAD1.1 conversion keeps only answerable ones: filter
  with ``answerable_only=True``). Questions without snippets are skipped and counted. A file without any factoid
  question is an error.
- The SQuAD-format files BioBERT ships (``BioASQ-train-factoid-7b.json``, ``BioASQ-test-factoid-7b.json``):
  ``read_bioasq_squad`` reads them with ``biogpt_train.data.squad.read_squad`` and checks the snippet ids.

``golden_from_squad`` builds a BioASQ-format golden dict (one factoid per question id, the distinct answer texts as
synonyms) from a SQuAD-format file, e.g. to score held-out training questions with the BioASQ metrics.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

from biogpt_train.data.squad import Example, read_squad
from biogpt_train.scoring.bioasq import question_id
from biogpt_train.utils import atomic_write
from data_prep.tasks.common import DataError, read_json

TASK = "bioasq"
log = logging.getLogger(__name__)


def synonyms(exact_answer, path, qid: str) -> list[str]:
    """The flattened synonym list of a factoid ``exact_answer`` (list of strings or list of lists), in order."""
    if isinstance(exact_answer, str):
        exact_answer = [exact_answer]
    if not isinstance(exact_answer, list):
        raise DataError(f"{path}: question {qid!r} exact_answer is {type(exact_answer).__name__}, expected a list")
    out = []
    for item in exact_answer:
        for s in item if isinstance(item, list) else [item]:
            if not isinstance(s, str):
                raise DataError(f"{path}: question {qid!r} exact_answer holds {type(s).__name__}, expected strings")
            out.append(s)
    return out


def find_answer(snippet: str, names: list[str]) -> Optional[dict]:
    """``{"text", "answer_start"}`` of the first synonym (in order) found case-insensitively in ``snippet``:
    first as a whole word (no letter or digit glued on either side, so "p53" is not taken from "TP53"), then,
    if no synonym occurs as a whole word, anywhere."""
    names = [n for n in names if n.strip()]
    for pattern in (r"(?<!\w){}(?!\w)", "{}"):
        for name in names:
            m = re.search(pattern.format(re.escape(name)), snippet, flags=re.IGNORECASE)
            if m is not None:
                return {"text": m.group(0), "answer_start": m.start()}
    return None


def bioasq_to_squad(data: dict, path="<bioasq json>", answerable_only: bool = False) -> dict:
    """SQuAD v2.0-style dict from BioASQ JSON (see the module docstring)."""
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise DataError(f'{path}: not a BioASQ file (expected {{"questions": [...]}})')
    paragraphs, factoids, no_snippets = [], 0, []
    for q in questions:
        if not isinstance(q, dict) or q.get("type") != "factoid":
            continue
        factoids += 1
        qid = q.get("id")
        if not isinstance(qid, str) or not isinstance(q.get("body"), str):
            raise DataError(f"{path}: a factoid question lacks an id or a body string (id {qid!r})")
        names = synonyms(q.get("exact_answer", []), path, qid)
        snippets = q.get("snippets") or []
        if not snippets:
            no_snippets.append(qid)
            continue
        for k, snip in enumerate(snippets, start=1):
            text = snip.get("text") if isinstance(snip, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}: question {qid!r} snippet {k} has no text string")
            answer = find_answer(text, names)
            if answer is None and answerable_only:
                continue
            qa = {"id": f"{qid}_{k:03d}", "question": q["body"], "answers": [answer] if answer else [],
                  "is_impossible": answer is None}
            paragraphs.append({"context": text, "qas": [qa]})
    if factoids == 0:
        raise DataError(f"{path}: no factoid question (of {len(questions)} questions); "
                        "BioASQ extractive QA needs type 'factoid'")
    if no_snippets:
        log.warning("%s: skipped %d factoid questions without snippets (e.g. %s)", path, len(no_snippets),
                    ", ".join(no_snippets[:3]))
    if not paragraphs:
        raise DataError(f"{path}: no usable snippet in the {factoids} factoid questions")
    return {"version": "v2.0", "data": [{"title": "BioASQ", "paragraphs": paragraphs}]}


def convert_file(src, dst, answerable_only: bool = False) -> dict:
    """Convert a BioASQ JSON file to SQuAD format at ``dst`` (atomically); returns counts."""
    squad = bioasq_to_squad(read_json(Path(src)), src, answerable_only)
    atomic_write(dst, json.dumps(squad, ensure_ascii=False, indent=1) + "\n")
    qas = [qa for p in squad["data"][0]["paragraphs"] for qa in p["qas"]]
    answerable = sum(1 for qa in qas if qa["answers"])
    return {"items": len(qas), "questions": len({question_id(qa["id"]) for qa in qas}), "answerable": answerable,
            "unanswerable": len(qas) - answerable}


def read_bioasq_squad(path) -> list[Example]:
    """Examples of a SQuAD-format BioASQ file; every id must be ``<question id>_<number>``."""
    examples = read_squad(path)
    for ex in examples:
        try:
            question_id(ex.id)
        except ValueError:
            raise DataError(f"{path}: id {ex.id!r} is not <question id>_<snippet number>") from None
    return examples


def golden_from_squad(examples: list[Example]) -> dict:
    """A BioASQ golden dict: one factoid per question id with its distinct answer texts (file order) as
    synonyms; questions with no answer in any snippet are left out."""
    answers: dict[str, list[str]] = {}
    for ex in examples:
        texts = answers.setdefault(question_id(ex.id), [])
        for a in ex.answers:
            if a["text"] not in texts:
                texts.append(a["text"])
    return {"questions": [{"id": qid, "type": "factoid", "exact_answer": [texts]}
                          for qid, texts in answers.items() if texts]}
