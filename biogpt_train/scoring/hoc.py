"""HoC (Hallmarks of Cancer, sentence level): BioGPT's extraction plus ``examples/DC-HoC/hard_match_evaluation.py``.

Extraction: line cleanup, prefix stripping, then the text after ``the type of this document is`` (``re.search``),
stripped; no match gives ``failed``. Labels are split on ``|`` and stripped, then binarised with
``MultiLabelBinarizer(classes=CLASSES)``: labels outside the 11 classes (``failed``, ``Empty``, the empty string)
are ignored, as the original (sklearn warns there; we silence it and count such lines instead). The score is
sklearn's micro-F1 over all 11 columns, ``empty`` included, one row per sentence.

Gold is ``test.tsv``: each non-blank line stripped, its last tab-separated field taken (blank lines are skipped,
as the original). Prediction and gold counts must be equal (the original asserts it).
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence

from biogpt_train.scoring.files import PathLike, read_lines
from biogpt_train.scoring.prefix import answer_text

ANSWER = re.compile(r"the type of this document is(.*)")

CLASSES = (
    "tumor promoting inflammation", "inducing angiogenesis", "evading growth suppressors", "resisting cell death",
    "cellular energetics", "empty", "genomic instability and mutation", "sustaining proliferative signaling",
    "avoiding immune destruction", "activating invasion and metastasis", "enabling replicative immortality",
)


def extract_labels(line: str) -> str:
    m = ANSWER.search(answer_text(line, "hoc"))
    return m.group(1).strip() if m is not None else "failed"


def split_labels(labels: str) -> list[str]:
    return [w.strip() for w in labels.strip().split("|")]


def read_gold(path: PathLike) -> list[str]:
    return [line.strip().split("\t")[-1] for line in read_lines(path) if line.strip()]


def binarize(rows: Sequence[str]):
    """One 0/1 row per sentence over the 11 classes; unknown labels dropped (as the original, without the warning)."""
    from sklearn.preprocessing import MultiLabelBinarizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unknown class(es) ... will be ignored"
        return MultiLabelBinarizer(classes=list(CLASSES)).fit_transform([split_labels(r) for r in rows])


def micro_f1(pred: Sequence[str], gold: Sequence[str]) -> float:
    """sklearn micro-F1 over the 11 fixed classes (a fraction)."""
    from sklearn.metrics import f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no positive label anywhere: sklearn warns and returns 0
        return float(f1_score(binarize(gold), binarize(pred), average="micro"))


def score_hoc(pred_lines: Sequence[str], gold_path: PathLike) -> dict:
    gold = read_gold(gold_path)
    preds = [extract_labels(line) for line in pred_lines]
    if len(preds) != len(gold):
        raise ValueError(f"hoc: {len(preds)} prediction lines but {len(gold)} non-blank gold lines in {gold_path} "
                         "(the original asserts equal counts)")
    known = set(CLASSES)
    g, p = binarize(gold).astype(bool), binarize(preds).astype(bool)
    return {
        "micro_f1": 100.0 * micro_f1(preds, gold),
        "n": len(gold),
        "failed": sum(p == "failed" for p in preds),
        "lines_with_unknown_labels": sum(any(x not in known for x in split_labels(p)) for p in preds),
        # per-sentence counts over the 11 columns (they sum to the micro-F1 counts), for bootstrap intervals
        "units": {"kind": "micro_f1", "tp": (g & p).sum(1).tolist(), "fp": (~g & p).sum(1).tolist(),
                  "fn": (g & ~p).sum(1).tolist()},
    }
