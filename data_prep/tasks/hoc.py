"""HoC (Hallmarks of Cancer), BioGPT's sentence-level files (reference §7.5, BioGPT
``examples/DC-HoC/rebuild_data.py``).

Each line of ``{split}.tsv`` is ``sentence<TAB>labels``. source: the sentence stripped, with "." appended unless it
already ends in "."; no lowercasing; blank lines (the original test.tsv alternates them) are skipped.
target: ``the type of this document is {labels}.`` with the raw "|"-joined labels.

Dev split: BioGPT's ``valid.tsv`` is byte-identical to ``test.tsv``, so validating on it is validating on test. Here
``valid`` is a seeded random sample of ``dev_fraction`` of the train.tsv lines (kept in file order; the rest stays
train), and any ``valid.tsv`` in raw_dir is ignored unless ``valid_from: valid.tsv``. Sentences of one abstract can
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
    "valid_from": "train",     # train (seeded sample of train.tsv) | valid.tsv (BioGPT's, = test.tsv)
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
    if opts["valid_from"] not in ("train", "valid.tsv"):
        raise DataError(f"{TASK}: valid_from must be 'train' or 'valid.tsv', got {opts['valid_from']!r}")
    splits: dict[str, Split] = {}
    train_path = raw_dir / opts["train_file"]
    if train_path.is_file():
        examples = read_examples(train_path, labelled=True)
        if opts["valid_from"] == "train":
            dev = dev_sample(len(examples), float(opts["dev_fraction"]), int(opts["dev_seed"]))
            note = (f"valid = {len(dev)} of {len(examples)} {train_path.name} lines (dev_fraction "
                    f"{opts['dev_fraction']}, dev_seed {opts['dev_seed']}); BioGPT's valid.tsv equals test.tsv")
            splits["train"] = Split("train", [e for i, e in enumerate(examples) if i not in dev], train_path.name,
                                    True, notes=[f"{train_path.name} minus the valid sample"])
            if dev:
                splits["valid"] = Split("valid", [e for i, e in enumerate(examples) if i in dev],
                                        train_path.name, True, notes=[note])
        else:
            splits["train"] = Split("train", examples, train_path.name, True)
    valid_path = raw_dir / opts["valid_file"]
    if opts["valid_from"] == "valid.tsv" and valid_path.is_file():
        splits["valid"] = Split("valid", read_examples(valid_path, labelled=True), valid_path.name, True,
                                notes=["BioGPT's valid.tsv, which is identical to test.tsv"])
    test_names = [opts["test_files"]] if isinstance(opts["test_files"], str) else list(opts["test_files"])
    test_path = next((raw_dir / n for n in test_names if (raw_dir / n).is_file()), None)
    if test_path is not None:
        labelled = not is_inputs_file(test_path)
        splits["test"] = Split("test", read_examples(test_path, labelled), test_path.name, labelled)
    if not splits:
        raise DataError(f"{TASK}: no input file found in {raw_dir}; looked for {opts['train_file']}, {test_names}")
    return splits


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    notes = [n for s in splits.values() for n in s.notes if "valid" in n]
    if opts["valid_from"] == "train" and (Path(raw_dir) / opts["valid_file"]).is_file():
        notes.append(f"ignored {opts['valid_file']} (identical to test.tsv in BioGPT's repo)")
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts, notes=notes)
