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

from data_prep.tasks import kd_dti
from data_prep.tasks.common import (Split, check_choice, choose_split_files, field_of, join_relations,
                                    load_json_split, merge_options, write_task)

TASK = "ddi"
DEFAULTS = {
    "files": {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json", "test_inputs.json"]},
    "target_format": "rel-is",   # rel-is | are (the unused "{drug} and {target} are {rel}" alternative)
    "sort_on": "lowercased",     # lowercased (BioGPT's code) | raw
}
FORMATS = ("rel-is", "are")
SORT_ON = ("lowercased", "raw")


def format_target(triples: list[dict], fmt: str) -> str:
    if fmt == "are":  # DDI's unused alternative in rebuild_data.py; no scorer reads it, so it is kept here
        return join_relations(f"{t['drug'].lower()} and {t['target'].lower()} are {t['interaction'].lower()}"
                              for t in triples)
    return kd_dti.format_target(triples, fmt)


def load_split(path: Path, split: str, fmt: str, sort_on: str) -> Split:
    def content_of(rec: dict, doc_id: str) -> str:  # the abstract on one line, case kept
        return field_of(rec, "abstract", path, doc_id).strip().replace("\n", " ")

    def source_of(rec: dict, doc_id: str) -> str:
        return content_of(rec, doc_id).lower()

    def target_of(rec: dict, doc_id: str, source: str) -> str | None:
        triples = kd_dti.read_triples(rec, path, doc_id)
        if not triples:
            return None
        sort_text = source if sort_on == "lowercased" else content_of(rec, doc_id)
        return format_target(kd_dti.sort_by_drug_position(triples, sort_text), fmt)

    return load_json_split(path, split, source_of, target_of, "triples")


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    check_choice(TASK, "target_format", opts["target_format"], FORMATS)
    check_choice(TASK, "sort_on", opts["sort_on"], SORT_ON)
    files = choose_split_files(Path(raw_dir), opts["files"], TASK)
    return {split: load_split(path, split, opts["target_format"], opts["sort_on"]) for split, path in files.items()}


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts)
