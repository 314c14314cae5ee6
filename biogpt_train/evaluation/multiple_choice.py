"""Multiple-choice evaluation by log-likelihood (issue #12): PubMedQA, MedQA-USMLE and MedMCQA as plain data.

A task reads a local file into ``Item``s: ``prompt`` (the context), ``labels`` (the answer choices) and ``gold``
(an index, or None for unlabeled test inputs). Every choice is scored as the continuation " " + label (the
harness's ``target_delimiter``) with ``loglikelihood.loglikelihood``. Prompts are lm-evaluation-harness's:

pubmedqa (harness task ``pubmed_qa``, ``preprocess_pubmedqa.doc_to_text``)
    "Abstract: {contexts joined with \\n}\\nQuestion: {question}\\nAnswer:"  choices yes | no | maybe
    File: the PubMedQA repository's JSON ``{pmid: {"QUESTION", "CONTEXTS": [...], "final_decision", ...}}``
    (ori_pqal.json, pqal_fold0/train_set.json, dev_set.json; test_set_inputs.json has no final_decision, so it
    gives predictions without metrics), or a JSON list / JSONL of HF ``pubmed_qa`` records
    ``{"pubid", "question", "context": {"contexts": [...]}, "final_decision"}``.
medqa (harness task ``medqa_4options``, ``preprocess_medqa.doc_to_text``)
    "Question: {question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:"  choices A | B | C | D
    File: JSONL, one question a line, in the MedQA release's form
    ``{"question", "options": {"A": .., "B": .., "C": .., "D": ..}, "answer_idx": "A", "answer": ..}``
    (data_clean/questions/US/4_options/phrases_no_exclude_*.jsonl, GBaker/MedQA-USMLE-4-options), or the form the
    harness loads (GBaker/MedQA-USMLE-4-options-hf) ``{"sent1", "ending0".."ending3", "label": 0-3}``. Options are
    taken in the file's key order (the 5-option files give A-E).
medmcqa (harness task ``medmcqa``, ``utils_medmcqa.doc_to_text``)
    "Question: {question}\\nChoices:\\nA. {opa}\\nB. {opb}\\nC. {opc}\\nD. {opd}\\nAnswer:"  choices A | B | C | D
    File: JSONL (the release's train.json / dev.json are JSON lines) or a JSON list of
    ``{"id", "question", "opa", "opb", "opc", "opd", "cop"}``. ``cop`` is 1-4 in the MedMCQA release (its own loader
    subtracts 1) and 0-3 in the HF dataset the harness uses (openlifescienceai/medmcqa). ``cop_base="auto"`` decides
    per file: a 0 means 0-based, a 4 means 1-based; a file whose labels are all 1-3 is ambiguous and needs
    ``cop_base=0`` or ``1``. A missing cop, or -1 (the HF test split), is unlabeled.

Few-shot (the harness's delimiters): for each evaluated item, in file order, k + 1 labeled examples are drawn
from ``fewshot_path`` with one ``random.Random(seed)``, an example with the item's own id is dropped, the first k
kept; each is rendered ``prompt + " " + gold label``, and they are joined with "\\n\\n", followed by "\\n\\n" and
the item's prompt. The same seed gives the same prompts; the eval file can serve as its own pool.

Metrics, in percent like the generative results:
    acc       the choice with the highest summed log-prob (the first on ties, as np.argmax);
    acc_norm  the highest log-prob divided by the choice's length in UTF-8 bytes, counted on the choice text
              without the leading space ("yes" = 3): the harness's acc_norm (which counts characters) for ASCII
              choices, and its acc_bytes always. With one-letter choices (MedQA, MedMCQA) it equals acc;
    macro_f1  (PubMedQA) sklearn ``f1_score(gold, pred, average="macro")`` over the acc predictions, the PubMedQA
              repository's metric (classes: the labels present in gold or predictions).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from biogpt_train.evaluation.loglikelihood import loglikelihood
from biogpt_train.utils import atomic_write, file_entry, json_safe, sha256_file

logger = logging.getLogger("biogpt_train")

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
TABLE_METRICS = ("acc", "acc_norm", "macro_f1")  # the rows experiments.collect shows (those the task has)


class TaskDataError(ValueError):
    """A task file that cannot be read (the message names the file, the record and the remedy)."""


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    labels: Tuple[str, ...]  # answer choices; the scored continuation is " " + label
    gold: Optional[int]  # index into labels; None: unlabeled (test inputs)


@dataclass(frozen=True)
class Task:
    name: str
    read: Callable[..., List[Item]]  # read(path, **read_options)
    macro_f1: bool = False


# --- file readers ----------------------------------------------------------------------------------------------
def _load_json_records(path: Path) -> list:
    """A JSON document, or JSON lines (one record a line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskDataError(f"{path}: file not found") from None
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}:{lineno}: neither a JSON document nor JSON lines ({e})") from None
    return records


def _records(path: Path) -> List[Tuple[str, dict]]:
    """(default id, record) pairs from a JSON list, JSON lines, or one record."""
    docs = _load_json_records(path)
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    out = []
    for i, rec in enumerate(docs):
        if not isinstance(rec, dict):
            raise TaskDataError(f"{path}: record {i} is a {type(rec).__name__}, expected a JSON object")
        out.append((str(i), rec))
    return out


def _need(path: Path, rid: str, rec: dict, key: str):
    if key not in rec:
        raise TaskDataError(f"{path}: record {rid} has no {key!r} field (fields: {', '.join(sorted(rec))})")
    return rec[key]


PUBMEDQA_LABELS = ("yes", "no", "maybe")


def _pubmedqa_item(path: Path, rid: str, question: str, contexts, decision) -> Item:
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise TaskDataError(f"{path}: record {rid}: contexts must be a list of strings")
    gold = None
    if decision is not None:
        if decision not in PUBMEDQA_LABELS:
            raise TaskDataError(f"{path}: record {rid}: final_decision {decision!r} is not yes/no/maybe")
        gold = PUBMEDQA_LABELS.index(decision)
    prompt = f"Abstract: {chr(10).join(contexts)}\nQuestion: {question}\nAnswer:"
    return Item(rid, prompt, PUBMEDQA_LABELS, gold)


def read_pubmedqa(path) -> List[Item]:
    path = Path(path)
    docs = _load_json_records(path)
    if len(docs) == 1 and isinstance(docs[0], dict) and all(isinstance(v, dict) for v in docs[0].values()) \
            and "question" not in docs[0]:
        # the PubMedQA repository's {pmid: record}
        return [_pubmedqa_item(path, pmid, _need(path, pmid, r, "QUESTION"), _need(path, pmid, r, "CONTEXTS"),
                               r.get("final_decision")) for pmid, r in docs[0].items()]
    items = []
    for rid, r in _records(path):  # HF pubmed_qa records
        rid = str(r.get("pubid", rid))
        context = _need(path, rid, r, "context")
        contexts = context.get("contexts") if isinstance(context, dict) else None
        items.append(_pubmedqa_item(path, rid, _need(path, rid, r, "question"), contexts, r.get("final_decision")))
    return items


def _options_prompt(question: str, letters: Sequence[str], options: Sequence[str], header: str = "") -> str:
    return f"Question: {question}\n{header}" + "".join(f"{k}. {v}\n" for k, v in zip(letters, options)) + "Answer:"


def read_medqa(path) -> List[Item]:
    path = Path(path)
    items = []
    for rid, r in _records(path):
        rid = str(r.get("id", rid))
        if "sent1" in r:  # GBaker/MedQA-USMLE-4-options-hf, as the harness loads it
            options = [_need(path, rid, r, f"ending{k}") for k in range(4)]
            letters = ("A", "B", "C", "D")
            label = r.get("label")
            gold = None if label is None or int(label) < 0 else int(label)
            question = r["sent1"]
        else:
            opts = _need(path, rid, r, "options")
            if not isinstance(opts, dict) or not opts:
                raise TaskDataError(f"{path}: record {rid}: 'options' must be an object {{letter: text}}")
            letters, options = tuple(opts), list(opts.values())
            answer = r.get("answer_idx")
            if answer is not None and answer not in opts:
                raise TaskDataError(f"{path}: record {rid}: answer_idx {answer!r} is not one of {list(opts)}")
            gold = None if answer is None else letters.index(answer)
            question = _need(path, rid, r, "question")
        if gold is not None and not 0 <= gold < len(letters):
            raise TaskDataError(f"{path}: record {rid}: label {gold} is out of range for {len(letters)} options")
        items.append(Item(rid, _options_prompt(question, letters, options), tuple(letters), gold))
    return items


def _cop_base(path: Path, cops: List[int], cop_base) -> int:
    if cop_base in (0, 1, "0", "1"):
        return int(cop_base)
    if cop_base != "auto":
        raise TaskDataError(f"cop_base must be 'auto', 0 or 1, not {cop_base!r}")
    seen = set(cops)
    if 0 in seen and 4 in seen:
        raise TaskDataError(f"{path}: 'cop' values include both 0 and 4; the file mixes 0-based and 1-based labels")
    if 0 in seen:
        return 0
    if 4 in seen or not seen:
        return 1
    raise TaskDataError(f"{path}: every 'cop' is in 1-3, so it is unclear whether they count from 0 (HF medmcqa) "
                        "or 1 (the MedMCQA release); pass cop_base=0 or 1 (--cop-base)")


def read_medmcqa(path, cop_base="auto") -> List[Item]:
    path = Path(path)
    letters = ("A", "B", "C", "D")
    rows = []
    for rid, r in _records(path):
        rid = str(r.get("id", rid))
        options = [_need(path, rid, r, k) for k in ("opa", "opb", "opc", "opd")]
        cop = r.get("cop")
        cop = None if cop is None or int(cop) < 0 else int(cop)
        rows.append((rid, _need(path, rid, r, "question"), options, cop))
    base = _cop_base(path, [c for *_, c in rows if c is not None], cop_base)
    items = []
    for rid, question, options, cop in rows:
        gold = None if cop is None else cop - base
        if gold is not None and not 0 <= gold < 4:
            raise TaskDataError(f"{path}: record {rid}: cop {cop} is out of range for {base}-based labels")
        items.append(Item(rid, _options_prompt(question, letters, options, header="Choices:\n"), letters, gold))
    return items


TASKS: Dict[str, Task] = {
    "pubmedqa": Task("pubmedqa", read_pubmedqa, macro_f1=True),
    "medqa": Task("medqa", read_medqa),
    "medmcqa": Task("medmcqa", read_medmcqa),
}


def get_task(name) -> Task:
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise TaskDataError(f"unknown multiple-choice task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


# --- prompts ---------------------------------------------------------------------------------------------------
def fewshot_contexts(items: Sequence[Item], pool: Sequence[Item], k: int, seed: int = 1234) -> List[str]:
    """The context of every item: k solved examples from ``pool`` (module docstring), then the item's prompt."""
    if k <= 0:
        return [it.prompt for it in items]
    labeled = [p for p in pool if p.gold is not None]
    if len(labeled) < k:
        raise TaskDataError(f"{k}-shot prompts need {k} labeled examples in the few-shot file; it has {len(labeled)}")
    rng = random.Random(seed)
    out = []
    for it in items:
        drawn = [p for p in rng.sample(labeled, min(k + 1, len(labeled))) if p.id != it.id][:k]
        if len(drawn) < k:
            raise TaskDataError(f"item {it.id}: the few-shot file has only {len(labeled)} labeled examples, one of "
                                f"them the item itself; {k}-shot needs {k} others")
        shots = FEWSHOT_DELIMITER.join(p.prompt + TARGET_DELIMITER + p.labels[p.gold] for p in drawn)
        out.append(shots + FEWSHOT_DELIMITER + it.prompt)
    return out


# --- metrics ---------------------------------------------------------------------------------------------------
def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first of equal maxima, as np.argmax


def choose(logprobs: Sequence[float], labels: Sequence[str]) -> Tuple[int, int]:
    """(acc prediction, acc_norm prediction) for one item."""
    norm = [lp / len(label.encode("utf-8")) for lp, label in zip(logprobs, labels)]
    return _argmax(logprobs), _argmax(norm)


def metrics_for(task: Task, predictions: List[dict]) -> Tuple[dict, dict]:
    """(metrics, units per metric) over labeled predictions; metrics are None when nothing is labeled."""
    labeled = [p for p in predictions if p["gold"] is not None]
    n = len(labeled)
    metrics: dict = {"n": len(predictions), "labeled": n}
    units = {}
    for name, key in (("acc", "pred"), ("acc_norm", "pred_norm")):
        hits = [int(p[key] == p["gold"]) for p in labeled]
        metrics[name] = 100.0 * sum(hits) / n if n else None
        units[name] = {"kind": "mean", "values": hits} if n else None  # per-item, for bootstrap intervals
    if task.macro_f1:
        metrics["macro_f1"] = _macro_f1([p["gold_label"] for p in labeled], [p["pred_label"] for p in labeled])
    return metrics, units


def _macro_f1(gold: List[str], pred: List[str]) -> Optional[float]:
    if not gold:
        return None
    from sklearn.metrics import f1_score

    return 100.0 * float(f1_score(gold, pred, average="macro"))


def majority_baseline(task: Task, items: Sequence[Item], reference: Sequence[Item], source: str) -> Optional[dict]:
    """Every labeled item answered with the most frequent gold label of ``reference``, scored like the model."""
    labels = [r.labels[r.gold] for r in reference if r.gold is not None]
    if not labels:
        return None
    label, count = Counter(labels).most_common(1)[0]
    preds = []
    for it in items:
        if it.gold is None:
            continue
        p = it.labels.index(label) if label in it.labels else -1
        preds.append({"gold": it.gold, "pred": p, "pred_norm": p, "gold_label": it.labels[it.gold],
                      "pred_label": label})
    metrics, _ = metrics_for(task, preds)
    return {**{k: v for k, v in metrics.items() if k not in ("n", "labeled")}, "prediction": label,
            "from": source, "frequency": count / len(labels)}


# --- evaluation ------------------------------------------------------------------------------------------------
def evaluate_multiple_choice(model, tokenizer, task, split_path, *, num_fewshot: int = 0,
                             fewshot_path=None, seed: int = 1234, limit: Optional[int] = None,
                             batch_size: int = 16, max_length: Optional[int] = None, device=None,
                             read_options: Optional[dict] = None) -> dict:
    """Score every item of ``split_path`` (the first ``limit``); returns metrics, units, baseline, per-item
    predictions and the options used (what ``write_results`` records)."""
    task = get_task(task)
    split_path = Path(split_path)
    options = dict(read_options or {})
    items = task.read(split_path, **options)
    if limit is not None:
        items = items[: int(limit)]
    if not items:
        raise TaskDataError(f"{split_path}: no items to evaluate")
    pool: List[Item] = []
    if num_fewshot > 0:
        if fewshot_path is None:
            raise TaskDataError(f"{num_fewshot}-shot evaluation needs fewshot_path (--fewshot-data): the train "
                                "split to draw the solved examples from")
        pool = task.read(Path(fewshot_path), **options)
    contexts = fewshot_contexts(items, pool, num_fewshot, seed)

    requests = [(ctx, TARGET_DELIMITER + label) for ctx, it in zip(contexts, items) for label in it.labels]
    scores = loglikelihood(model, tokenizer, requests, batch_size=batch_size, max_length=max_length, device=device)
    predictions = []
    at = 0
    for it in items:
        lps = [s for s, _ in scores[at:at + len(it.labels)]]
        greedy = [g for _, g in scores[at:at + len(it.labels)]]
        at += len(it.labels)
        pred, pred_norm = choose(lps, it.labels)
        predictions.append({
            "id": it.id, "gold": it.gold, "pred": pred, "pred_norm": pred_norm,
            "gold_label": None if it.gold is None else it.labels[it.gold], "pred_label": it.labels[pred],
            "pred_norm_label": it.labels[pred_norm], "logprobs": lps, "is_greedy": greedy,
        })
    metrics, units = metrics_for(task, predictions)
    if fewshot_path is not None:
        baseline = majority_baseline(task, items, pool or task.read(Path(fewshot_path), **options),
                                     "few-shot file labels")
    else:
        baseline = majority_baseline(task, items, items, "gold labels")
    return {
        "task": task.name, "split_path": str(split_path), "metrics": metrics, "units": units,
        "baseline": baseline, "predictions": predictions, "contexts_example": contexts[0],
        "options": {"num_fewshot": int(num_fewshot), "fewshot_path": None if fewshot_path is None
                    else str(fewshot_path), "seed": int(seed), "limit": limit, "batch_size": int(batch_size),
                    "max_length": max_length, "prefix_token_id": int(tokenizer.prefix_token_id),
                    "target_delimiter": TARGET_DELIMITER, "fewshot_delimiter": FEWSHOT_DELIMITER,
                    **{k: v for k, v in options.items()}},
    }


# --- results.json ----------------------------------------------------------------------------------------------
def default_group(model_label: str, task: str, num_fewshot: int) -> str:
    """Results of one model, task and shot count; few-shot seeds of it average in one collect row."""
    return f"{model_label}:{task}:loglikelihood:{num_fewshot}-shot"


def write_results(result: dict, path, *, model_label: str, group: Optional[str] = None,
                  split: Optional[str] = None, checkpoint=None, extra: Optional[dict] = None) -> Path:
    """Write ``result`` (from ``evaluate_multiple_choice``) as a results.json in the generative tasks' format
    (``biogpt_train.pipeline.evaluate``), plus the per-item predictions as JSON lines beside it
    (``{stem}.predictions.jsonl``). ``experiments.collect`` shows one row per metric in ``table_metrics``."""
    from biogpt_train.pipeline.evaluate import RESULTS_FORMAT  # one format for generative and log-likelihood results

    path = Path(path)
    opts = result["options"]
    group = group or default_group(model_label, result["task"], opts["num_fewshot"])
    pred_path = path.with_name(path.stem + ".predictions.jsonl")
    atomic_write(pred_path, "".join(json.dumps(json_safe(p), ensure_ascii=False) + "\n"
                                    for p in result["predictions"]))
    files = {str(Path(result["split_path"]).resolve()): sha256_file(result["split_path"])}
    if opts.get("fewshot_path"):
        files[str(Path(opts["fewshot_path"]).resolve())] = sha256_file(opts["fewshot_path"])
    metrics, units = result["metrics"], result["units"]
    out = {
        "format": RESULTS_FORMAT,
        "task": result["task"],
        "model": model_label,
        "group": group,
        "run_name": group,
        "seed": opts["seed"],
        "split": split or Path(result["split_path"]).stem,
        "method": "loglikelihood",
        "primary_metric": "acc",
        "primary": metrics["acc"],
        "metrics": metrics,
        "units": units["acc"],
        "metric_units": units,
        "table_metrics": [m for m in TABLE_METRICS if m in metrics],
        "baseline": result["baseline"],
        "paper": None,  # the paper's numbers are fine-tuned generative ones; nothing comparable
        "overrides": [],
        "checkpoint": None if checkpoint is None else file_entry(checkpoint),
        "data": {"files": files, "examples_in_split": metrics["n"]},
        "gold": {"path": str(Path(result["split_path"]).resolve()), "sha256": sha256_file(result["split_path"]),
                 "how": "labels in the data file"},
        "predictions": {"path": str(pred_path.resolve()), "sha256": sha256_file(pred_path),
                        "lines": len(result["predictions"])},
        "loglikelihood": {**opts, "example_context": result["contexts_example"]},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "software": _software(),
        **(extra or {}),
    }
    atomic_write(path, json.dumps(json_safe(out), indent=1, ensure_ascii=False) + "\n")
    return path


def _software() -> dict:
    import torch

    from biogpt_train import __version__

    return {"biogpt_train": __version__, "python": platform.python_version(), "torch": torch.__version__}


__all__ = ["Item", "Task", "TASKS", "get_task", "read_pubmedqa", "read_medqa", "read_medmcqa", "fewshot_contexts",
           "choose", "metrics_for", "majority_baseline", "evaluate_multiple_choice", "write_results",
           "default_group", "TaskDataError"]
