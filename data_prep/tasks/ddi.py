"""DDI 2013 drug-drug interactions (reference §7.3, BioGPT ``examples/RE-DDI/rebuild_data.py``).

source: ``abstract.strip().replace('\\n', ' ').lower()`` (there is no title).
target: the KD-DTI rel-is template over the triples sorted by ``content.find(drug)``, lowercased, "; "-joined,
"." at the end. Documents without triples are dropped and counted (469 / 41 of train / valid).

Sort text: BioGPT's script lowercases ``content`` *before* sorting (both versions of the file in its history), while
the drug keeps its case, so a capitalised drug sorts first. ``sort_on: raw`` sorts on the un-lowercased abstract
instead; it reorders the triples of 189 train and 17 valid documents, so it is not the default.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.tasks.common import (DataError, Example, Split, check_one_line, choose_split_files, field_of,
                                    is_inputs_file, merge_options, read_json_records, write_task)
from data_prep.tasks.kd_dti import format_target, read_triples, sort_by_drug_position

TASK = "ddi"
DEFAULTS = {
    "files": {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json", "test_inputs.json"]},
    "target_format": "rel-is",   # rel-is | are (the unused "{drug} and {target} are {rel}" alternative)
    "sort_on": "lowercased",     # lowercased (BioGPT's code) | raw
}
FORMATS = ("rel-is", "are")
SORT_ON = ("lowercased", "raw")


def load_split(path: Path, split: str, fmt: str, sort_on: str) -> Split:
    records = read_json_records(path)
    labelled = not is_inputs_file(path)
    examples, dropped = [], 0
    for doc_id, rec in records.items():
        content = field_of(rec, "abstract", path, doc_id).strip().replace("\n", " ")
        source = check_one_line(content.lower(), "source", path, doc_id)
        target = None
        if labelled:
            triples = read_triples(rec, path, doc_id)
            if not triples:
                dropped += 1
                continue
            ordered = sort_by_drug_position(triples, source if sort_on == "lowercased" else content)
            target = check_one_line(format_target(ordered, fmt), "target", path, doc_id)
        examples.append(Example(str(doc_id), source, target))
    notes = [f"{dropped} documents without triples dropped"] if dropped else []
    return Split(split, examples, path.name, labelled, dropped, notes)


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    if opts["target_format"] not in FORMATS:
        raise DataError(f"{TASK}: target_format must be one of {FORMATS}, got {opts['target_format']!r}")
    if opts["sort_on"] not in SORT_ON:
        raise DataError(f"{TASK}: sort_on must be one of {SORT_ON}, got {opts['sort_on']!r}")
    files = choose_split_files(Path(raw_dir), opts["files"], TASK)
    return {split: load_split(path, split, opts["target_format"], opts["sort_on"]) for split, path in files.items()}


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts)
