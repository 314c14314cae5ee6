"""The `generate` and `score` pipeline stages: decode an evaluation split as BioGPT's ``infer.sh`` and score it
with the task's official-equivalent metric, writing ``{run_dir}/results.json`` (reference §6, §7).

generate(cfg, run_dir)
    Decodes ``{task.data}/{generation.subset}.x-y.x`` (the binarised sources, i.e. the exact ids BioGPT's
    ``inference.py`` binarises) with ``generation.checkpoint`` (relative to the checkpoint directory, or absolute):
    source truncated to ``task.max_source_positions`` with ``...``, prompt appended, that prefix forced, decoding
    from ``</s>`` with ``generation.*`` (greedy by default), at most ``min(max_len_b, max_positions - 1)`` = 1023
    positions counting the prefix. Each output line is the whole hypothesis (source + prompt words + answer):
    ``{split}.hyp.bpe`` is ``tgt_dict.string`` of it (BioGPT's generate file), ``{split}.hyp.detok`` the same
    after ``sed 's/@@ //g'`` and the Moses detokenizer (BioGPT's ``*.detok``, what the scorers read). Both go to
    ``{run_dir}/{evaluation.output_dir}/`` with ``{split}.pmid`` (the ids of the decoded lines) and
    ``{split}.generate.json`` (checkpoint sha256, data checksums, options: written last, it marks the outputs
    complete). Rerunning with the same checkpoint, data and options reuses them (``evaluation.reuse``). Under
    torchrun every rank decodes a 1/world share; rank 0 merges.

score(cfg, run_dir)
    Finds the gold file for the task and split (``biogpt_train.tasks.registry``: explicit rules, first existing
    input wins, a clear error listing every place looked at otherwise), scores the ``.detok`` lines with
    ``biogpt_train.scoring.score``, computes the majority-class baseline, and writes ``results.json`` atomically:
    task, model, group, seed, split, metrics, primary_metric, units (per-document values for bootstrap CIs),
    baseline, paper, overrides, checkpoint {path, sha256}, data {files: sha256}, gold {path, sha256, how},
    predictions, generation options and the resolved config.

Majority-class baseline: every example gets the most frequent target line of the prepared training split
(``{task.train_subset}.y``; the evaluation split's own ``.y`` when there is no training split), scored exactly
like the model's output. For PubMedQA that is ``... is yes.``, for HoC ``... is empty.``; for the relation
extraction tasks it is the most frequent whole answer (a near-zero floor).

Configuration: ``EvaluationConfig`` in config/schema.py (the ``evaluation`` group of the root config) and ``generation.*``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from biogpt_train.tasks.registry import TaskSpec, get_task
from biogpt_train.utils import atomic_write, file_entry, json_safe, sha256_file

logger = logging.getLogger("biogpt_train")

RESULTS_FORMAT = "biogpt_train.results/1"
DTYPES = ("auto", "fp32", "fp16", "bf16")  # auto: generation.decode.decoding_dtype (BioGPT's inference.py)


# --- config access ---------------------------------------------------------------------------------------------
def data_dir(cfg) -> Path:
    return Path(str(cfg.task.data).split(":")[0])


def output_paths(cfg, run_dir: Path, split: str) -> dict[str, Path]:
    d = Path(run_dir) / cfg.evaluation.output_dir
    return {"detok": d / f"{split}.hyp.detok", "bpe": d / f"{split}.hyp.bpe", "pmid": d / f"{split}.pmid",
            "meta": d / f"{split}.generate.json"}


def _spec(cfg) -> TaskSpec:
    name = str(cfg.task.name)
    if name == "language_modeling":
        raise ValueError("the generate/score stages evaluate fine-tuning tasks; task=language_modeling has "
                         "no evaluation split (choose +experiment=bc5cdr|kd_dti|ddi|pubmedqa|hoc)")
    return get_task(name)


def _read_lines(path: Path) -> list[str]:
    with open(path, "r", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _write_lines(path: Path, lines) -> None:
    atomic_write(path, "".join(line + "\n" for line in lines))


def _read_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# --- generate --------------------------------------------------------------------------------------------------
def resolve_checkpoint(cfg, run_dir: Path) -> Path:
    name = str(cfg.generation.checkpoint)
    path = Path(name)
    save_dir = Path(run_dir) / cfg.checkpoint.save_dir
    if not path.is_absolute():
        path = save_dir / path
    if not path.exists():
        have = sorted(p.name for p in save_dir.glob("checkpoint*.pt")) if save_dir.is_dir() else []
        hint = ("run the `average` stage first" if path.name == cfg.checkpoint.average_output
                else "run the `train` stage first")
        raise FileNotFoundError(
            f"generate: checkpoint {path} not found (generation.checkpoint={name}); {save_dir} holds "
            f"{have or 'no checkpoints'}; {hint}, or give an absolute path")
    return path


def _split_prefix(cfg, split: str) -> Path:
    t = cfg.task
    return data_dir(cfg) / f"{split}.{t.source_lang}-{t.target_lang}.{t.source_lang}"


GENERATION_KEYS = ("beam", "max_len_b", "min_len", "lenpen", "no_repeat_ngram_size", "sampling", "temperature",
                   "topk", "topp", "seed", "fast_kernels")


def _generation_options(cfg) -> dict:
    return {k: cfg.generation.get(k) for k in GENERATION_KEYS}


def _decode_key(cfg, ckpt_sha256, split: str, n: int, device_type: str = "cpu") -> dict:
    """Everything the decoded text depends on: reuse needs all of it unchanged."""
    t, ev = cfg.task, cfg.evaluation
    prefix = _split_prefix(cfg, split)
    d = data_dir(cfg)
    vocab = next(name for name in ("dict.txt", "tokenizer.model", "vocab.txt") if (d / name).exists())
    return {
        "checkpoint_sha256": ckpt_sha256,
        "data": {f"{prefix.name}.bin": sha256_file(f"{prefix}.bin"), f"{prefix.name}.idx": sha256_file(f"{prefix}.idx"),
                 f"{split}.pmid": sha256_file(d / f"{split}.pmid"), vocab: sha256_file(d / vocab)},
        "split": split, "examples": n,
        "prompt": {"learned_prompt": int(t.learned_prompt), "learned_prompt_pattern": str(t.learned_prompt_pattern),
                   "manual_prompt": t.manual_prompt, "prefix": bool(t.prefix),
                   "max_source_positions": int(t.max_source_positions)},
        "generation": _generation_options(cfg),
        # auto resolves from the checkpoint (in the key by its sha256) and the device type
        "dtype": str(ev.dtype) if str(ev.dtype) != "auto" else f"auto:{device_type}",
    }


def _load_model(cfg, ckpt_path: Path, device, dtype: str):
    """(model, dictionary): the checkpoint's weights with the dictionary the binarised data refers to
    (task.data/dict.txt + the task's prompt symbols), which must be the checkpoint's own when it stores one."""
    import torch

    from biogpt_train.checkpoint import io as checkpoints
    from biogpt_train.data.splits import build_dictionary
    from biogpt_train.generation.decode import decoding_dtype

    loaded = checkpoints.read_checkpoint(ckpt_path)
    dictionary = build_dictionary(cfg)
    stored = loaded.dictionary_symbols
    if stored is not None and list(stored) != dictionary.symbols:
        first = next((i for i, (a, b) in enumerate(zip(stored, dictionary.symbols)) if a != b),
                     min(len(stored), len(dictionary)))
        raise ValueError(
            f"generate: the dictionary stored in {ckpt_path} ({len(stored)} symbols) differs from "
            f"{data_dir(cfg) / 'dict.txt'} + the task's prompt symbols ({len(dictionary)}), first at index {first}; "
            "the data was prepared with another dictionary or task.learned_prompt/manual_prompt changed")
    checkpoints.check_vocab(loaded.model_config, dictionary, data_dir(cfg) / "dict.txt", ckpt_path)
    torch_dtype = getattr(torch, decoding_dtype(dtype, loaded.cfg, device))
    model = checkpoints.build_model(loaded).to(device=device, dtype=torch_dtype).eval()
    return model, dictionary


def generate(cfg: DictConfig, run_dir: Path) -> dict:
    """The `generate` pipeline stage (module docstring); extractive QA tasks have pipeline/qa_eval.py's."""
    from biogpt_train import distributed
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset, dataset_exists

    run_dir = Path(run_dir)
    spec = _spec(cfg)
    ev = cfg.evaluation
    if str(ev.dtype) not in DTYPES:
        raise ValueError(f"evaluation.dtype must be one of {sorted(DTYPES)}, got {ev.dtype!r}")
    split = str(cfg.generation.subset)
    prefix = _split_prefix(cfg, split)
    if not dataset_exists(prefix):
        raise FileNotFoundError(
            f"generate: {prefix}.bin/.idx not found: split {split!r} of {spec.name} is not prepared in "
            f"{data_dir(cfg)} (generation.subset={split}); prepare it or decode another split")
    pmid_path = data_dir(cfg) / f"{split}.pmid"
    if not pmid_path.exists():
        raise FileNotFoundError(f"generate: {pmid_path} not found (data_prep writes one id per example)")
    sources = MMapIndexedDataset(prefix)
    pmids = _read_lines(pmid_path)
    if len(pmids) != len(sources):
        raise ValueError(f"generate: {pmid_path} has {len(pmids)} lines but {prefix}.bin has {len(sources)} "
                         "examples; re-run data_prep")
    n = len(sources) if ev.max_examples is None else min(int(ev.max_examples), len(sources))
    out = output_paths(cfg, run_dir, split)

    info = distributed.init(cfg.trainer.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    ckpt_path = resolve_checkpoint(cfg, run_dir)
    ckpt_entry = file_entry(ckpt_path)
    key = _decode_key(cfg, ckpt_entry["sha256"], split, n, info.device.type)
    if ev.reuse and _reusable(out, key):
        logger.info("generate: %s already holds %d decoded %s examples of %s with the same checkpoint, data and "
                    "options; reusing them (evaluation.reuse=false to decode again)", out["detok"].parent, n,
                    split, ckpt_path.name)
        return {"predictions": str(out["detok"]), "generated_examples": n}

    if info.is_main:
        out["meta"].unlink(missing_ok=True)  # the completion mark goes until the new outputs are all written
    t0 = time.perf_counter()
    model, dictionary = _load_model(cfg, ckpt_path, info.device, str(ev.dtype))
    prefixes = _prefixes(cfg, dictionary, [sources[i] for i in range(n)])
    mine = list(range(info.rank, n, info.world_size))
    logger.info("generate: decoding %d %s examples of %s with %s on %s (%s, rank %d/%d)", len(mine), split,
                spec.name, ckpt_path.name, info.device, ev.dtype, info.rank, info.world_size)
    hyps = _decode(cfg, model, [prefixes[i] for i in mine], dictionary)
    bpe = [dictionary.string(h) for h in hyps]
    # BioGPT: remove BPE and Moses-detokenise (infer.sh); a SentencePiece vocabulary already decodes to text
    detok = [_detokenize(b) for b in bpe] if _is_bpe(dictionary) else bpe
    seconds = time.perf_counter() - t0
    if info.world_size > 1:
        part = out["meta"].parent / f".{split}.rank{info.rank}.json"
        atomic_write(part, json.dumps({"index": mine, "bpe": bpe, "detok": detok}))
        distributed.barrier()
        if info.is_main:
            bpe, detok = [""] * n, [""] * n
            for r in range(info.world_size):
                p = out["meta"].parent / f".{split}.rank{r}.json"
                shard = json.loads(p.read_text(encoding="utf-8"))
                for i, b, d in zip(shard["index"], shard["bpe"], shard["detok"]):
                    bpe[i], detok[i] = b, d
                p.unlink()
    if info.is_main:
        _write_lines(out["bpe"], bpe)
        _write_lines(out["detok"], detok)
        _write_lines(out["pmid"], pmids[:n])
        meta = dict(key, checkpoint=ckpt_entry, seconds=round(seconds, 3), device=str(info.device),
                    world_size=info.world_size, created=_now(),
                    files={k: sha256_file(p) for k, p in out.items() if k != "meta"})
        atomic_write(out["meta"], json.dumps(meta, indent=1) + "\n")  # last: marks the outputs complete
        logger.info("generate: %d examples -> %s (%.1f s, %.2f s/example)", n, out["detok"], seconds,
                    seconds / max(len(mine), 1))
    distributed.barrier()
    return {"predictions": str(out["detok"]), "generated_examples": n}


def _reusable(out: dict[str, Path], key: dict) -> bool:
    if not all(p.exists() for p in out.values()):
        return False
    try:
        meta = json.loads(out["meta"].read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if any(meta.get(k) != v for k, v in key.items()):
        return False
    return all(sha256_file(p) == meta.get("files", {}).get(k) for k, p in out.items() if k != "meta")


def _prefixes(cfg, dictionary, sources) -> list[list[int]]:
    """BioGPT's inference prefix per example (generation/decode.py build_prefixes, as the generate CLI)."""
    from biogpt_train.data.prompt_dataset import prompt_ids
    from biogpt_train.generation.decode import build_prefixes

    t = cfg.task
    prompt = prompt_ids(dictionary, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern)
    return build_prefixes(sources, prompt, dictionary, int(t.max_source_positions), bool(t.prefix), t.sep_token)


def _decode(cfg, model, prefixes, dictionary) -> list[list[int]]:
    """Batched decoding (batched == unbatched); hypotheses = prefix + generated ids, no </s>."""
    from biogpt_train.generation.decode import decode_prefixes

    if not prefixes:
        return []
    opts = _generation_options(cfg)
    # the sequence start: BioGPT's </s> (a fairseq Dictionary has no prefix_token_id: eos), Llama's <s>
    bos = getattr(dictionary, "prefix_token_id", None)
    max_tokens, gap = cfg.generation.max_tokens, cfg.generation.max_length_gap
    return decode_prefixes(model, prefixes, batch_size=int(cfg.generation.batch_size),
                           max_tokens=None if max_tokens is None else int(max_tokens),
                           max_length_gap=None if gap is None else int(gap), progress=True,
                           max_positions=model.cfg.max_positions, eos=dictionary.eos(), pad=dictionary.pad(),
                           bos=bos, **opts)


def _is_bpe(dictionary) -> bool:
    from biogpt_train.data.dictionary import Dictionary

    return isinstance(dictionary, Dictionary)


def _detokenize(bpe_line: str) -> str:
    """infer.sh: ``sed 's/@@ //g'`` then ``detokenizer.perl -l en`` (sacremoses), as Tokenizer.detokenize_bpe."""
    from biogpt_train.generation.decode import plain_detokenize

    return plain_detokenize(bpe_line)


# --- gold ------------------------------------------------------------------------------------------------------
@dataclass
class Gold:
    path: Path  # the file the scorer reads
    how: str  # which rule produced it
    source: Optional[Path] = None  # the input it was derived from / copied out of (None: used as it is)
    restricted: bool = False  # limited to the decoded documents


def resolve_raw_dir(cfg, spec: TaskSpec) -> tuple[Optional[Path], str]:
    """(raw directory, where that choice came from) — see EvaluationConfig.raw_dir."""
    ev = cfg.evaluation
    if ev.raw_dir:
        return Path(ev.raw_dir), "evaluation.raw_dir"
    manifest = _read_manifest(data_dir(cfg))
    recorded = manifest.get("raw_dir") or (manifest.get("counts") or {}).get("raw_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded), f"raw_dir recorded in {data_dir(cfg) / 'manifest.json'}"
    prep = cfg.get("pipeline", {}).get("prepare", {}) if isinstance(cfg, DictConfig) else {}
    if prep and prep.get("raw_dir") and str(prep.get("dataset")) == spec.data_prep:
        return Path(prep.raw_dir), "pipeline.prepare.raw_dir"
    shared = cfg.get("paths", {}).get("shared") if isinstance(cfg, DictConfig) else None
    if shared:
        return Path(shared) / spec.raw_subdir, f"paths.shared/{spec.raw_subdir}"
    return None, "none"


def _data_setting(cfg, name: str, default=None):
    settings = _read_manifest(data_dir(cfg)).get("settings") or {}
    return settings.get(name, default)


def resolve_gold(cfg, spec: TaskSpec, split: str, pmids: list[str], out_dir: Path, restrict: bool,
                 dry: bool = False) -> Gold:
    """The gold file for ``split``: evaluation.gold, else the task's rules in order (registry docstring).
    ``dry``: only find the input the gold comes from (nothing derived or written; the run's start-up check)."""
    ev = cfg.evaluation
    if ev.gold:
        path = Path(ev.gold)
        if not path.is_file():
            raise FileNotFoundError(f"score: evaluation.gold={path} does not exist")
        if dry:
            return Gold(path, "evaluation.gold")
        return _restrict(spec, Gold(path, "evaluation.gold"), split, pmids, out_dir) if restrict else Gold(
            path, "evaluation.gold")
    raw_dir, raw_from = resolve_raw_dir(cfg, spec)
    fold = _data_setting(cfg, "fold", 0)
    tried = []
    for rule in spec.gold_rules(split):
        if rule.kind == "prepared":
            y = data_dir(cfg) / f"{split}.y"
            if not y.is_file():
                tried.append(f"{y} (the prepared targets, to derive the gold from)")
                continue
            if dry:
                return Gold(y, "prepared targets")
            return _derive_from_prepared(cfg, spec, split, pmids if restrict else None, out_dir)
        if raw_dir is None:
            tried.append(f"<raw_dir>/{rule.path} (no raw directory known: set evaluation.raw_dir)")
            continue
        src = Path(os.path.normpath(raw_dir / rule.path.format(split=split, fold=fold)))
        if not src.is_file():
            tried.append(str(src))
            continue
        name = rule.path.format(split=split, fold=fold)
        if dry:
            return Gold(src, f"raw file {name}")
        if rule.kind == "pqa_json":
            return _derive_pqa(src, name, split, pmids if restrict else None, out_dir)
        gold = Gold(src, f"raw file {name}")
        return _restrict(spec, gold, split, pmids, out_dir) if restrict else gold
    raise FileNotFoundError(
        f"score: no gold for {spec.name} split {split!r}. Looked for (in this order): {'; '.join(tried)}. "
        f"Raw directory: {raw_dir} (from {raw_from}). Official test labels are not in ../shared/data: give "
        f"evaluation.gold=FILE ({_GOLD_FORMAT_HELP[spec.gold_format]}) or evaluation.raw_dir=DIR, or decode a "
        "labelled split (generation.subset=valid)")


_GOLD_FORMAT_HELP = {
    "pubtator": "a PubTator file with CID relations, e.g. CDR_TestSet.PubTator.txt",
    "biogpt_json": "BioGPT's raw {split}.json with triples",
    "pqa_truth": "test_ground_truth.json, {pmid: yes|no|maybe}",
    "hoc_tsv": "BioGPT's test.tsv, sentence<TAB>labels",
}


def _derive_pqa(src: Path, name: str, split: str, pmids: Optional[list[str]], out_dir: Path) -> Gold:
    """{pmid: final_decision} (test_ground_truth.json's format) from a PubMedQA split file, in its order."""
    data = json.loads(src.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{src}: expected a PubMedQA JSON object keyed by PMID")
    truth = {}
    for pmid, rec in data.items():
        label = rec.get("final_decision") if isinstance(rec, dict) else None
        if not isinstance(label, str):
            raise ValueError(f"{src}: record {pmid!r} has no string final_decision (an inputs-only file?)")
        truth[str(pmid)] = label
    if pmids is not None:
        keep = set(pmids)
        truth = {k: v for k, v in truth.items() if k in keep}
    path = out_dir / f"{split}.gold.json"
    atomic_write(path, json.dumps(truth, indent=1) + "\n")
    return Gold(path, f"final_decision of {name}", src, pmids is not None)


def _answer(line: str, prefix: str, where: str) -> str:
    """The label of a prepared target line ``{prefix} {label}.`` (the data_prep templates)."""
    m = re.fullmatch(re.escape(prefix) + r" (.*)\.", line.strip())
    if m is None:
        raise ValueError(f"{where}: expected '{prefix} <label>.', found {line[:120]!r}")
    return m.group(1).strip()


def _derive_from_prepared(cfg, spec: TaskSpec, split: str, pmids: Optional[list[str]], out_dir: Path) -> Gold:
    d = data_dir(cfg)
    y_path = d / f"{split}.y"
    ys = _read_lines(y_path)
    n = len(ys) if pmids is None else len(pmids)
    labels = [_answer(y, spec.answer_prefix, f"{y_path}:{i + 1}") for i, y in enumerate(ys[:n])]
    if spec.gold_format == "pqa_truth":
        ids = _read_lines(d / f"{split}.pmid")[:n]
        path = out_dir / f"{split}.gold.json"
        atomic_write(path, json.dumps(dict(zip(ids, labels)), indent=1) + "\n")
    elif spec.gold_format == "hoc_tsv":
        xs = _read_lines(d / f"{split}.x")[:n]
        path = out_dir / f"{split}.gold.tsv"
        _write_lines(path, (f"{x}\t{label}" for x, label in zip(xs, labels)))
    else:
        raise ValueError(f"{spec.name}: gold cannot be derived from prepared targets ({spec.gold_format})")
    return Gold(path, f"derived from the prepared {y_path.name}", y_path, pmids is not None)


def _restrict(spec: TaskSpec, gold: Gold, split: str, pmids: list[str], out_dir: Path) -> Gold:
    """Limit a gold file to the decoded documents (smoke runs on a subset)."""
    keep = set(pmids)
    if spec.gold_format == "pubtator":
        lines = _read_lines(gold.path)
        doc = re.compile(r"^([^\t|]+)[\t|]")
        kept = [line for line in lines if not line.strip() or (m := doc.match(line)) and m.group(1).strip() in keep]
        path = out_dir / f"{split}.gold.PubTator.txt"
        _write_lines(path, kept)
    elif spec.gold_format == "pqa_truth":
        truth = json.loads(gold.path.read_text(encoding="utf-8"))
        path = out_dir / f"{split}.gold.json"
        atomic_write(path, json.dumps({k: v for k, v in truth.items() if k in keep}, indent=1) + "\n")
    elif spec.gold_format == "hoc_tsv":
        lines = [line for line in _read_lines(gold.path) if line.strip()][: len(pmids)]
        path = out_dir / f"{split}.gold.tsv"
        _write_lines(path, lines)
    else:  # biogpt_json: the scorer refuses gold documents without a line, so keep only the decoded ones
        docs = json.loads(gold.path.read_text(encoding="utf-8"))
        path = out_dir / f"{split}.gold.json"
        atomic_write(path, json.dumps({k: v for k, v in docs.items() if k in keep}, indent=1) + "\n")
    return Gold(path, gold.how + " (restricted to the decoded documents)", gold.path, True)


def resolve_entities(cfg, split: str) -> Path:
    ev = cfg.evaluation
    spec = _spec(cfg)
    if ev.entities:
        cands = [Path(ev.entities)]
    else:
        cands = [data_dir(cfg) / f"{split}.entities.json"]
        raw_dir, _ = resolve_raw_dir(cfg, spec)
        if raw_dir is not None:
            cands.append(raw_dir / f"{split}.entities.json")
    for p in cands:
        if p.is_file():
            return p
    raise FileNotFoundError(f"score: bc5cdr needs the split's name->MeSH map; none of {[str(p) for p in cands]} "
                            "exists (set evaluation.entities=FILE)")


def scorer_options(cfg, spec: TaskSpec) -> dict:
    ev = cfg.evaluation
    options = {}
    for setting, option in spec.scorer_options_from_data.items():
        value = _data_setting(cfg, setting)
        if value is not None:
            options[option] = value
    options.update({k: v for k, v in OmegaConf.to_container(ev.scorer_options).items() if v is not None})
    return options


# --- score -----------------------------------------------------------------------------------------------------
def score(cfg: DictConfig, run_dir: Path) -> dict:
    """The `score` pipeline stage (module docstring). Rank 0 scores; the others read its results."""
    from biogpt_train import distributed

    run_dir = Path(run_dir)
    ev = cfg.evaluation
    results_path = run_dir / ev.results_file
    info = distributed.init(cfg.trainer.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    if info.rank != 0:
        distributed.barrier()
        return _stage_return(json.loads(results_path.read_text(encoding="utf-8")), results_path)
    try:
        results = evaluate_predictions(cfg, run_dir)
        if results_path.exists():
            old = json.loads(results_path.read_text(encoding="utf-8") or "{}")
            if old.get("split") not in (None, results["split"]):
                logger.warning("score: overwriting %s, which held %s results (evaluation.results_file names "
                               "another file)", results_path, old.get("split"))
        atomic_write(results_path, json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n")
    finally:
        distributed.barrier()
    m = results["metrics"]
    logger.info("score: %s %s %s = %s (majority baseline %s) -> %s", results["task"], results["split"],
                results["primary_metric"], _fmt(m.get(results["primary_metric"])),
                _fmt((results.get("baseline") or {}).get(results["primary_metric"])), results_path)
    return _stage_return(results, results_path)


def _fmt(v) -> str:
    return "NaN" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _stage_return(results: dict, path: Path) -> dict:
    flat = {k: v for k, v in results["metrics"].items() if isinstance(v, (int, float)) or v is None}
    return {**flat, "primary_metric": results["primary_metric"], "primary": results["primary"],
            "results_json": str(path)}


def evaluate_predictions(cfg: DictConfig, run_dir: Path) -> dict:
    """Score the `generate` outputs of generation.subset; returns the results.json content (nothing written
    except derived gold files in the output directory)."""
    from biogpt_train.scoring import score as run_scorer

    spec = _spec(cfg)
    ev = cfg.evaluation
    split = str(cfg.generation.subset)
    out = output_paths(cfg, run_dir, split)
    if not out["meta"].exists():
        raise FileNotFoundError(f"score: {out['meta']} not found: run the `generate` stage first "
                                f"(pipeline.stages=[..., generate, score])")
    meta = json.loads(out["meta"].read_text(encoding="utf-8"))
    preds, pmids = _read_lines(out["detok"]), _read_lines(out["pmid"])
    if len(preds) != len(pmids) or len(preds) != meta["examples"]:
        raise ValueError(f"score: {out['detok']} ({len(preds)} lines) and {out['pmid']} ({len(pmids)}) do not "
                         f"match the {meta['examples']} decoded examples; rerun the `generate` stage")
    d = data_dir(cfg)
    n_split = len(_read_lines(d / f"{split}.pmid"))
    restrict = bool(ev.restrict_gold) or len(preds) < n_split
    gold = resolve_gold(cfg, spec, split, pmids, out["detok"].parent, restrict)
    kwargs: dict[str, Any] = dict(scorer_options(cfg, spec))
    if spec.uses_pmids:
        kwargs["pmids"] = pmids
    entities = None
    if spec.uses_entities:
        entities = resolve_entities(cfg, split)
        kwargs["entities"] = entities
    _warn_unscored_gold(spec, gold, pmids)
    result = run_scorer(spec.scorer, preds, gold.path, **kwargs)
    units = result.pop("units", None)

    baseline = majority_baseline(cfg, spec, split, len(preds), gold, kwargs) if ev.baseline else None
    data_files = {"dict.txt", "manifest.json", f"{split}.x", f"{split}.y", f"{split}.pmid",
                  f"{_split_prefix(cfg, split).name}.bin", f"{_split_prefix(cfg, split).name}.idx"}
    if baseline is not None and baseline.get("source"):
        data_files.add(Path(baseline["source"]).name)
    files = {name: sha256_file(d / name) for name in sorted(data_files) if (d / name).is_file()}
    if entities is not None:
        files[str(entities)] = sha256_file(entities)
    model = ev.model_label or str(cfg.model.arch)
    primary = result.get(spec.primary_metric)
    overrides = _overrides(run_dir)
    return {
        "format": RESULTS_FORMAT,
        "task": spec.name,
        "model": model,
        "group": ev.group or default_group(str(cfg.run_name), overrides),
        "run_name": str(cfg.run_name),
        "seed": int(cfg.seed),
        "split": split,
        "primary_metric": spec.primary_metric,
        "primary": primary,
        "metrics": result,
        "units": units,
        "baseline": baseline,
        "paper": _paper(spec, model),
        "overrides": overrides,
        "checkpoint": {"path": meta["checkpoint"]["path"], "sha256": meta["checkpoint"]["sha256"],
                       **({"bytes": meta["checkpoint"]["bytes"]} if "bytes" in meta["checkpoint"] else {})},
        "data": {"dir": str(d.resolve()), "files": files,
                 "manifest_sha256": files.get("manifest.json"), "examples_in_split": n_split},
        "gold": {"path": str(gold.path.resolve()), "sha256": sha256_file(gold.path), "how": gold.how,
                 "source": str(gold.source.resolve()) if gold.source else None,
                 "source_sha256": sha256_file(gold.source) if gold.source else None,
                 "restricted_to_decoded": gold.restricted},
        "predictions": {"path": str(out["detok"].resolve()), "sha256": sha256_file(out["detok"]),
                        "lines": len(preds), "decode_seconds": meta.get("seconds")},
        "generation": {**meta["generation"], "dtype": meta.get("dtype"), "prompt": meta.get("prompt"),
                       "device": meta.get("device")},
        "scorer_options": {k: v for k, v in kwargs.items() if k not in ("pmids", "entities")},
        "config": _resolved(cfg),
        "created": _now(),
        "software": _software(),
    }


def _warn_unscored_gold(spec: TaskSpec, gold: Gold, pmids: list[str]) -> None:
    if spec.gold_format != "pubtator" or gold.restricted:
        return
    doc = re.compile(r"^([^\t|]+)[\t|]")
    docs = {m.group(1).strip() for line in _read_lines(gold.path) if (m := doc.match(line))}
    missing = docs - set(pmids)
    if missing:
        logger.warning("score: %d of the %d gold documents in %s were not decoded; their relations count as false "
                       "negatives (the official evaluator's rule; evaluation.restrict_gold=true scores the decoded "
                       "documents only)", len(missing), len(docs), gold.path)


def majority_baseline(cfg, spec: TaskSpec, split: str, n: int, gold: Gold, kwargs: dict) -> Optional[dict]:
    """Every example answered with the most frequent training target line, scored like the model."""
    from biogpt_train.scoring import score as run_scorer

    d = data_dir(cfg)
    for path, source in ((d / f"{cfg.task.train_subset}.y", "training targets"), (d / f"{split}.y", "gold targets")):
        if path.is_file():
            lines = [line.strip() for line in _read_lines(path) if line.strip()]
            if lines:
                break
    else:
        logger.warning("score: no prepared targets (%s.y / %s.y) for the majority baseline", cfg.task.train_subset,
                       split)
        return None
    target, count = Counter(lines).most_common(1)[0]
    result = run_scorer(spec.scorer, [target] * n, gold.path, **kwargs)
    result.pop("units", None)
    return {**result, "prediction": target, "source": str(path), "from": source,
            "frequency": count / len(lines)}


def _paper(spec: TaskSpec, model: str) -> Optional[dict]:
    from biogpt_train.tasks.paper_results import lookup

    values = {m: lookup(spec.name, model, m) for m in spec.metrics}
    values = {k: v for k, v in values.items() if v is not None}
    return values or None


def _overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of the run (Hydra's .hydra/overrides.yaml in the run directory)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if path.exists():
        return [str(x) for x in (OmegaConf.load(path) or [])]
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(x) for x in HydraConfig.get().overrides.task]
    except Exception:  # not under @hydra.main (tests, direct calls)
        return []


# override keys that do not change what is measured (where things live, how fast, which seed)
_NOT_GROUPING = ("seed", "experiment", "sweep", "run_name", "trainer.device", "generation.batch_size",
                 "generation.max_tokens", "generation.max_length_gap", "checkpoint.restore_file")
_NOT_GROUPING_PREFIXES = ("paths.", "pipeline.", "logging.", "hydra.", "evaluation.", "distributed.")


def default_group(run_name: str, overrides: list[str]) -> str:
    """``run_name``, plus ``[k=v,...]`` for the overrides that change the result, so that collect averages only
    the seeds of one setting (an lr sweep's runs share the run name)."""
    keep = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in _NOT_GROUPING or key.startswith(_NOT_GROUPING_PREFIXES):
            continue
        keep.append(o.lstrip("+"))
    return f"{run_name}[{','.join(sorted(keep))}]" if keep else run_name


def _resolved(cfg) -> dict:
    from biogpt_train.config import resolved_dict

    return resolved_dict(cfg)




def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _software() -> dict:
    import torch

    from biogpt_train import __version__

    return {"biogpt_train": __version__, "python": platform.python_version(), "torch": torch.__version__}


__all__ = ["generate", "score", "evaluate_predictions", "resolve_gold", "majority_baseline"]
