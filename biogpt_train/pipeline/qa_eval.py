"""The `generate` and `score` stages for extractive QA (task.name=squad|bioasq): decode -> post-process -> score.

generate(cfg, run_dir)
    Loads ``generation.checkpoint`` (a native checkpoint of this trainer, or a transformers ELECTRA/BERT directory
    read with checkpoint/hf_encoder.py), makes the windowed features of ``{task.data}/{generation.subset}.json``
    (task.max_seq_length / doc_stride / max_query_length), runs the QA model in order, and post-processes the
    logits as the legacy ``run_squad.py`` (data/squad.py: n_best_size, max_answer_length, SQuAD v2's null answer
    with null_score_diff_threshold). Writes to ``{run_dir}/{evaluation.output_dir}/``:
    ``{split}.predictions.json`` ({id: text}), ``{split}.nbest.json``, ``{split}.null_odds.json`` (v2 only), for
    bioasq ``{split}.bioasq.json`` (the snippet n-best lists merged per question, top 5, BioBERT's
    transform_nbset2bioasqform: the submission the official jar reads) and ``{split}.generate.json`` last.

score(cfg, run_dir)
    squad: EM / F1 (the official v1.1 or v2.0 script's semantics, by task.version_2_with_negative) against the
    split's own answers (or evaluation.gold). bioasq: strict / lenient accuracy and MRR of the merged answers
    against BioASQ golden files (evaluation.gold: one file, or several comma-separated test batches scored as
    BioM/BioBERT do, mean over batches) or, without one, a golden built from the split's own answers (every
    distinct answer text of a question's snippets is a synonym: data_prep/tasks/bioasq.golden_from_squad); plus
    snippet-level EM / F1 (the HF card's protocol) where the split has answers.
    Baseline: the first sentence of each context as the only answer (a trivial extractive floor).
    ``results.json`` has the generative tasks' layout (task, model, group, seed, split, metrics, primary_metric,
    units, baseline, paper, ...) with ``table_metrics`` so experiments.collect gives one row per metric.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import torch

from biogpt_train.data.encoder_data import qa_examples, qa_features, qa_tokenizer
from biogpt_train.utils import atomic_write, sha256_file

logger = logging.getLogger("biogpt_train")

PRIMARY = {"squad": "f1", "bioasq": "mrr"}
TABLE_METRICS = {"squad": ["exact", "f1"], "bioasq": ["strict", "lenient", "mrr", "exact", "f1"]}


def output_paths(cfg, run_dir: Path, split: str) -> dict[str, Path]:
    d = Path(run_dir) / cfg.evaluation.output_dir
    return {k: d / f"{split}.{k}.json" for k in ("predictions", "nbest", "null_odds", "bioasq", "generate")}


def load_qa_model(path: Path, device, dtype=torch.float32) -> torch.nn.Module:
    """QAModel from any checkpoint checkpoint/io.py reads (native training checkpoint, transformers directory)."""
    from biogpt_train.checkpoint.io import load_pretrained
    from biogpt_train.models.electra import QAModel

    model = load_pretrained(path)
    if not isinstance(model, QAModel):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a question-answering encoder (QAModel); "
                         "fine-tune it on squad/bioasq first")
    return model.to(device=device, dtype=dtype).eval()


@torch.no_grad()
def predict_logits(model, features, pad_id: int, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Start/end logits [N, T] of every feature, in order (padded to the longest; post-processing cuts rows)."""
    from biogpt_train.data.squad import collate

    width = max(len(f.input_ids) for f in features)
    starts, ends = [], []
    for i in range(0, len(features), batch_size):
        b = collate(features[i:i + batch_size], pad_id, pad_to=width)
        s, e = model(b["input_ids"].to(device), b["attention_mask"].to(device), b["token_type_ids"].to(device))
        starts.append(s.float().cpu())
        ends.append(e.float().cpu())
    return torch.cat(starts), torch.cat(ends)


def generate(cfg, run_dir: Path) -> dict:
    from biogpt_train import distributed
    from biogpt_train.data.squad import postprocess, write_json
    from biogpt_train.pipeline.evaluate import _now, resolve_checkpoint
    from biogpt_train.utils import file_entry
    from biogpt_train.scoring.bioasq import bioasq_answer_json, merge_nbest

    t, split = cfg.task, str(cfg.generation.subset)
    info = distributed.init(cfg.trainer.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    out = output_paths(cfg, run_dir, split)
    if not info.is_main:  # QA decoding is cheap: rank 0 does it all
        distributed.barrier()
        return {"predictions": str(out["predictions"])}
    t0 = time.perf_counter()
    ckpt = resolve_checkpoint(cfg, run_dir)
    examples = qa_examples(cfg, split)
    if cfg.evaluation.max_examples is not None:
        examples = examples[: int(cfg.evaluation.max_examples)]
    tokenizer = qa_tokenizer(cfg)
    features = qa_features(cfg, examples, tokenizer, training=False)
    model = load_qa_model(ckpt, info.device)
    start, end = predict_logits(model, features, tokenizer.pad_id, int(cfg.generation.batch_size), info.device)
    v2 = bool(t.version_2_with_negative)
    preds, nbest, null_odds = postprocess(examples, features, start, end, n_best_size=int(t.n_best_size),
                                          max_answer_length=int(t.max_answer_length), version_2=v2,
                                          null_score_diff_threshold=float(t.null_score_diff_threshold))
    out["generate"].unlink(missing_ok=True)
    write_json(out["predictions"], preds)
    write_json(out["nbest"], nbest)
    if v2:
        write_json(out["null_odds"], null_odds)
    if str(t.name) == "bioasq":
        write_json(out["bioasq"], bioasq_answer_json(merge_nbest(nbest)))
    meta = {"checkpoint": file_entry(ckpt), "split": split, "examples": len(examples),
            "features": len(features), "seconds": round(time.perf_counter() - t0, 3), "device": str(info.device),
            "created": _now(), "options": {k: t[k] for k in ("max_seq_length", "doc_stride", "max_query_length",
                                                            "n_best_size", "max_answer_length",
                                                            "version_2_with_negative", "null_score_diff_threshold",
                                                            "do_lower_case")}}
    atomic_write(out["generate"], json.dumps(meta, indent=1) + "\n")
    logger.info("generate: %d %s questions (%d windows) -> %s (%.1f s)", len(examples), split, len(features),
                out["predictions"], meta["seconds"])
    distributed.barrier()
    return {"predictions": str(out["predictions"]), "generated_examples": len(examples)}


# --- scoring ---------------------------------------------------------------------------------------------------
def first_sentence(context: str) -> str:
    m = re.search(r"[.!?](\s|$)", context)
    return context[: m.start() + 1] if m else context


def _mean_units(values) -> dict:
    return {"kind": "mean", "values": [float(v) for v in values]}


def squad_metrics(gold_json: dict, preds: dict, version: int, na_probs=None) -> tuple[dict, dict]:
    """(metrics, per-question units) with the official scripts' semantics (scoring/squad.py)."""
    from biogpt_train.scoring.squad import exact_score, f1_score, iter_questions, normalize_answer, squad_scores

    if version == 1:  # v1.1 needs a gold answer per question: score the answered ones
        gold_json = {"data": [{"paragraphs": [{"qas": [qa for qa in p.get("qas", []) if qa.get("answers")]}
                                              for p in a.get("paragraphs", [])]} for a in gold_json["data"]]}
    metrics = squad_scores(gold_json, preds, version, na_probs)
    units = {"exact": [], "f1": []}
    for qa in iter_questions(gold_json):
        golds = [a["text"] for a in qa.get("answers", [])]
        if version == 2:
            golds = [g for g in golds if normalize_answer(g)] or [""]
        pred = preds.get(qa["id"], "")
        units["exact"].append(max(exact_score(g, pred) for g in golds))
        units["f1"].append(max(f1_score(g, pred, version) for g in golds))
    return metrics, {k: _mean_units(v) for k, v in units.items()}


def bioasq_metrics(goldens: list[dict], answers: dict) -> tuple[dict, dict]:
    from biogpt_train.scoring.bioasq import (_question_scores, bioasq_factoid_batches, bioasq_factoid_scores,
                                             factoid_golds, ranked_answers)

    metrics = (bioasq_factoid_scores(goldens[0], answers) if len(goldens) == 1
               else bioasq_factoid_batches(goldens, answers))
    units = {"strict": [], "lenient": [], "mrr": []}
    for golden in goldens:
        for qid, synonyms in factoid_golds(golden):
            if qid in answers:
                for k, v in zip(units, _question_scores(synonyms, ranked_answers(answers[qid], qid))):
                    units[k].append(v)
    return metrics, {k: _mean_units(v) for k, v in units.items()}


def _read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def qa_scores(cfg, split: str, examples, preds: dict, nbest: dict, null_odds: dict | None) -> dict:
    """{"metrics", "units", "gold"} for the task (module docstring)."""
    from biogpt_train.scoring.bioasq import merge_nbest
    from data_prep.tasks.bioasq import golden_from_squad

    task, ev = str(cfg.task.name), cfg.evaluation
    split_json = Path(str(cfg.task.data).split(":")[0]) / f"{split}.json"
    answered = any(ex.answers for ex in examples)
    metrics, units, gold = {}, {}, {}
    if task == "squad" or answered:
        squad_gold = Path(ev.gold) if ev.gold and task == "squad" else split_json
        version = 2 if cfg.task.version_2_with_negative else 1
        m, u = squad_metrics(_read_json(squad_gold), preds, version)
        metrics.update(m)
        units.update(u)
        gold["squad"] = {"path": str(squad_gold.resolve()), "sha256": sha256_file(squad_gold)}
    if task == "bioasq":
        answers = merge_nbest(nbest)
        if ev.gold:
            paths = [Path(p) for p in str(ev.gold).split(",")]
            goldens, how = [_read_json(p) for p in paths], "evaluation.gold"
            gold["bioasq"] = {"paths": [str(p.resolve()) for p in paths], "how": how}
        elif answered:
            goldens = [golden_from_squad([ex for ex in examples if ex.answers])]
            gold["bioasq"] = {"how": f"answers of {split_json.name} (distinct texts per question = synonyms)"}
        else:
            raise FileNotFoundError(f"score: {split_json} has no answers (inputs only): give the BioASQ golden "
                                    "file(s) as evaluation.gold=7B1_golden.json,...,7B5_golden.json")
        m, u = bioasq_metrics(goldens, answers)
        metrics.update({k: v for k, v in m.items()})
        units.update(u)
    if not metrics:
        raise ValueError(f"score: {split_json} has no answers to score against; set evaluation.gold")
    return {"metrics": metrics, "units": units, "gold": gold}


def score(cfg, run_dir: Path) -> dict:
    from biogpt_train import distributed
    from biogpt_train.pipeline.evaluate import (_now, _overrides, _resolved, _software, _stage_return,
                                                default_group)
    from biogpt_train.tasks.paper_results import lookup
    from biogpt_train.utils import json_safe

    run_dir = Path(run_dir)
    ev, task, split = cfg.evaluation, str(cfg.task.name), str(cfg.generation.subset)
    results_path = run_dir / ev.results_file
    info = distributed.init(cfg.trainer.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    if info.rank != 0:
        distributed.barrier()
        return _stage_return(_read_json(results_path), results_path)
    out = output_paths(cfg, run_dir, split)
    if not out["generate"].exists():
        raise FileNotFoundError(f"score: {out['generate']} not found: run the `generate` stage first")
    meta = _read_json(out["generate"])
    examples = qa_examples(cfg, split)[: meta["examples"]]
    preds, nbest = _read_json(out["predictions"]), _read_json(out["nbest"])
    null_odds = _read_json(out["null_odds"]) if out["null_odds"].exists() else None
    scored = qa_scores(cfg, split, examples, preds, nbest, null_odds)
    baseline = None
    if ev.baseline:
        base_preds = {ex.id: first_sentence(ex.context) for ex in examples}
        base_nbest = {ex.id: [{"text": base_preds[ex.id], "probability": 1.0}] for ex in examples}
        b = qa_scores(cfg, split, examples, base_preds, base_nbest, None)
        baseline = {**{k: v for k, v in b["metrics"].items() if isinstance(v, (int, float))},
                    "prediction": "the first sentence of each context"}
    metrics, primary = scored["metrics"], PRIMARY[task]
    table = [m for m in TABLE_METRICS[task] if m in metrics]
    model = ev.model_label or str(cfg.model.arch)
    overrides = _overrides(run_dir)
    paper = {m: lookup(task, model, m) for m in table}
    results = {
        "format": "biogpt_train.results/1", "task": task, "model": model,
        "group": ev.group or default_group(str(cfg.run_name), overrides), "run_name": str(cfg.run_name),
        "seed": int(cfg.seed), "split": split, "primary_metric": primary, "primary": metrics.get(primary),
        "metrics": metrics, "table_metrics": table, "units": scored["units"].get(primary),
        "metric_units": scored["units"], "baseline": baseline,
        "paper": {k: v for k, v in paper.items() if v is not None} or None, "overrides": overrides,
        "checkpoint": meta["checkpoint"], "gold": scored["gold"],
        "data": {"dir": str(Path(str(cfg.task.data).split(":")[0]).resolve()), "examples_in_split": len(examples)},
        "predictions": {"path": str(out["predictions"].resolve()), "sha256": sha256_file(out["predictions"]),
                        "nbest": str(out["nbest"].resolve()), "decode_seconds": meta.get("seconds")},
        "generation": meta["options"], "config": _resolved(cfg), "created": _now(), "software": _software(),
    }
    try:
        atomic_write(results_path, json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n")
    finally:
        distributed.barrier()
    logger.info("score: %s %s %s", task, split, ", ".join(f"{m} {metrics[m]:.2f}" for m in table))
    return _stage_return(results, results_path)


__all__ = ["generate", "score", "load_qa_model", "predict_logits", "qa_scores", "squad_metrics", "bioasq_metrics",
           "first_sentence"]
