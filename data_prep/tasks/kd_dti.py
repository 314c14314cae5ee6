"""KD-DTI drug-target interactions (reference §7.2, BioGPT ``examples/RE-DTI/rebuild_data.py``).

source: title + (" " if the title ends in \\W else ". ") + abstract, lowercased.
target (rel-is): triples sorted by ``source.find(drug)`` — the source is lowercased, the drug is not, so a
capitalised drug gives -1 and sorts first; the sort is stable — then
``the interaction between {drug} and {target} is {interaction}`` (all lowercased), "; "-joined, "." at the end.
Documents without triples are dropped and counted. svo / is-of / htr are the paper's Table 9 alternatives.
"""

from __future__ import annotations

from pathlib import Path

# relation_to_verb is imported for callers of this module too: it is the svo rule of the KD-DTI targets.
from biogpt_train.scoring.formats import relation_to_verb, render_target  # noqa: F401
from data_prep.tasks.common import (DataError, Split, check_choice, choose_split_files, field_of,
                                    join_title_abstract, load_json_split, merge_options, write_task)

TASK = "kd_dti"
DEFAULTS = {
    "files": {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json", "test_inputs.json"]},
    "target_format": "rel-is",  # rel-is | svo | is-of | htr
}

FORMATS = ("rel-is", "svo", "is-of", "htr")
_DRUGBANK_ID = "DrugBank####"


def format_target(triples: list[dict], fmt: str) -> str:
    """The target line for already-sorted triples; every part is lowercased.

    The templates live beside their parsers in biogpt_train.scoring.formats, so what we train on is what the
    scorer reads back."""
    return render_target([(t["drug"], t["target"], t["interaction"]) for t in triples], fmt)


def read_triples(rec: dict, path: Path, doc_id: str) -> list[dict]:
    """The record's triples (None counts as empty), each checked for drug/target/interaction strings."""
    triples = field_of(rec, "triples", path, doc_id, list, nullable=True)
    for i, t in enumerate(triples or []):
        if not isinstance(t, dict):
            raise DataError(f"{path}: record {doc_id!r} triple {i} is {type(t).__name__}, expected an object")
        for key in ("drug", "target", "interaction"):
            field_of(t, key, path, f"{doc_id}/triples[{i}]")
    return triples or []


def sort_by_drug_position(triples: list[dict], text: str) -> list[dict]:
    """Stable sort by ``text.find(drug)`` exactly as rebuild_data.py (not found → -1 → first)."""
    return sorted(triples, key=lambda t: text.find(t["drug"]))


def load_split(path: Path, split: str, fmt: str) -> Split:
    kept_triples: list[dict] = []  # of the documents kept, for the DrugBank-id note

    def source_of(rec: dict, doc_id: str) -> str:
        title = field_of(rec, "title", path, doc_id)
        return join_title_abstract(title, field_of(rec, "abstract", path, doc_id)).lower()

    def target_of(rec: dict, doc_id: str, source: str) -> str | None:
        triples = read_triples(rec, path, doc_id)
        if not triples:
            return None
        kept_triples.extend(triples)
        return format_target(sort_by_drug_position(triples, source), fmt)

    loaded = load_json_split(path, split, source_of, target_of, "triples")
    id_triples = sum(_DRUGBANK_ID in t["drug"] + t["target"] for t in kept_triples)
    if id_triples:  # kept as BioGPT does (lowercased); mapping them to names needs a DrugBank download
        loaded.notes.append(f"{id_triples} of {len(kept_triples)} triples name a drug or target by DrugBank id "
                            f"({_DRUGBANK_ID}...)")
    return loaded


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    check_choice(TASK, "target_format", opts["target_format"], FORMATS)
    files = choose_split_files(Path(raw_dir), opts["files"], TASK)
    return {split: load_split(path, split, opts["target_format"]) for split, path in files.items()}


def no_train_reason(raw_dir: Path, names) -> str:
    """Why there is no train split: the file is absent, and the public KD-DTI copies have none."""
    names = [names] if isinstance(names, str) else list(names or [])
    looked = " / ".join(str(Path(raw_dir) / n) for n in names) or "(files.train is empty)"
    return (f"{looked} is absent: the public KD-DTI release has no train split, so only valid/test were prepared "
            "(enough to evaluate a checkpoint); to fine-tune, put BioGPT's data/KD-DTI/raw/train.json in raw_dir")


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    absent = {}
    if "train" not in splits:
        absent["train"] = no_train_reason(raw_dir, opts["files"].get("train"))  # printed once, in the summary
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts, absent=absent)
