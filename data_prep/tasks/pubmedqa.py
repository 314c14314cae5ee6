"""PubMedQA PQA-L, reasoning-required setting (reference §7.4, BioGPT
``examples/QA-PubMedQA/ReasoningRequired/rebuild_data.py``).

source: ``question: {question.strip()} context: {context.strip()} `` (trailing space), where context is the
CONTEXTS sentences stripped and space-joined, newlines → space, whitespace runs → one space. No lowercasing and no
long answer. target: ``the answer to the question given the context is {final_decision}.``

Inputs: the fold files ``pqal_fold{fold}/{train_set,dev_set}.json`` (or BioGPT's ``pqal_{train,dev}_set.json``),
``test_set.json`` / ``test_set_inputs.json``, and ``test_ground_truth.json`` for test labels and order. When a split
file is absent but ``ori_pqal.json`` is present, the split is recomputed with the official
``preprocess/split_dataset.py`` procedure (``random.seed(0)``, label-stratified 2-way then 10-way split).
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

from data_prep.tasks.common import (DataError, Example, Split, check_one_line, field_of, merge_options, read_json,
                                    read_json_records, write_task, SPLITS)

TASK = "pubmedqa"
DEFAULTS = {
    "fold": 0,
    # "{fold}" is replaced by the fold number; first existing file wins
    "files": {
        "train": ["pqal_fold{fold}/train_set.json", "pqal_train_set.json", "train_set.json"],
        "valid": ["pqal_fold{fold}/dev_set.json", "pqal_dev_set.json", "dev_set.json"],
        "test": ["test_set.json", "pqal_test_set.json", "test_set_inputs.json"],
    },
    "ori_file": "ori_pqal.json",
    "ground_truth_file": "test_ground_truth.json",
}
LABELS = ("yes", "no", "maybe")

_WS = re.compile(r"\s+")


def source_text(question: str, contexts: list[str]) -> str:
    context = " ".join(s.strip() for s in contexts)
    context = _WS.sub(" ", context.replace("\n", " "))
    return "question: {} context: {} ".format(question.strip(), context.strip())


def target_text(decision: str) -> str:
    return "the answer to the question given the context is " + decision + "."


# --------------------------------------------------------------------------- official PQA-L split (split_dataset.py)


def _stratified_folds(rng: random.Random, dataset: dict, k: int, path: str) -> list[dict]:
    """k label-stratified folds; consumes ``rng`` exactly like split_dataset.py's ``split`` (shuffle per label in
    yes/no/maybe order; if the last fold is smaller, move one random item of each other fold to it)."""
    by_label: dict[str, list[str]] = {label: [] for label in LABELS}
    for pmid, rec in dataset.items():
        label = field_of(rec, "final_decision", Path(path), pmid)
        if label not in by_label:
            raise DataError(f"{path}: record {pmid!r} final_decision {label!r} is not one of {LABELS}")
        by_label[label].append(pmid)
    chunks = {}
    for label, pmids in by_label.items():
        rng.shuffle(pmids)
        size = math.ceil(len(pmids) / k)
        chunks[label] = [pmids[i * size:(i + 1) * size] if i < k - 1 else pmids[i * size:] for i in range(k)]
    folds = [{p: dataset[p] for label in LABELS for p in chunks[label][i]} for i in range(k)]
    if len(folds[-1]) != len(folds[0]):
        for i in range(k - 1):
            picked = rng.choice(list(folds[i]))
            folds[-1][picked] = folds[i].pop(picked)
    return folds


def official_split(ori: dict, fold: int, path: str = "ori_pqal.json") -> dict[str, dict]:
    """{train, valid, test} record dicts as ``split_dataset.py pqal`` writes pqal_fold{fold} and test_set.json."""
    if not 0 <= fold < 10:
        raise DataError(f"{TASK}: fold must be in 0..9, got {fold}")
    rng = random.Random(0)  # the script calls random.seed(0) at import; same stream
    cv, test = _stratified_folds(rng, ori, 2, path)
    cv_folds = _stratified_folds(rng, cv, 10, path)
    train = {p: r for i, f in enumerate(cv_folds) if i != fold for p, r in f.items()}
    return {"train": train, "valid": cv_folds[fold], "test": test}


# ------------------------------------------------------------------------------------------------ loading


def read_ground_truth(path: Path) -> dict[str, str]:
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataError(f"{path}: expected {{pmid: label}} with string labels")
    for pmid, label in data.items():
        check_label(label, path, pmid)
    return data


def check_label(label: str, path: Path, pmid: str) -> str:
    """A label outside yes/no/maybe would become a target no scorer can match (and a class of its own)."""
    if label not in LABELS:
        raise DataError(f"{path}: record {pmid!r} has label {label!r}; PubMedQA labels are {'/'.join(LABELS)} "
                        "(lower case): fix the record or remove it")
    return label


def make_split(records: dict, split: str, path: Path, source_file: str, truth: dict | None = None) -> Split:
    """Examples from {pmid: record}; labels from final_decision, else from ``truth`` (test ground truth).

    A split where no record has a label (and no truth is given) is input-only; a partly labelled one is an error.
    """
    examples, notes = [], []
    if truth is not None:
        if set(truth) != set(records):
            missing, extra = sorted(set(truth) - set(records)), sorted(set(records) - set(truth))
            raise DataError(f"{path}: PMIDs differ from the ground truth file (missing {missing[:5]}, "
                            f"not in ground truth {extra[:5]})")
        if list(truth) != list(records):
            notes.append("reordered to the ground truth file's order (the scorer's gold order)")
        records = {pmid: records[pmid] for pmid in truth}
    labelled = truth is not None or any("final_decision" in r for r in records.values())
    for pmid, rec in records.items():
        contexts = field_of(rec, "CONTEXTS", path, pmid, list)
        for i, c in enumerate(contexts):
            if not isinstance(c, str):
                raise DataError(f"{path}: record {pmid!r} CONTEXTS[{i}] is {type(c).__name__}, expected str")
        source = check_one_line(source_text(field_of(rec, "QUESTION", path, pmid), contexts), "source", path, pmid)
        target = None
        if labelled:
            if truth is None:
                decision = check_label(field_of(rec, "final_decision", path, pmid), path, pmid)
            else:
                decision = truth[pmid]
            if truth is not None and rec.get("final_decision", decision) != decision:
                raise DataError(f"{path}: record {pmid!r} final_decision {rec['final_decision']!r} disagrees "
                                f"with the ground truth {decision!r}")
            target = check_one_line(target_text(decision), "target", path, pmid)
        examples.append(Example(str(pmid), source, target))
    return Split(split, examples, source_file, labelled, 0, notes)


def _candidates(opts: dict) -> dict[str, list[str]]:
    out = {}
    for split, names in opts["files"].items():
        if split not in SPLITS:
            raise DataError(f"{TASK}: unknown split {split!r} in files option (use {SPLITS})")
        names = [names] if isinstance(names, str) else list(names)
        out[split] = [n.format(fold=opts["fold"]) for n in names]
    return out


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{TASK}: raw_dir {raw_dir} is not a directory")
    truth_path = raw_dir / opts["ground_truth_file"]
    truth = read_ground_truth(truth_path) if truth_path.is_file() else None
    ori_path = raw_dir / opts["ori_file"]
    derived = None
    splits = {}
    for split, names in _candidates(opts).items():
        path = next((raw_dir / n for n in names if (raw_dir / n).is_file()), None)
        if path is not None:
            records, source_file = read_json_records(path), str(path.relative_to(raw_dir))
        elif ori_path.is_file():
            if derived is None:
                derived = official_split(read_json_records(ori_path), int(opts["fold"]), str(ori_path))
            path, records, source_file = ori_path, derived[split], opts["ori_file"]
        else:
            continue
        splits[split] = make_split(records, split, path, source_file, truth if split == "test" else None)
        if path == ori_path:
            splits[split].notes.append(f"official split_dataset.py split of {source_file}, fold {opts['fold']}")
        if split == "test" and truth is not None:
            splits[split].notes.append(f"labels from {opts['ground_truth_file']}")
    if not splits:
        raise DataError(f"{TASK}: no input file found in {raw_dir}; looked for {_candidates(opts)} "
                        f"and {opts['ori_file']}")
    return splits


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    notes = ["reasoning-required setting: the long answer is not in the source"]
    truth = Path(raw_dir) / opts["ground_truth_file"]
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts, notes=notes,
                      extra_inputs=[truth] if truth.is_file() and "test" in splits else [])
