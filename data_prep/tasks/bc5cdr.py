"""BC5CDR chemical-induced-disease relations (reference §7.1, BioGPT ``examples/RE-BC5CDR/rebuild_data.py``).

source: title + (" " if the title ends in \\W else ". ") + abstract, lowercased.
target: per relation, in JSON list order, ``the relation between {chemical} and {disease} exists``, joined with
"; " and ended with "."; each MeSH id is named by its longest mention in the document's chemical2id/disease2id
(ties keep the first seen). Documents without relations are dropped and counted.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.tasks.common import (DataError, Split, check_choice, choose_split_files, copy_file, field_of,
                                    join_relations, join_title_abstract, load_json_split, merge_options,
                                    read_json_records, write_task)

TASK = "bc5cdr"
DEFAULTS = {
    # split -> candidate file names in raw_dir, first existing wins; *_inputs files have no labels
    "files": {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json", "test_inputs.json"]},
    # corpus-wide name->MeSH maps copied beside the outputs (the scorer maps predicted names with test's)
    "entities": "{split}.entities.json",
    "template": "rel-is",  # rel-is | correlates (the unused alternative in rebuild_data.py)
}
TEMPLATES = {
    "rel-is": "the relation between {chemical} and {disease} exists",
    "correlates": "{chemical} correlates with {disease}",
}


def longest_mention_per_id(ent2id: dict) -> dict[str, str]:
    """id -> the longest mention mapped to it; a later mention replaces only a strictly shorter one
    (``unify_ent2id(method='max')``)."""
    id2name: dict[str, str] = {}
    for name, ent_id in ent2id.items():
        if ent_id not in id2name or len(name) > len(id2name[ent_id]):
            id2name[ent_id] = name
    return id2name


def source_text(title: str, abstract: str) -> str:
    return join_title_abstract(title, abstract).lower()


def target_text(relations: list, id2chem: dict, id2dis: dict, template: str, path: Path, pmid: str) -> str:
    phrases = []
    for i, rel in enumerate(relations):
        if not isinstance(rel, dict):
            raise DataError(f"{path}: record {pmid!r} relation {i} is {type(rel).__name__}, expected an object")
        chem_id = field_of(rel, "chemical", path, f"{pmid}/relations[{i}]")
        dis_id = field_of(rel, "disease", path, f"{pmid}/relations[{i}]")
        if chem_id not in id2chem:
            raise DataError(f"{path}: record {pmid!r}: chemical id {chem_id!r} has no mention in chemical2id")
        if dis_id not in id2dis:
            raise DataError(f"{path}: record {pmid!r}: disease id {dis_id!r} has no mention in disease2id")
        phrases.append(TEMPLATES[template].format(chemical=id2chem[chem_id], disease=id2dis[dis_id]))
    return join_relations(phrases)


def load_split(path: Path, split: str, template: str) -> Split:
    def source_of(rec: dict, pmid: str) -> str:
        return source_text(field_of(rec, "title", path, pmid), field_of(rec, "abstract", path, pmid))

    def target_of(rec: dict, pmid: str, source: str) -> str | None:
        relations = field_of(rec, "relations", path, pmid, list, nullable=True)
        if not relations:  # None or []: rebuild_data.py skips such documents
            return None
        id2chem = longest_mention_per_id(field_of(rec, "chemical2id", path, pmid, dict))
        id2dis = longest_mention_per_id(field_of(rec, "disease2id", path, pmid, dict))
        return target_text(relations, id2chem, id2dis, template, path, pmid)

    return load_json_split(path, split, source_of, target_of, "relations")


def build_splits(raw_dir: Path, options: dict | None = None) -> dict[str, Split]:
    opts = merge_options(TASK, DEFAULTS, options)
    check_choice(TASK, "template", opts["template"], sorted(TEMPLATES))
    files = choose_split_files(Path(raw_dir), opts["files"], TASK)
    return {split: load_split(path, split, opts["template"]) for split, path in files.items()}


def entity_files(raw_dir: Path, splits: dict[str, Split], pattern: str) -> dict[str, Path]:
    """The existing ``{split}.entities.json`` files, checked to be the expected JSON layout."""
    found = {}
    for split in splits:
        path = Path(raw_dir) / pattern.format(split=split)
        if path.is_file():
            data = read_json_records(path)
            for key in ("chemical2id", "disease2id"):
                if key not in data:
                    raise DataError(f"{path}: missing top-level key {key!r}")
            found[split] = path
    return found


def build(raw_dir: Path, out_dir: Path, tokenizer, *, workers: int, options: dict) -> dict:
    opts = merge_options(TASK, DEFAULTS, options)
    splits = build_splits(raw_dir, opts)
    sources = entity_files(raw_dir, splits, opts["entities"])
    copied = [copy_file(p, Path(out_dir) / f"{split}.entities.json") for split, p in sources.items()]
    notes = [f"copied {p.name} (name->MeSH map for scoring)" for p in copied]
    return write_task(TASK, raw_dir, out_dir, splits, tokenizer, workers=workers, options=opts,
                      notes=notes, extra_files=copied, extra_inputs=list(sources.values()))
