"""HoC (Hallmarks of Cancer), BioGPT's sentence-level files (reference §7.5, BioGPT
``examples/DC-HoC/rebuild_data.py``).

Each line of ``{split}.tsv`` is ``sentence<TAB>labels``. source: the sentence stripped, with "." appended unless it
already ends in "."; no lowercasing; blank lines (the original test.tsv alternates them) are skipped.
target: ``the type of this document is {labels}.`` with the raw "|"-joined labels.

Splits (option ``valid_from``):

* ``biogpt`` (default, BioGPT's): train = every train.tsv line. valid = BioGPT's ``valid.tsv``, which is
  byte-identical to ``test.tsv``; without it the labelled ``test.tsv`` itself (the same lines). In BioGPT valid
  only logs a loss (and names checkpoint_best.pt): the recipe evaluates checkpoint_last.pt on test. When no labelled
  test file exists either (../shared/data has test inputs only), valid is a seeded sample of ``dev_fraction`` of
  the train.tsv lines COPIED (they stay in train), so validation still logs: it is no held-out set.
* ``train``: a held-out dev split for model-selection studies: a seeded random sample of ``dev_fraction`` of the
  train.tsv lines is MOVED to valid (kept in file order; the rest stays train). Sentences of one abstract can
  fall on both sides (the files carry no document ids), so the dev score is optimistic.

The .pmid lines are ``{file}:{line number}`` (the files have no PMIDs).
"""

from __future__ import annotations

import random
from pathlib import Path

from data_prep.tasks.common import (DataError, Example, Split, check_one_line, is_inputs_file, merge_options,
                                    read_lines, write_task)

TASK = "hoc"
DEFAULTS = {
    "train_file": "train.tsv",
    "test_files": ["test.tsv", "test_inputs.txt"],  # first existing; *_inputs.txt has sentences only
    "valid_from": "biogpt",    # biogpt: train on all of train.tsv (module doc) | train: held-out seeded sample
    "valid_file": "valid.tsv",
    "dev_fraction": 0.1,
    "dev_seed": 1,
}


def source_text(sentence: str) -> str:
    sentence = sentence.strip()
    return sentence if sentence.endswith(".") else sentence + "."


def target_text(labels: str) -> str:
    return "the type of this document is " + labels + "."


def read_examples(path: Path, labelled: bool) -> list[Example]:
    examples = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        rid = f"{path.name}:{lineno}"
        fields = line.split("\t")
        if labelled and len(fields) != 2:
            raise DataError(f"{path}: line {lineno} has {len(fields)} tab-separated fields, expected "
                            "'sentence<TAB>labels'")
        if not labelled and len(fields) != 1:
            raise DataError(f"{path}: line {lineno} has a tab; an inputs file holds one sentence per line")
        if not fields[0].strip():
            raise DataError(f"{path}: line {lineno} has an empty sentence")
        target = None
        if labelled:
            labels = fields[1].strip()
            if not labels:
                raise DataError(f"{path}: line {lineno} has no labels (use 'empty' for none)")
            target = check_one_line(target_text(labels), "target", path, rid)
        examples.append(Example(rid, check_one_line(source_text(fields[0]), "source", path, rid), target))
    return examples


def dev_sample(n: int, fraction: float, seed: int) -> set[int]:
    """Indices of a deterministic random sample of round(n * fraction) of range(n)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"{TASK}: dev_fraction must be in [0, 1), got {fraction}")
    return set(random.Random(seed).sample(range(n), round(n * fraction)))


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{TASK}: raw_dir {raw_dir} is not a directory")
    mode = {"valid.tsv": "biogpt"}.get(opts["valid_from"], opts["valid_from"])  # valid.tsv: the older name
    if mode not in ("biogpt", "train"):
        raise DataError(f"{TASK}: valid_from must be 'biogpt' (train on all of train.tsv, as BioGPT) or 'train' "
                        f"(a held-out sample of it), got {opts['valid_from']!r}")
    splits: dict[str, Split] = {}
    test_names = [opts["test_files"]] if isinstance(opts["test_files"], str) else list(opts["test_files"])
    test_path = next((raw_dir / n for n in test_names if (raw_dir / n).is_file()), None)
    if test_path is not None:
        labelled = not is_inputs_file(test_path)
        splits["test"] = Split("test", read_examples(test_path, labelled), test_path.name, labelled)
    train_path = raw_dir / opts["train_file"]
    if train_path.is_file():
        examples = read_examples(train_path, labelled=True)
        sample = dev_sample(len(examples), float(opts["dev_fraction"]), int(opts["dev_seed"]))
        picked = [e for i, e in enumerate(examples) if i in sample]
        how = f"dev_fraction {opts['dev_fraction']}, dev_seed {opts['dev_seed']}"
        if mode == "train":
            splits["train"] = Split("train", [e for i, e in enumerate(examples) if i not in sample], train_path.name,
                                    True, notes=[f"{train_path.name} minus the valid sample"])
            if picked:
                splits["valid"] = Split("valid", picked, train_path.name, True, notes=[
                    f"valid = {len(picked)} of {len(examples)} {train_path.name} lines held out ({how}); "
                    "BioGPT trains on all of them (its valid.tsv equals test.tsv)"])
        else:
            splits["train"] = Split("train", examples, train_path.name, True)
    if mode == "biogpt":
        valid = _biogpt_valid(raw_dir, opts, splits)
        if valid is not None:
            splits["valid"] = valid
    if not splits:
        raise DataError(f"{TASK}: no input file found in {raw_dir}; looked for {opts['train_file']}, {test_names}")
    return splits


def _biogpt_valid(raw_dir: Path, opts: dict, splits: dict[str, Split]) -> Split | None:
    """BioGPT's valid split (module doc): valid.tsv (= test.tsv), else the labelled test, else a logging-only copy
    of a seeded sample of train."""
    valid_path = raw_dir / opts["valid_file"]
    if valid_path.is_file():
        return Split("valid", read_examples(valid_path, labelled=True), valid_path.name, True,
                     notes=[f"valid = BioGPT's {valid_path.name} (identical to test.tsv): the validation loss is "
                            "on test, as in BioGPT; it only logs and names checkpoint_best.pt"])
    test = splits.get("test")
    if test is not None and test.has_targets:
        return Split("valid", list(test.examples), test.source_file, True,
                     notes=[f"valid = {test.source_file} (BioGPT's valid.tsv is identical to it): the validation "
                            "loss is on test, as in BioGPT; it only logs and names checkpoint_best.pt"])
    train = splits.get("train")
    if train is None:
        return None
    sample = dev_sample(len(train.examples), float(opts["dev_fraction"]), int(opts["dev_seed"]))
    if not sample:
        return None
    return Split("valid", [e for i, e in enumerate(train.examples) if i in sample], train.source_file, True,
                 notes=[f"valid = a copy of {len(sample)} of the {len(train.examples)} {train.source_file} lines "
                        f"(dev_fraction {opts['dev_fraction']}, dev_seed {opts['dev_seed']}), still trained on: "
                        "no labelled test file for BioGPT's valid (= test), so it only logs a loss. For a held-out "
                        "dev set use valid_from=train"])


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    notes = [n for s in splits.values() for n in s.notes if "valid" in n]
    if opts["valid_from"] == "train" and (Path(raw_dir) / opts["valid_file"]).is_file():
        notes.append(f"ignored {opts['valid_file']} (identical to test.tsv in BioGPT's repo)")
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts, notes=notes)
