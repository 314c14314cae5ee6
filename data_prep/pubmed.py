"""PubMed (or any abstract corpus) -> fairseq LM data in out_dir (docs/ARCHITECTURE.md, "Prepared data"):

    dict.txt, bpecodes            the vocabulary the ids refer to (copied, or learned with bpe.learn=true)
    train.{bin,idx} valid.{bin,idx}  one document per item, each ending in </s> (id 2)
    manifest.json                 inputs + sha256, settings, counts, dictionary, outputs (written last)
    parts/<input file name>/      one finished unit per input file: part.{bin,idx}, keys.npy, deleted.npy, meta.json

A document is `title + " " + abstract` (reference §4: title+abstract items; items without an abstract are dropped),
Moses-tokenized + BPE'd + </s>.

Units. Each input file is one unit, written into `parts/.<name>.tmp-<pid>/` and renamed to `parts/<name>/` when
complete: a unit directory either exists whole or not at all, so a killed run never leaves one that looks finished.
A rerun skips units whose meta.json matches the input (size, mtime) and the settings fingerprint (text options +
dict/bpecodes sha256), and redoes the rest. A unit that fails (truncated gzip, invalid UTF-8, broken XML) is reported
and the other units still complete; the merge then refuses to run until it is fixed.

Merge. Units keep every kept document with its key (the PMID) and the PMIDs its DeleteCitation blocks list. The merge
applies NLM's update semantics in file-name order: the last occurrence of a PMID wins (later files supersede earlier
ones; within a file, the later record), then a deletion in file k removes that PMID from files <= k (a later file can
re-add it). The train/valid split is a hash of the key (splitmix64 with `split_seed`), so a document's side never
depends on which other files are present; `valid_min_docs` tops up tiny corpora with the lowest hashes. The merge
writes train/valid through builders whose index rename is the commit, after removing the old manifest.json, so an
interrupted merge leaves no complete-looking dataset. Cluster use: `file_range=START:END` runs only those units (no
merge); `merge_only=true` then merges (data_prep/README.md).
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from data_prep.binarize import Encoder, chunked, write_chunks
from data_prep.checks import check_writable_dir, parse_iso_date
from data_prep.pubmed_xml import Article, Deletion, InputError, Malformed, iter_pubmed_xml
from data_prep.text_corpus import iter_jsonl, iter_txt

log = logging.getLogger("data_prep.pubmed")

FORMATS = {".xml": "pubmed_xml", ".jsonl": "jsonl", ".txt": "txt"}
UNIT_VERSION = 1


class DataPrepError(Exception):
    """The run cannot finish (failed units, missing units for the merge, missing tokenizer files)."""


@dataclass
class Options:
    """`conf/data_prep/dataset/pubmed.yaml` (see the comments there)."""

    format: str = "auto"
    abstract_labels: bool = True
    revised_before: Optional[str] = None
    jsonl_fields: tuple = ("title", "abstract")
    jsonl_id_field: str = "id"
    dedup: bool = True
    valid_fraction: float = 0.002
    valid_min_docs: int = 5
    split_seed: int = 0
    chunk_docs: int = 64

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "Options":
        d = {k: v for k, v in dict(d or {}).items() if k != "name"}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown pubmed dataset option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        opts = cls(**d)
        opts.jsonl_fields = tuple(opts.jsonl_fields)
        opts.revised_before = parse_iso_date(opts.revised_before, "dataset.revised_before")
        if opts.format not in ("auto", *FORMATS.values()):
            raise ValueError(f"dataset.format={opts.format!r}; expected auto, pubmed_xml, jsonl or txt")
        if not 0.0 <= opts.valid_fraction < 1.0:
            raise ValueError(f"dataset.valid_fraction={opts.valid_fraction} must be in [0, 1)")
        return opts

    def text_settings(self) -> dict:
        """What changes the documents a unit produces (part of the unit fingerprint)."""
        return {"format": self.format, "abstract_labels": self.abstract_labels, "revised_before": self.revised_before,
                "jsonl_fields": list(self.jsonl_fields), "jsonl_id_field": self.jsonl_id_field,
                "text": "title + ' ' + abstract"}


# --- inputs -------------------------------------------------------------------------------------------------------

def input_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    for suffix, f in FORMATS.items():
        if name.endswith(suffix):
            return f
    raise InputError(f"{path}: cannot tell the format from the file name; set dataset.format=pubmed_xml|jsonl|txt")


def _is_input(path: Path, fmt: str) -> bool:
    if not path.is_file() or path.name.startswith(".") or path.suffix in (".md5", ".part", ".tmp"):
        return False
    if fmt != "auto":
        return True
    try:
        input_format(path)
        return True
    except InputError:
        return False


def find_inputs(raw: str | os.PathLike, fmt: str = "auto") -> list[Path]:
    """raw_dir may be a directory (its input files, not recursive), one file, or a glob. Sorted by file name."""
    raw_s = os.fspath(raw)
    if any(ch in raw_s for ch in "*?["):
        paths = [Path(p) for p in glob.glob(raw_s, recursive=True)]
    elif Path(raw_s).is_dir():
        paths = list(Path(raw_s).iterdir())
    elif Path(raw_s).exists():
        paths = [Path(raw_s)]
    else:
        raise InputError(f"raw_dir {raw_s} does not exist")
    paths = sorted((p for p in paths if _is_input(p, fmt)), key=lambda p: (p.name, str(p)))
    if not paths:
        raise InputError(f"no input files in {raw_s} (looked for *.xml, *.jsonl, *.txt, optionally .gz)")
    names = Counter(p.name for p in paths)
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise InputError(f"input file names must be unique (they name the units); repeated: {dup[:5]}")
    return paths


def parse_file_range(spec: Optional[str], n: int) -> slice:
    """"START:END" (python slice over the sorted inputs, END exclusive, either side optional)."""
    if spec is None or str(spec).strip() in ("", ":"):
        return slice(0, n)
    text = str(spec).strip()
    if ":" not in text:
        raise ValueError(f"file_range={spec!r}: expected START:END, e.g. 0:100")
    a, b = text.split(":", 1)
    try:
        return slice(int(a) if a.strip() else 0, int(b) if b.strip() else n)
    except ValueError:
        raise ValueError(f"file_range={spec!r}: START and END must be integers") from None


# --- records -> documents ---------------------------------------------------------------------------------------

def iter_records(path: Path, opts: Options):
    fmt = input_format(path, opts.format)
    if fmt == "pubmed_xml":
        return iter_pubmed_xml(path, labels=opts.abstract_labels)
    if fmt == "jsonl":
        return iter_jsonl(path, opts.jsonl_fields, opts.jsonl_id_field)
    return iter_txt(path)


def document_text(article: Article) -> str:
    return f"{article.title} {article.abstract}" if article.title else article.abstract


def iter_documents(path: Path, opts: Options, counts: Counter, deleted: list) -> Iterator[tuple[int, str]]:
    """(key, text) for every kept item of one file; skips are counted in `counts` by reason, deletions collected.

    Malformed records are reported once per file when it is done: how many, and the first one (not one line each).
    """
    malformed: list[Malformed] = []
    try:
        for rec in iter_records(path, opts):
            if isinstance(rec, Deletion):
                deleted.extend(rec.pmids)
                counts["deletions_listed"] += len(rec.pmids)
                continue
            counts["read"] += 1
            if isinstance(rec, Malformed):
                counts["skipped_malformed"] += 1
                malformed.append(rec)
                continue
            if rec.abstract is None:
                counts["skipped_no_abstract"] += 1
            elif not rec.abstract:
                counts["skipped_empty_abstract"] += 1
            elif opts.revised_before and rec.revised and rec.revised >= opts.revised_before:
                counts["skipped_revised_after_cutoff"] += 1
            else:
                counts["kept"] += 1
                yield rec.pmid, document_text(rec)
    finally:
        if malformed:
            first = malformed[0]
            log.warning("%s: %d malformed record(s) skipped (first: record %d: %s)", path, len(malformed),
                        first.record, first.reason)


# --- units ----------------------------------------------------------------------------------------------------------

def unit_dir(parts: Path, path: Path) -> Path:
    return parts / path.name


def _input_stat(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def unit_is_complete(udir: Path, path: Path, fingerprint: Mapping) -> bool:
    try:
        meta = json.loads((udir / "meta.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    st = _input_stat(path)
    return (meta.get("fingerprint") == dict(fingerprint) and meta["input"]["bytes"] == st["bytes"]
            and meta["input"]["mtime_ns"] == st["mtime_ns"])


def read_unit_meta(udir: Path) -> dict:
    return json.loads((udir / "meta.json").read_text(encoding="utf-8"))


def clean_stale_tmp(parts: Path, names: list[str]) -> None:
    """Remove leftovers of killed runs for these units only (other cluster jobs may be writing theirs)."""
    for name in names:
        for tmp in parts.glob(f".{glob.escape(name)}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def process_unit(path: Path, parts: Path, encoder: Encoder, tokenizer, opts: Options, fingerprint: Mapping,
                 on_docs: Optional[Callable[[int], Any]] = None) -> dict:
    """Parse, filter, encode and write one input file as parts/<name>/ (atomic directory rename)."""
    from biogpt_train.data.indexed_dataset import MMapIndexedDatasetBuilder, best_fitting_int_dtype
    from biogpt_train.utils import atomic_write, sha256_file

    final = unit_dir(parts, path)
    tmp = parts / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts: Counter = Counter()
    deleted: list[int] = []
    keys: list[int] = []
    t0 = time.perf_counter()

    def texts():
        for key, text in iter_documents(path, opts, counts, deleted):
            keys.append(key)
            yield text

    try:
        dtype = best_fitting_int_dtype(len(tokenizer.dictionary))
        with MMapIndexedDatasetBuilder(tmp / "part.bin", dtype=dtype) as builder:
            stats = write_chunks(builder, encoder.encode_chunks(chunked(texts(), opts.chunk_docs)),
                                 tokenizer.dictionary.unk(), on_docs)
            builder.finalize(tmp / "part.idx")
        if len(keys) != stats["docs"]:
            raise AssertionError(f"{path}: {len(keys)} keys for {stats['docs']} documents")
        np.save(tmp / "keys.npy", np.asarray(keys, dtype=np.int64))
        np.save(tmp / "deleted.npy", np.asarray(deleted, dtype=np.int64))
        meta = {
            "version": UNIT_VERSION,
            "input": {**_input_stat(path), "sha256": sha256_file(path)},
            "fingerprint": dict(fingerprint),
            "counts": dict(counts),
            "docs": stats["docs"],
            "tokens": stats["tokens"],
            "unk_tokens": stats["unk_tokens"],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        atomic_write(tmp / "meta.json", json.dumps(meta, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_UNIT_WORKER: dict = {}


def _init_unit_worker(tokenizer, parts, opts, fingerprint) -> None:
    _UNIT_WORKER.update(tokenizer=tokenizer, parts=parts, opts=opts, fingerprint=fingerprint)


def _unit_task(path: Path) -> dict:
    w = _UNIT_WORKER
    with Encoder(w["tokenizer"], 1) as enc:
        return process_unit(path, w["parts"], enc, w["tokenizer"], w["opts"], w["fingerprint"])


def run_units(todo: list[Path], parts: Path, tokenizer, opts: Options, fingerprint: Mapping, workers: int,
              progress: bool) -> tuple[list[dict], list[dict]]:
    """Process units; returns (metas of finished units, failures). With at least `workers` files to do, each worker
    process takes whole files (parsing scales too: PubMed XML parsing costs about as much as encoding); with fewer
    files, one file at a time is parsed here and encoded by `workers` processes."""
    from data_prep.binarize import _start_method

    done, failures = [], []
    if not todo:
        return done, failures
    bar = _bar(progress and bool(todo), desc="encode", unit="doc")

    def failed(path, err):  # listed once, in the DataPrepError raised by run()
        failures.append({"unit": path.name, "error": str(err)})

    if workers > 1 and len(todo) >= workers:
        ctx = mp.get_context(_start_method())
        with ctx.Pool(workers, initializer=_init_unit_worker, initargs=(tokenizer, parts, opts, fingerprint)) as pool:
            pending = [(path, pool.apply_async(_unit_task, (path,))) for path in todo]
            for i, (path, result) in enumerate(pending):
                try:
                    meta = result.get()
                    done.append(meta)
                    bar.update(meta["docs"])
                except InputError as err:
                    failed(path, err)
                bar.set_postfix_str(f"{i + 1}/{len(todo)} files", refresh=False)
    else:
        with Encoder(tokenizer, workers) as encoder:
            for i, path in enumerate(todo):
                bar.set_postfix_str(f"file {i + 1}/{len(todo)} {path.name}", refresh=False)
                try:
                    done.append(process_unit(path, parts, encoder, tokenizer, opts, fingerprint, bar.update))
                except InputError as err:
                    failed(path, err)
    bar.close()
    return done, failures


def _bar(enabled: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not enabled, **kw)


# --- merge ----------------------------------------------------------------------------------------------------------

def splitmix64(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """Vectorised splitmix64 finaliser of int64 keys -> uint64 (a fixed, documented hash for the split)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_valid(keys: np.ndarray, fraction: float, min_docs: int, seed: int) -> np.ndarray:
    """Boolean mask: True = valid. Hash-uniform in [0, 1) below `fraction`, topped up to `min_docs` (at most half
    the corpus) with the lowest hashes, so tiny corpora still get a validation set."""
    u = (splitmix64(keys, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    valid = u < fraction
    want = min(int(min_docs), len(keys) // 2)
    if valid.sum() < want:
        valid[np.argsort(u, kind="stable")[:want]] = True
    return valid


def select_documents(keys: list[np.ndarray], deleted: list[np.ndarray], dedup: bool) -> tuple[list[np.ndarray], dict]:
    """Per unit, a mask of the documents that survive "last occurrence wins" and DeleteCitation (file order)."""
    sizes = [len(k) for k in keys]
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    unit_of = np.repeat(np.arange(len(keys)), sizes)
    keep = np.ones(len(all_keys), dtype=bool)
    if dedup and len(all_keys):
        _, first_in_reversed = np.unique(all_keys[::-1], return_index=True)
        keep[:] = False
        keep[len(all_keys) - 1 - first_in_reversed] = True
    superseded = int(len(all_keys) - keep.sum())
    removed = 0
    del_keys = np.concatenate(deleted) if deleted else np.zeros(0, np.int64)
    if len(del_keys) and len(all_keys):
        del_unit = np.repeat(np.arange(len(deleted)), [len(d) for d in deleted])
        order = np.lexsort((del_unit, del_keys))  # by key, then unit: the last entry per key is its latest deletion
        dk, du = del_keys[order], del_unit[order]
        last = np.r_[dk[1:] != dk[:-1], True]
        dk, du = dk[last], du[last]
        pos = np.minimum(np.searchsorted(dk, all_keys), len(dk) - 1)
        hit = keep & (dk[pos] == all_keys) & (unit_of <= du[pos])
        removed = int(hit.sum())
        keep &= ~hit
    bounds = np.cumsum([0] + sizes)
    return [keep[bounds[i] : bounds[i + 1]] for i in range(len(keys))], {"superseded": superseded, "deleted": removed}


def merge_units(out_dir: Path, udirs: list[Path], opts: Options, vocab_size: int, progress: bool = False,
                item_fn: Optional[Callable] = None) -> dict:
    """Write out_dir/{train,valid}.{bin,idx} from finished units, in file order. `item_fn(ids, key) -> items`
    replaces a document by several items (encoder data: ELECTRA blocks, data_prep/encoder_corpus.py)."""
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder, best_fitting_int_dtype

    keys = [np.load(d / "keys.npy") for d in udirs]
    deleted = [np.load(d / "deleted.npy") for d in udirs]
    masks, stats = select_documents(keys, deleted, opts.dedup)
    kept_keys = np.concatenate([k[m] for k, m in zip(keys, masks)]) if keys else np.zeros(0, np.int64)
    if len(kept_keys) == 0:
        raise DataPrepError(f"no documents left to write to {out_dir}: all {sum(len(k) for k in keys)} kept "
                            f"documents of {len(udirs)} unit(s) were superseded ({stats['superseded']}) or listed in "
                            f"a DeleteCitation ({stats['deleted']}); nothing was written (check the input files)")
    valid_all = split_valid(kept_keys, opts.valid_fraction, opts.valid_min_docs, opts.split_seed)
    dtype = best_fitting_int_dtype(vocab_size)
    counts = {"train": [0, 0], "valid": [0, 0]}  # docs, tokens
    pos = 0
    bar = _bar(progress, desc="merge", unit="file", total=len(udirs))
    with MMapIndexedDatasetBuilder(out_dir / "train.bin", dtype=dtype) as train, \
            MMapIndexedDatasetBuilder(out_dir / "valid.bin", dtype=dtype) as valid:
        for udir, mask in zip(udirs, masks):
            part = MMapIndexedDataset(udir / "part")
            for i in np.flatnonzero(mask).tolist():
                ids = part[i]
                name = "valid" if valid_all[pos] else "train"
                for item in ([ids] if item_fn is None else item_fn(ids, kept_keys[pos])):
                    (valid if name == "valid" else train).add_item(item)
                    counts[name][0] += 1
                    counts[name][1] += len(item)
                pos += 1
            bar.update(1)
        bar.close()
        valid.finalize(out_dir / "valid.idx")
        train.finalize(out_dir / "train.idx")
    if counts["valid"][0] == 0 and opts.valid_fraction > 0:
        log.warning("the valid split is empty (%d documents in all)", len(kept_keys))
    return {**stats, "train_docs": counts["train"][0], "train_tokens": counts["train"][1],
            "valid_docs": counts["valid"][0], "valid_tokens": counts["valid"][1]}


# --- vocabulary -----------------------------------------------------------------------------------------------------

@dataclass
class BpeOptions:
    learn: bool = False
    merges: int = 40000
    vocab_dict: Optional[str] = None
    padding_factor: int = 8
    max_docs: Optional[int] = None
    learn_only: bool = False

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "BpeOptions":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown bpe option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def learn_vocabulary(inputs: list[Path], out_dir: Path, opts: Options, bpe: BpeOptions, workers: int,
                     progress: bool = False) -> tuple[Path, Path]:
    """bpe.learn=true: Moses-tokenize the kept documents, learn fastBPE codes, build dict.txt (fairseq, padding 8).
    Reused when out_dir/bpe_learn.json matches the inputs and settings."""
    import itertools

    from biogpt_train.utils import atomic_write, sha256_file
    from data_prep.bpe_learn import MosesPretokenizer, build_dictionary, count_words, learn_bpe, write_bpecodes

    dict_path, codes_path, meta_path = out_dir / "dict.txt", out_dir / "bpecodes", out_dir / "bpe_learn.json"
    fingerprint = {"inputs": [_input_stat(p) for p in inputs], "text": opts.text_settings(),
                   "merges": bpe.merges, "padding_factor": bpe.padding_factor, "max_docs": bpe.max_docs,
                   "vocab_dict": sha256_file(bpe.vocab_dict) if bpe.vocab_dict else None}
    for entry in fingerprint["inputs"]:
        entry.pop("path")
    if meta_path.exists() and dict_path.exists() and codes_path.exists():
        if json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
            log.info("reusing learned vocabulary in %s", out_dir)
            return dict_path, codes_path
    meta_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    counts: Counter = Counter()
    docs = (text for p in inputs for _, text in iter_documents(p, opts, counts, []))
    if bpe.max_docs:
        docs = itertools.islice(docs, int(bpe.max_docs))
    word_counts: dict[str, int] = {}
    bar = _bar(progress, desc="bpe: tokenize", unit="doc")
    with Encoder(MosesPretokenizer(), workers) as enc:
        for toks in enc.tokenize_chunks(chunked(docs, opts.chunk_docs)):
            count_words(toks, word_counts)
            bar.update(len(toks))
    bar.close()
    if not word_counts:
        raise DataPrepError(f"bpe.learn: no documents to learn from in {len(inputs)} input file(s)")
    bar = _bar(progress, desc="bpe: merges", unit="merge", total=bpe.merges)
    merges = learn_bpe(word_counts, bpe.merges, progress=bar.update)
    bar.close()
    write_bpecodes(codes_path, merges)
    if bpe.vocab_dict:
        atomic_write(dict_path, Path(bpe.vocab_dict).read_bytes())
    else:
        build_dictionary(word_counts, codes_path, bpe.padding_factor).save(dict_path)
    meta = {"fingerprint": fingerprint, "docs": int(counts["kept"]), "words": sum(word_counts.values()),
            "unique_words": len(word_counts), "merges_learned": len(merges),
            "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
    log.info("learned %d BPE merges from %d words (%d unique) in %.1fs", len(merges), meta["words"],
             meta["unique_words"], meta["seconds"])
    return dict_path, codes_path


def tokenizer_files(tokenizer_dir: Path) -> tuple[Path, Path]:
    d, c = tokenizer_dir / "dict.txt", tokenizer_dir / "bpecodes"
    missing = [str(p) for p in (d, c) if not p.is_file()]
    if missing:
        raise DataPrepError(
            f"tokenizer_dir {tokenizer_dir} lacks {', '.join(missing)}: download BioGPT's with "
            f"`python -m data_prep.download biogpt_tokenizer --dest {tokenizer_dir}`, point tokenizer_dir (or "
            "BIOGPT_TOKENIZER_DIR) elsewhere, or learn one with bpe.learn=true")
    return d, c


def load_tokenizer(dict_path: Path, codes_path: Path):
    from biogpt_train.data.tokenizer import Tokenizer

    tok = Tokenizer.from_files(dict_path, codes_path)
    tok.dict_path = Path(dict_path)  # task builders copy this file byte for byte
    return tok


# --- the run --------------------------------------------------------------------------------------------------------

def run(raw_dir, out_dir, *, tokenizer_dir=None, workers: int = 1, bpe: Optional[Mapping] = None,
        options: Optional[Mapping] = None, file_range: Optional[str] = None, merge_only: bool = False,
        progress: bool = True, tokenizer: str = "bpe", tokenizer_model=None, spm: Optional[Mapping] = None,
        encoder: Optional[Mapping] = None) -> dict:
    """Prepare the LM corpus; returns the summary (also written into manifest.json when the merge ran).

    tokenizer="bpe": BioGPT's Moses + fastBPE with tokenizer_dir's dict.txt + bpecodes (or learned: bpe.learn);
    tokenizer="sentencepiece": tokenizer_model's SentencePiece model (or one trained here: spm.train), documents
    `<s> text </s>` (data_prep/spm.py); tokenizer="wordpiece" (with `encoder` options): WordPiece and ELECTRA's
    [CLS] A [SEP] B [SEP] blocks (data_prep/encoder_corpus.py)."""
    from biogpt_train.utils import atomic_write, sha256_file
    from data_prep import spm as spm_mod

    t_start = time.perf_counter()
    opts, bpe_opts, spm_opts = Options.from_dict(options), BpeOptions.from_dict(bpe), spm_mod.SpmOptions.from_dict(spm)
    kind = "wordpiece" if encoder is not None else spm_mod.check_kind(tokenizer)
    out_dir = check_writable_dir(out_dir, "out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = out_dir / "parts"
    parts.mkdir(exist_ok=True)
    inputs = find_inputs(raw_dir, opts.format)
    summary: dict[str, Any] = {"dataset": "pubmed", "raw_dir": str(raw_dir), "out_dir": str(out_dir),
                               "inputs": len(inputs), "workers": workers}

    if kind == "sentencepiece":
        if spm_opts.train:
            if file_range is not None and not (out_dir / "spm_train.json").exists():
                raise DataPrepError("spm.train=true needs the whole corpus: train first with `spm.train=true "
                                    "spm.train_only=true` (no file_range), then start the file_range jobs")
            model = spm_mod.learn_sentencepiece(inputs, out_dir, opts, spm_opts, progress)
        else:
            model = spm_mod.model_file(tokenizer_model)
        if spm_opts.train_only:
            return {**summary, "learned": {"tokenizer_model": str(model)}}
        tok = spm_mod.SpmTextEncoder(model, bos=True)
        vocab_fingerprint = {"tokenizer": "sentencepiece", "bos": True, "tokenizer_model_sha256": sha256_file(model)}
        vocab_files = [(model, spm_mod.TOKENIZER_FILE)]
        manifest_vocab = {"dictionary": None, "tokenizer": spm_mod.tokenizer_entry(model)}
    elif kind == "wordpiece":  # WordPiece + ELECTRA blocks (data_prep/encoder_corpus.py)
        from data_prep import encoder_corpus as ec

        if encoder is None:
            raise DataPrepError("tokenizer=wordpiece needs its options (vocab=VOCAB.txt or wordpiece.train=true)")
        block_opts = ec.BlockOptions.from_dict(encoder.get("blocks"))
        vocab_txt = encoder.get("vocab")
        if encoder.get("train"):
            vocab_txt = out_dir / "vocab.txt"
            if not vocab_txt.exists():
                docs = (text for p in inputs for _, text in iter_documents(p, opts, Counter(), []))
                ec.train_vocab(docs, out_dir, vocab_size=int(encoder["vocab_size"]),
                               lowercase=bool(encoder["lowercase"]), min_frequency=int(encoder.get("min_frequency", 2)))
        if not vocab_txt or not Path(vocab_txt).is_file():
            raise DataPrepError(f"tokenizer=wordpiece needs vocab=VOCAB.txt (not found: {vocab_txt}) or "
                                "wordpiece.train=true")
        dict_path = Path(vocab_txt)
        tok = ec.SentenceWordPiece(dict_path, lowercase=bool(encoder["lowercase"]))
        tok_settings = ec.tokenizer_settings(dict_path, bool(encoder["lowercase"]), block_opts)
        vocab_fingerprint = {"tokenizer": tok_settings}
        vocab_files = [(dict_path, "vocab.txt")]
        manifest_vocab = {"dictionary": None, "tokenizer": tok_settings}
    else:
        if bpe_opts.learn:
            if file_range is not None and not (out_dir / "bpe_learn.json").exists():
                raise DataPrepError("bpe.learn=true needs the whole corpus: learn first with `bpe.learn=true "
                                    "bpe.learn_only=true` (no file_range), then start the file_range jobs")
            dict_path, codes_path = learn_vocabulary(inputs, out_dir, opts, bpe_opts, workers, progress)
        else:
            dict_path, codes_path = tokenizer_files(Path(tokenizer_dir))
        if bpe_opts.learn_only:
            return {**summary, "learned": {"dict": str(dict_path), "bpecodes": str(codes_path)}}
        tok = load_tokenizer(dict_path, codes_path)
        vocab_fingerprint = {"dict_sha256": sha256_file(dict_path), "bpecodes_sha256": sha256_file(codes_path)}
        vocab_files = [(dict_path, "dict.txt"), (codes_path, "bpecodes")]
        manifest_vocab = {"dictionary": dict_path, "tokenizer": {"kind": "bpe"}}

    fingerprint = {"version": UNIT_VERSION, **opts.text_settings(), **vocab_fingerprint}
    selected = inputs[parse_file_range(file_range, len(inputs))]
    done, failures, skipped_units = [], [], 0
    t_units = time.perf_counter()
    if not merge_only:
        clean_stale_tmp(parts, [p.name for p in selected])
        todo = [p for p in selected if not unit_is_complete(unit_dir(parts, p), p, fingerprint)]
        skipped_units = len(selected) - len(todo)
        if skipped_units:
            log.info("%d of %d units already complete, skipping them", skipped_units, len(selected))
        done, failures = run_units(todo, parts, tok, opts, fingerprint, workers, progress)
    unit_seconds = time.perf_counter() - t_units
    summary.update(_unit_summary(done, unit_seconds, workers), units_selected=len(selected),
                   units_already_complete=skipped_units, units_failed=failures)
    warn_unk(done, tok)
    if failures:
        print_summary(summary)
        raise DataPrepError(f"{len(failures)} unit(s) failed (of {len(failures) + len(done)} run; the others are "
                            "complete; fix these inputs and rerun): " + "; ".join(f"{f['unit']}: {f['error']}" for f in failures))
    if file_range is not None and not merge_only:
        log.info("file_range=%s done; run again with merge_only=true once every range has finished", file_range)
        print_summary(summary)
        return summary

    missing = [p.name for p in inputs if not unit_is_complete(unit_dir(parts, p), p, fingerprint)]
    if missing:
        raise DataPrepError(f"cannot merge: {len(missing)} of {len(inputs)} units are missing or stale "
                            f"(e.g. {missing[:5]}); run them first (without merge_only, or with their file_range)")
    udirs = [unit_dir(parts, p) for p in inputs]
    metas = [read_unit_meta(d) for d in udirs]
    check_kept(metas, raw_dir, opts)  # before anything in out_dir is replaced
    # While the outputs are replaced there is no manifest and no index: a killed merge leaves nothing that looks
    # complete (the builders' .idx renames are the commit, the manifest comes last).
    stale_vocab = {"dict.txt", "bpecodes", spm_mod.TOKENIZER_FILE, "vocab.txt"} - {n for _, n in vocab_files}  # other kinds'

    for name in ("manifest.json", "train.idx", "valid.idx", *stale_vocab):
        (out_dir / name).unlink(missing_ok=True)
    t_merge = time.perf_counter()
    item_fn = ec.block_maker(dict_path, block_opts, opts.split_seed) if kind == "wordpiece" else None
    merge = merge_units(out_dir, udirs, opts, len(tok.dictionary), progress, item_fn)
    outputs = [out_dir / f"{s}.{e}" for s in ("train", "valid") for e in ("bin", "idx")]
    for src, name in vocab_files:
        if src.resolve() != (out_dir / name).resolve():
            atomic_write(out_dir / name, src.read_bytes())
        outputs.append(out_dir / name)
    totals = Counter()
    for m in metas:
        totals.update(m["counts"])
    summary.update(
        corpus={k: int(v) for k, v in sorted(totals.items())},
        merge={**merge, "seconds": round(time.perf_counter() - t_merge, 3)},
        seconds=round(time.perf_counter() - t_start, 3),
    )
    settings = {"options": asdict(opts), "bpe": asdict(bpe_opts), "workers": workers,
                "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None,
                "tokenizer": tok_settings if kind == "wordpiece" else kind}
    if kind == "sentencepiece":
        settings.update(spm=asdict(spm_opts), tokenizer_model=str(tokenizer_model) if tokenizer_model else None)
    from data_prep.manifest import write_manifest

    write_manifest(out_dir, summary, outputs, inputs=[m["input"] for m in metas], settings=settings,
                   **manifest_vocab)
    print_summary(summary)
    return summary


_SKIP_REASONS = {  # unit counter -> what removed those records (for the "0 documents kept" error)
    "skipped_revised_after_cutoff": "dataset.revised_before={cutoff}",
    "skipped_no_abstract": "no abstract (always dropped)",
    "skipped_empty_abstract": "empty abstract (always dropped)",
    "skipped_malformed": "malformed records",
}


def check_kept(metas: list[dict], raw_dir, opts: Options) -> None:
    """Refuse to merge when the units kept no document at all (an over-eager filter, or empty inputs)."""
    counts: Counter = Counter()
    for m in metas:
        counts.update(m["counts"])
    if counts["kept"]:
        return
    names = [m["input"]["name"] for m in metas]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    if not counts["read"]:
        why = "they hold no records (empty input)"
    else:
        why = "removed by " + ", ".join(f"{_SKIP_REASONS.get(k, k).format(cutoff=opts.revised_before)}: {v}"
                                        for k, v in counts.most_common() if k.startswith("skipped_") and v)
        why = f"{counts['read']} records read, {why}"
    raise DataPrepError(f"0 documents kept from {len(metas)} input file(s) in {raw_dir} ({shown}): {why}; "
                        "nothing was written (check the inputs and the dataset.* filters)")


def warn_unk(metas: list[dict], tokenizer) -> None:
    """One warning for all units whose <unk> share is too high (a mismatched dict.txt/bpecodes pair hits all)."""
    high = []
    if not hasattr(tokenizer, "unk_warning"):  # the check is BioGPT's (a mismatched dict/bpecodes pair)
        return
    for m in metas:
        if "unk_tokens" not in m:
            continue
        message = tokenizer.unk_warning(m["unk_tokens"], m["tokens"] - m["docs"], m["input"]["name"])
        if message is not None:
            high.append(message)
    if high:
        more = f" (and {len(high) - 1} more input file(s) like it)" if len(high) > 1 else ""
        log.warning("%s%s", high[0], more)


def _unit_summary(metas: list[dict], seconds: float, workers: int) -> dict:
    docs = sum(m["docs"] for m in metas)
    tokens = sum(m["tokens"] for m in metas)
    counts = Counter()
    for m in metas:
        counts.update(m["counts"])
    return {
        "units_processed": len(metas),
        "read": int(counts["read"]),
        "kept": int(counts["kept"]),
        "skipped": {k[len("skipped_"):]: int(v) for k, v in sorted(counts.items()) if k.startswith("skipped_")},
        "deletions_listed": int(counts["deletions_listed"]),
        "docs_written": docs,
        "tokens_written": tokens,
        "unk_tokens": sum(m["unk_tokens"] for m in metas),
        "unit_seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 1) if seconds > 0 and docs else 0.0,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 and tokens else 0.0,
        "docs_per_s_per_worker": round(docs / seconds / max(1, workers), 1) if seconds > 0 and docs else 0.0,
    }


def print_summary(s: Mapping[str, Any]) -> None:
    lines = [f"data_prep pubmed: {s.get('inputs')} input file(s), {s.get('units_processed', 0)} unit(s) processed "
             f"this run, {s.get('units_already_complete', 0)} already complete, {len(s.get('units_failed', []))} failed"]
    if s.get("units_processed"):
        lines.append(f"  this run: read {s['read']} records, kept {s['kept']}, skipped {s['skipped']}, "
                     f"{s['deletions_listed']} PMIDs listed for deletion")
        lines.append(f"  wrote {s['docs_written']} documents, {s['tokens_written']} tokens ({s['unk_tokens']} <unk>) in "
                     f"{s['unit_seconds']:.1f}s: {s['docs_per_s']} docs/s, {s['tokens_per_s']} tokens/s "
                     f"({s['docs_per_s_per_worker']} docs/s per worker, {s['workers']} worker(s))")
    if "merge" in s:
        m = s["merge"]
        lines.append(f"  merged: train {m['train_docs']} docs / {m['train_tokens']} tokens, valid {m['valid_docs']} "
                     f"docs / {m['valid_tokens']} tokens; {m['superseded']} superseded, {m['deleted']} deleted "
                     f"-> {s['out_dir']}")
    print("\n".join(lines), flush=True)  # failed units: listed once, in the DataPrepError that follows
