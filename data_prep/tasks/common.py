"""What every fine-tuning task builder shares: reading raw files with clear errors, the BC5CDR/KD-DTI
title+abstract join rule, writing the ``{split}.x/.y/.pmid`` text files atomically, fairseq-preprocess-style
pair binarisation (``{split}.x-y.{x,y}.{bin,idx}``), the ``dict.txt``/``dict.x.txt``/``dict.y.txt`` copies and the
manifest (reference §3.1, §7; ARCHITECTURE.md "Prepared data directories").

A task module turns raw files into ``Split`` objects (pure text, no tokenizer needed); ``write_task`` does the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional

from biogpt_train.utils import atomic_write

SPLITS = ("train", "valid", "test")

log = logging.getLogger("data_prep.tasks")


class DataError(ValueError):
    """A raw input file is missing, malformed, or a record lacks what the task needs (names file and record)."""


class Example(NamedTuple):
    id: str                 # PMID (or the corpus' document key / "file:line" for HoC)
    source: str             # the .x line
    target: Optional[str]   # the .y line; None for input-only splits


@dataclass
class Split:
    name: str                                  # train | valid | test
    examples: list[Example]
    source_file: str                           # raw file (name relative to raw_dir) it came from
    has_targets: bool                          # False for input-only (test inputs) splits: no .y is written
    dropped: int = 0                           # labelled records dropped (no relations/triples)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- options


def merge_options(task: str, defaults: dict, options: Optional[dict]) -> dict:
    """defaults ⊕ options; an unknown key is an error (a typo in a yaml should not be silently ignored)."""
    options = dict(options or {})
    options.pop("name", None)  # the dataset group's own name, not an option
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DataError(f"{task}: unknown option(s) {unknown}; known: {sorted(defaults)}")
    merged = dict(defaults)
    merged.update(options)
    return merged


def choose_split_files(raw_dir: Path, candidates: dict, task: str) -> dict[str, Path]:
    """For each split, the first candidate file that exists in raw_dir ({split: [names...]}).

    Splits with no file are simply absent; no file at all is an error listing what was looked for.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{task}: raw_dir {raw_dir} is not a directory")
    found = {}
    for split, names in candidates.items():
        if split not in SPLITS:
            raise DataError(f"{task}: unknown split {split!r} in files option (use {SPLITS})")
        for name in [names] if isinstance(names, str) else list(names or []):
            if (raw_dir / name).is_file():
                found[split] = raw_dir / name
                break
    if not found:
        tried = {s: list(n) if not isinstance(n, str) else [n] for s, n in candidates.items()}
        raise DataError(f"{task}: no input file found in {raw_dir}; looked for {tried}")
    return found


def is_inputs_file(path: Path) -> bool:
    """Test files distributed without labels are named ``*_inputs.*`` (../shared/data/SOURCES.md)."""
    return path.stem.endswith("inputs")


def check_choice(task: str, option: str, value: Any, choices: Iterable) -> None:
    """An option that takes one of a few fixed values: anything else is an error listing them."""
    if value not in choices:
        raise DataError(f"{task}: {option} must be one of {choices}, got {value!r}")


# ------------------------------------------------------------------------------------------------ reading


def read_text(path: Path) -> str:
    """Strict UTF-8 (a BOM is tolerated); the error names the file and the byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: invalid UTF-8 at byte {e.start} (line {line}): {e.reason}") from e


def read_lines(path: Path) -> list[str]:
    """Lines without their endings; universal newlines (\\n, \\r\\n, \\r) like Python's text mode."""
    text = read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_json(path: Path) -> Any:
    """The parsed JSON of a file; a syntax error names the file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def read_json_records(path: Path) -> dict[str, dict]:
    """A JSON object keyed by document id whose values are objects (every task's raw JSON layout)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by document id, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise DataError(f"{path}: record {key!r} is {type(value).__name__}, expected an object")
    return data


def field_of(record: dict, key: str, path: Path, record_id: str, kind: type = str, nullable: bool = False) -> Any:
    """record[key], checked for presence and type; the error names the file, the record and the field."""
    if key not in record:
        raise DataError(f"{path}: record {record_id!r} has no field {key!r}")
    value = record[key]
    if value is None:
        if nullable:
            return None
        raise DataError(f"{path}: record {record_id!r} field {key!r} is null")
    if not isinstance(value, kind):
        raise DataError(f"{path}: record {record_id!r} field {key!r} is {type(value).__name__}, "
                        f"expected {kind.__name__}")
    return value


def load_json_split(path: Path, split: str, source_of: Callable[[dict, str], str],
                    target_of: Callable[[dict, str, str], Optional[str]], labels_name: str) -> Split:
    """One example per record of a task's raw JSON file, in file order (BC5CDR, KD-DTI, DDI).

    ``source_of(record, doc_id)`` gives the source line; in a labelled file ``target_of(record, doc_id, source)``
    gives the target line, or None for a record without labels: BioGPT's rebuild_data.py scripts skip those,
    so they are dropped and counted (``labels_name`` says what they lack, for the note). A ``*_inputs`` file
    has no labels: no target is asked for.
    """
    labelled = not is_inputs_file(path)
    examples, dropped = [], 0
    for doc_id, rec in read_json_records(path).items():
        source = check_one_line(source_of(rec, doc_id), "source", path, doc_id)
        target = None
        if labelled:
            target = target_of(rec, doc_id, source)
            if target is None:
                dropped += 1
                continue
            check_one_line(target, "target", path, doc_id)
        examples.append(Example(str(doc_id), source, target))
    notes = [f"{dropped} documents without {labels_name} dropped"] if dropped else []
    return Split(split, examples, path.name, labelled, dropped, notes)


# ------------------------------------------------------------------------------------------------- text


_TITLE_ENDS_NON_WORD = re.compile(r"\W$")


def join_title_abstract(title: str, abstract: str) -> str:
    """BC5CDR/KD-DTI ``rebuild_data.py``: a title ending in a non-word character is followed by a space,
    any other title by ". " (reference §7.1). No lowercasing here."""
    sep = " " if _TITLE_ENDS_NON_WORD.search(title) else ". "
    return title + sep + abstract


def join_relations(parts: Iterable[str]) -> str:
    """``"; "``-joined relation phrases plus a final ``"."`` (the original builds ``a; b; `` then drops 2 chars)."""
    return "; ".join(parts) + "."


def check_one_line(text: str, what: str, path: Path, record_id: str) -> str:
    # A line break inside an example would shift every later .x/.y line against its .pmid line.
    if "\n" in text or "\r" in text:
        raise DataError(f"{path}: record {record_id!r}: the {what} text contains a line break; "
                        "one example must fit on one line")
    return text


# ------------------------------------------------------------------------------------------------ writing


def write_lines(path: Path, lines: Iterable[str]) -> None:
    atomic_write(path, "".join(line + "\n" for line in lines))


def write_split_text(out_dir: Path, split: Split) -> dict[str, Path]:
    """``{split}.x``, ``{split}.pmid`` and, for labelled splits, ``{split}.y`` (a stale .y is removed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labelled = split.has_targets
    if any((ex.target is not None) != labelled for ex in split.examples):
        raise DataError(f"{split.source_file}: split {split.name!r}: examples with and without targets")
    written = {"x": out_dir / f"{split.name}.x", "pmid": out_dir / f"{split.name}.pmid"}
    write_lines(written["x"], (ex.source for ex in split.examples))
    write_lines(written["pmid"], (ex.id for ex in split.examples))
    y_path = out_dir / f"{split.name}.y"
    if labelled:
        write_lines(y_path, (ex.target for ex in split.examples))
        written["y"] = y_path
    else:
        _remove_stale(y_path, *_bin_paths(out_dir, split.name, "y"))
    return written


def _bin_paths(out_dir: Path, split: str, side: str) -> list[Path]:
    prefix = out_dir / f"{split}.x-y.{side}"
    return [prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")]


def _remove_stale(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            p.unlink()


def binarize_split(out_dir: Path, split: Split, tokenizer, workers: int, encoder=None) -> dict[str, Any]:
    """fairseq-preprocess ``-s x -t y``: each line → Moses+BPE ids + ``</s>`` into ``{split}.x-y.{x,y}``.

    Input-only splits get only the ``x`` side (there is no target to binarise). ``encoder``: a
    ``data_prep.binarize.Encoder`` whose worker pool is reused across calls. A high ``<unk>`` share over the
    split's tokens (a mismatched dict.txt/bpecodes pair) is logged once, naming the raw file.
    """
    from data_prep.binarize import binarize_lines  # written by another module; imported when needed

    stats = {}
    sides = [("x", [ex.source for ex in split.examples])]
    if split.has_targets:
        sides.append(("y", [ex.target for ex in split.examples]))
    for side, lines in sides:
        prefix = Path(out_dir) / f"{split.name}.x-y.{side}"
        stats[side] = binarize_lines(lines, tokenizer, prefix, workers, encoder=encoder)
    if hasattr(tokenizer, "unk_warning"):
        unk = sum(st["unk_tokens"] for st in stats.values())
        total = sum(st["tokens"] - st["docs"] for st in stats.values())  # </s> is never <unk>
        message = tokenizer.unk_warning(unk, total, f"{split.source_file} ({split.name} split)")
        if message is not None:
            log.warning("%s", message)
            split.notes.append(message)
    return stats


def write_dicts(out_dir: Path, tokenizer) -> list[Path]:
    """dict.txt, dict.x.txt, dict.y.txt: identical copies of the tokenizer's dictionary (--joined-dictionary).
    A SentencePiece tokenizer (``data_prep.spm.SpmTextEncoder``) is copied as tokenizer.model instead."""
    out_dir = Path(out_dir)
    if getattr(tokenizer, "model_file", None) is not None:
        for name in ("dict.txt", "dict.x.txt", "dict.y.txt"):  # a previous BPE run's: they would mislead
            _remove_stale(out_dir / name)
        return [copy_file(tokenizer.model_file, out_dir / "tokenizer.model")]
    _remove_stale(out_dir / "tokenizer.model")
    main = out_dir / "dict.txt"
    src = getattr(tokenizer, "dict_path", None)
    if src is not None and Path(src).is_file():
        atomic_write(main, Path(src).read_bytes())
    else:
        tokenizer.dictionary.save(main)
    data = main.read_bytes()
    for side in ("x", "y"):
        atomic_write(out_dir / f"dict.{side}.txt", data)
    return [main, out_dir / "dict.x.txt", out_dir / "dict.y.txt"]


def copy_file(src: Path, dst: Path) -> Path:
    atomic_write(dst, Path(src).read_bytes())
    return dst


def split_summary(split: Split) -> dict[str, Any]:
    return {
        "examples": len(split.examples),
        "dropped_without_labels": split.dropped,
        "has_targets": split.has_targets,
        "source_file": split.source_file,
        "notes": list(split.notes),
    }


def check_not_empty(task: str, raw_dir: Path, splits: dict[str, Split]) -> None:
    """A split that exists but holds no example is an error (a wrong file, or everything dropped)."""
    for split in splits.values():
        if split.examples:
            continue
        path = Path(raw_dir) / split.source_file
        why = f"all {split.dropped} record(s) dropped: {'; '.join(split.notes)}" if split.dropped else (
            "the file holds no records")
        raise DataError(f"{task}: 0 {split.name} examples kept from {path} ({why}); nothing was written — check "
                        "that raw_dir holds the right files")


def write_task(task: str, raw_dir: Path, out_dir: Path, splits: dict[str, Split], tokenizer, *,
               workers: int, options: dict, notes: Iterable[str] = (), extra_files: Iterable[Path] = (),
               extra_inputs: Iterable[Path] = (), absent: Optional[dict[str, str]] = None) -> dict:
    """Write text, binarised pairs, dict copies and the manifest; return the summary dict.

    ``extra_files``: other outputs already written to out_dir; ``extra_inputs``: raw files read besides the
    splits' source files (both are listed, with checksums, in the manifest). ``tokenizer=None`` writes text only.
    ``absent``: {split: why it was not made}, recorded in the summary (``absent_splits``) and the manifest, so a
    later "train is missing" can say why. The old manifest.json is removed first: until the new one is written
    last, the directory does not look complete.
    """
    from data_prep.checks import check_writable_dir

    out_dir = check_writable_dir(out_dir, "out_dir")
    check_not_empty(task, raw_dir, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    summary: dict[str, Any] = {"task": task, "raw_dir": str(Path(raw_dir).resolve()),
                               "out_dir": str(out_dir.resolve()), "options": options, "notes": list(notes),
                               "splits": {}}
    if absent:
        summary["absent_splits"] = dict(absent)
    outputs: list[Path] = list(extra_files)
    with contextlib.ExitStack() as stack:
        encoder = None
        if tokenizer is not None:
            from data_prep.binarize import Encoder  # one worker pool for every split and side

            encoder = stack.enter_context(Encoder(tokenizer, workers))
        outputs += _write_splits(out_dir, splits, tokenizer, workers, encoder, summary)
    if tokenizer is not None:
        outputs += write_dicts(out_dir, tokenizer)
    summary["outputs"] = sorted(str(p.relative_to(out_dir)) for p in outputs)
    inputs = {Path(raw_dir) / s.source_file for s in splits.values()} | {Path(p) for p in extra_inputs}
    _manifest(out_dir, summary, outputs, sorted(p for p in inputs if p.is_file()), options, tokenizer)
    return summary


def _write_splits(out_dir: Path, splits: dict[str, Split], tokenizer, workers: int, encoder, summary: dict):
    outputs: list[Path] = []
    for name in SPLITS:
        if name not in splits:  # e.g. a split dropped since the last run: its old files would be misleading
            _remove_stale(*(out_dir / f"{name}.{ext}" for ext in ("x", "y", "pmid")),
                          *_bin_paths(out_dir, name, "x"), *_bin_paths(out_dir, name, "y"))
            continue
        split = splits[name]
        outputs += list(write_split_text(out_dir, split).values())
        info = split_summary(split)
        if tokenizer is not None:
            info["binarized"] = binarize_split(out_dir, split, tokenizer, workers, encoder)
            info["notes"] = list(split.notes)  # with the <unk> warning, if any
            outputs += _bin_paths(out_dir, name, "x")
            if split.has_targets:
                outputs += _bin_paths(out_dir, name, "y")
        summary["splits"][name] = info
    return outputs


def format_summary(summary: dict) -> str:
    """The few lines a person reads after a task build (the full record is manifest.json)."""
    out_dir = summary.get("out_dir", "?")
    lines = [f"data_prep {summary.get('task')}: {len(summary.get('splits', {}))} split(s) -> {out_dir}"]
    notes = list(summary.get("notes", []))
    for name, info in summary.get("splits", {}).items():
        text = f"  {name:5s} {info['examples']:7d} examples from {info['source_file']}"
        if info.get("dropped_without_labels"):
            text += f", {info['dropped_without_labels']} dropped without labels"
        if not info.get("has_targets"):
            text += " (inputs only, no targets)"
        binarized = info.get("binarized") or {}
        if binarized:
            tokens = sum(st["tokens"] for st in binarized.values())
            unk = sum(st["unk_tokens"] for st in binarized.values())
            text += f"; {tokens} tokens, {unk} <unk>"
        lines.append(text)
        notes += [f"{name}: {n}" for n in info.get("notes", [])]
    for name, why in (summary.get("absent_splits") or {}).items():
        lines.append(f"  {name:5s} not made: {why}")
    from data_prep.checks import fold_repeats

    lines += [f"  note: {n}" for n in fold_repeats(notes)]
    lines.append(f"  manifest: {Path(out_dir) / 'manifest.json'}")
    return "\n".join(lines)


def _manifest(out_dir: Path, summary: dict, outputs: list[Path], inputs: list[Path], options: dict,
              tokenizer=None) -> None:
    from data_prep.manifest import write_manifest  # written by another module; imported when needed

    kind = None
    if getattr(tokenizer, "model_file", None) is not None:
        from data_prep.spm import tokenizer_entry

        kind = tokenizer_entry(tokenizer.model_file)
    write_manifest(out_dir, summary, outputs, inputs=inputs, settings=options, tokenizer=kind)

