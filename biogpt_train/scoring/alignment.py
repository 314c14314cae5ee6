"""Which gold document each prediction line scores against, checked (BC5CDR, KD-DTI, DDI).

The original scripts ``zip`` the lines with the ids and skip ids absent from the gold file, so a truncated
prediction file scores the decoded subset only (F1 100 on 10 of 500 documents) without a word. Here:

* with ids, there must be one id per line, no id twice, and every id must be a gold document ("extra" lines are
  always an error: they belong to another split or file);
* every *required* gold document (one with at least one relation: the documents the prepared split holds) must
  have a line. A shortfall is an error unless ``allow_missing``: then each missing document is scored as an empty
  prediction (so recall drops), as if the model had answered nothing for it.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from biogpt_train.scoring.files import PathLike


def _eg(items) -> str:
    items = list(items)
    return f"e.g. {items[:3]}" if items else ""


def align(task: str, n_lines: int, pmids: Optional[Sequence[str]], required: Sequence[str], gold_ids,
          *, gold_path: PathLike, pred_name: str = "the predictions", pmids_name: str = "pmids",
          allow_missing: bool = False) -> tuple[list[str], list[str]]:
    """(the id of each line, the required gold ids without a line); raises ValueError on any mismatch.

    ``required``: the gold ids that must be predicted, in gold order (the default line order without ``pmids``);
    ``gold_ids``: every id of the gold file (lines may name a gold document without relations).
    """
    n_gold = len(required)
    if pmids is None:
        if n_lines > n_gold:
            raise ValueError(f"{task}: {n_lines} prediction lines in {pred_name} but {n_gold} gold documents in "
                             f"{gold_path}: extra lines are an error (are both from the same split?)")
        ids = list(required[:n_lines])
    else:
        if len(pmids) != n_lines:
            raise ValueError(f"{task}: {n_lines} prediction lines in {pred_name} but {len(pmids)} ids in "
                             f"{pmids_name}: give one id per prediction line")
        twice = [i for i, c in Counter(pmids).items() if c > 1]
        if twice:
            raise ValueError(f"{task}: {len(twice)} id(s) appear more than once in {pmids_name} "
                             f"({_eg(twice)}); each gold document is predicted once")
        gold_set = set(gold_ids)
        extra = [i for i in pmids if i not in gold_set]
        if extra:
            raise ValueError(f"{task}: {len(extra)} of the {n_lines} ids in {pmids_name} are not documents of "
                             f"{gold_path} ({_eg(extra)}): are pred, pmids and gold from the same split?")
        ids = list(pmids)
    have = set(ids)
    missing = [i for i in required if i not in have]
    if missing and not allow_missing:
        raise ValueError(f"{task}: {n_lines} prediction lines in {pred_name} but {n_gold} gold documents in "
                         f"{gold_path}; {len(missing)} have no prediction ({_eg(missing)}): decode them all, or "
                         "pass allow_missing=true to score them as empty predictions")
    return ids, missing
