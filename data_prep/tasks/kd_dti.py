"""KD-DTI drug-target interactions (reference §7.2, BioGPT ``examples/RE-DTI/rebuild_data.py``).

source: title + (" " if the title ends in \\W else ". ") + abstract, lowercased.
target (rel-is): triples sorted by ``source.find(drug)`` — the source is lowercased, the drug is not, so a
capitalised drug gives -1 and sorts first; the sort is stable — then
``the interaction between {drug} and {target} is {interaction}`` (all lowercased), "; "-joined, "." at the end.
Documents without triples are dropped and counted. svo / is-of / htr are the paper's Table 9 alternatives.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.tasks.common import (DataError, Example, Split, check_one_line, choose_split_files, field_of,
                                    is_inputs_file, join_relations, join_title_abstract, merge_options,
                                    read_json_records, write_task)

TASK = "kd_dti"
DEFAULTS = {
    "files": {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json", "test_inputs.json"]},
    "target_format": "rel-is",  # rel-is | svo | is-of | htr
}

# rebuild_data.py's map_relation_to_verb: fixed phrases first, then suffix rules in this order.
_VERB_SPECIAL = {
    "product of": "is the product of",
    "negative modulator": "negatively modulates",
    "other/unknown": "randomly works with",
    "other": "randomly works with",
    "incorporation into and destabilization": "incorporates into and destabilizates",
    "cross-linking/alkylation": "cross lines / alkylates",
    "antibody": "is the antibody of",
    "downregulator": "downregulates",
    "desensitize the target": "desensitizes",
    "protector": "protects",
    "inhibitor": "inhibits",
    "weak inhibitor": "weakly inhibits",
    "blocker": "blocks",
}


def relation_to_verb(relation: str) -> str:
    """The svo verb for a lowercased relation: inhibitor→inhibits, agonist→agonists, activator→activates."""
    if relation in _VERB_SPECIAL:
        return _VERB_SPECIAL[relation]
    if relation.endswith("agonist") or relation.endswith("antagonist"):
        return relation + "s"
    if relation.endswith("or") or relation.endswith("er"):
        return relation[:-2] + "es"
    if relation.endswith("tion"):
        return relation[:-3] + "es"
    if relation.endswith("ing"):
        return relation[:-3] + "s"
    return relation + "s"


def _phrase(fmt: str, drug: str, target: str, rel: str) -> str:
    if fmt == "rel-is":
        return f"the interaction between {drug} and {target} is {rel}"
    if fmt == "svo":
        return f"{drug} {relation_to_verb(rel)} {target}"
    if fmt == "is-of":
        return f"{drug} is the {rel} of {target}"
    if fmt == "htr":
        return f"<h> {drug} <t> {target} <r> {rel}"
    if fmt == "are":  # DDI's unused alternative ("2type")
        return f"{drug} and {target} are {rel}"
    raise DataError(f"unknown target_format {fmt!r}")


FORMATS = ("rel-is", "svo", "is-of", "htr")
_DRUGBANK_ID = "DrugBank####"


def format_target(triples: list[dict], fmt: str) -> str:
    """The target line for already-sorted triples; every part is lowercased."""
    phrases = [_phrase(fmt, t["drug"].lower(), t["target"].lower(), t["interaction"].lower()) for t in triples]
    if fmt == "htr":  # space-separated, "." replaces the final space
        return " ".join(phrases) + "."
    return join_relations(phrases)


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
    records = read_json_records(path)
    labelled = not is_inputs_file(path)
    examples, dropped, id_triples, n_triples = [], 0, 0, 0
    for doc_id, rec in records.items():
        title = field_of(rec, "title", path, doc_id)
        source = check_one_line(join_title_abstract(title, field_of(rec, "abstract", path, doc_id)).lower(),
                                "source", path, doc_id)
        target = None
        if labelled:
            triples = read_triples(rec, path, doc_id)
            if not triples:
                dropped += 1
                continue
            target = check_one_line(format_target(sort_by_drug_position(triples, source), fmt),
                                    "target", path, doc_id)
            n_triples += len(triples)
            id_triples += sum(_DRUGBANK_ID in t["drug"] + t["target"] for t in triples)
        examples.append(Example(str(doc_id), source, target))
    notes = [f"{dropped} documents without triples dropped"] if dropped else []
    if id_triples:  # kept as BioGPT does (lowercased); mapping them to names needs a DrugBank download
        notes.append(f"{id_triples} of {n_triples} triples name a drug or target by DrugBank id ({_DRUGBANK_ID}...)")
    return Split(split, examples, path.name, labelled, dropped, notes)


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    if opts["target_format"] not in FORMATS:
        raise DataError(f"{TASK}: target_format must be one of {FORMATS}, got {opts['target_format']!r}")
    files = choose_split_files(Path(raw_dir), opts["files"], TASK)
    return {split: load_split(path, split, opts["target_format"]) for split, path in files.items()}


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    notes = []
    if "train" not in splits:
        notes.append("no train split in raw_dir (BioGPT's KD-DTI train.json is not publicly mirrored)")
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts, notes=notes)
