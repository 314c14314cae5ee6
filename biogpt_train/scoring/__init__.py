"""BioGPT post-processing and official-equivalent metrics, one module per task (reference §7, §7.6).

    score(task, pred_lines, gold_path, pmids=None, entities=None, **options) -> dict

``pred_lines``: the decoded lines (like BioGPT's ``*.detok``: source, prompt, answer), a list or a file path.
``gold_path``: bc5cdr: a PubTator file (``CDR_TestSet.PubTator.txt``); kd_dti, ddi: the raw BioGPT JSON
(``test.json``); pubmedqa: ``test_ground_truth.json``; hoc: ``test.tsv``.
``pmids``: a list or a file (one id per line, or a JSON list), aligned with the lines. Required for bc5cdr;
kd_dti/ddi default to the order ``rebuild_data.py`` writes; pubmedqa aligns by id when given; hoc ignores it.
``entities``: bc5cdr only, the split's ``entities.json`` (path or loaded dict).
``options``: kd_dti/ddi accept ``target_format`` (``rel-is`` default, ``svo``, ``is-of``, ``htr``); bc5cdr,
kd_dti and ddi accept ``allow_missing`` (default False).

Lines and gold documents must correspond: a count mismatch is a ValueError naming both counts and both files
(``alignment``). With ``allow_missing=True`` (bc5cdr, kd_dti, ddi) gold documents without a line are scored as
empty predictions, so recall drops; extra lines are always an error.

Metrics are percentages, unrounded. A metric the original evaluator reports as NaN is ``None`` (JSON ``null``).
Each result also holds counts and ``units``: per-document (per-sentence for HoC) values from which the headline
metric is recomputed by ``experiments/bootstrap.py`` — ``{"kind": "mean", "values": [...]}`` (KD-DTI/DDI per-
document F1, PubMedQA 0/1 correctness) or ``{"kind": "micro_f1", "tp": [...], "fp": [...], "fn": [...]}``
(BC5CDR per gold document, HoC per sentence over the 11 columns).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable

from biogpt_train.scoring.bc5cdr import score_bc5cdr
from biogpt_train.scoring.files import as_lines, as_pmids
from biogpt_train.scoring.hard_match import score_hard_match
from biogpt_train.scoring.hoc import score_hoc
from biogpt_train.scoring.pubmedqa import score_pubmedqa


def _bc5cdr(lines, gold, pmids, entities, allow_missing=False, **names):
    return score_bc5cdr(lines, gold, pmids=pmids, entities=entities, allow_missing=allow_missing, **names)


def _pubmedqa(lines, gold, pmids, entities, **names):
    return score_pubmedqa(lines, gold, pmids=pmids)


def _hoc(lines, gold, pmids, entities, **names):
    return score_hoc(lines, gold)  # HoC lines align with test.tsv by position; it has no ids


def _hard_match(task, lines, gold, pmids, entities, target_format="rel-is", allow_missing=False, **names):
    return score_hard_match(lines, gold, pmids=pmids, target_format=target_format, task=task,
                            allow_missing=allow_missing, **names)


# task -> scorer(lines, gold_path, pmids, entities, **options) -> dict
SCORERS: dict[str, Callable[..., dict]] = {
    "bc5cdr": _bc5cdr,
    "kd_dti": partial(_hard_match, "kd_dti"),
    "ddi": partial(_hard_match, "ddi"),
    "pubmedqa": _pubmedqa,
    "hoc": _hoc,
}
OPTIONS: dict[str, tuple[str, ...]] = {"kd_dti": ("target_format", "allow_missing"),
                                       "ddi": ("target_format", "allow_missing"), "bc5cdr": ("allow_missing",)}


def _name(value, default: str) -> str:
    """How an error message names an input: its path, or what it is when given in memory."""
    return str(value) if isinstance(value, (str, os.PathLike)) else default


def score(task: str, pred_lines, gold_path, pmids=None, entities=None, **options) -> dict:
    """Post-process and score decoded lines for ``task``; see the module docstring."""
    if task not in SCORERS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(SCORERS)}")
    if entities is not None and task != "bc5cdr":
        raise ValueError(f"entities= is only used by bc5cdr, not {task}")
    unknown = set(options) - set(OPTIONS.get(task, ()))
    if unknown:
        allowed = list(OPTIONS.get(task, ())) or "none"
        raise ValueError(f"{task} takes no option(s) {sorted(unknown)}; it takes {allowed}")
    names = {"pred_name": _name(pred_lines, "pred=<list>"), "pmids_name": _name(pmids, "pmids=<list>")}
    return SCORERS[task](as_lines(pred_lines), gold_path, as_pmids(pmids), entities, **options, **names)


__all__ = ["SCORERS", "score"]
