"""The whole chain per task on real examples: prepare (data_prep) -> train -> [average] -> generate -> score ->
results.json, with the task's experiment config (+experiment=<task>) shrunk to a tiny model and a few updates.

Speed: each task uses the first few records of its real ../shared/data files, and the prepared dictionary holds
only the BioGPT symbols those records use (the text is still Moses-tokenised and BPE'd with BioGPT's bpecodes), so
the tiny model's output layer has a few hundred rows instead of 42,393. Sources are truncated to 64 tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, require_shared

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]

TASK_NAMES = ("bc5cdr", "kd_dti", "ddi", "pubmedqa", "hoc")
REQUIRED_KEYS = {"task", "model", "group", "seed", "split", "metrics", "primary_metric", "units", "baseline",
                 "overrides", "checkpoint", "data", "gold", "predictions", "config"}


# --------------------------------------------------------------------------------------------- raw subsets
def _take(path: Path, n: int, skip: int = 0, need=None) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = [(k, v) for k, v in data.items() if need is None or need(v)]
    return dict(items[skip:skip + n])


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _by_labels(path: Path, labels) -> dict:
    """The first PubMedQA records whose final_decision follows `labels` in order."""
    data, out = json.loads(path.read_text(encoding="utf-8")), {}
    for label in labels:
        out.update([next((k, v) for k, v in data.items() if k not in out and v["final_decision"] == label)])
    return out


def make_raw_subset(task: str, root: Path, n_train: int = 4, n_valid: int = 3, labels=None) -> tuple[Path, dict]:
    """(raw_dir, data_prep options) holding the first records of the real files, in BioGPT's raw layout
    (PubMedQA: the first records with the final_decision `labels`, when given)."""
    if task == "bc5cdr":
        src = require_shared("BC5CDR", "raw")
        raw = root / "BC5CDR" / "raw"
        _dump(raw / "train.json", _take(src / "train.json", n_train))
        _dump(raw / "valid.json", _take(src / "valid.json", n_valid))
        for split in ("train", "valid"):
            (raw / f"{split}.entities.json").write_bytes((src / f"{split}.entities.json").read_bytes())
        # the official PubTator files sit beside raw/ in ../shared/data (inside it in BioGPT's repo)
        os.symlink(require_shared("BC5CDR", "CDR_Data"), root / "BC5CDR" / "CDR_Data")
        return raw, {}
    if task == "kd_dti":  # no train.json is distributed: train and valid both come from valid.json
        src = require_shared("KD-DTI", "raw", "valid.json")
        raw = root / "KD-DTI" / "raw"
        _dump(raw / "train.json", _take(src, n_train))
        _dump(raw / "valid.json", _take(src, n_valid, skip=n_train))
        return raw, {}
    if task == "ddi":
        src = require_shared("DDI", "raw")
        raw = root / "DDI" / "raw"
        has = lambda rec: bool(rec.get("triples"))  # noqa: E731
        _dump(raw / "train.json", _take(src / "train.json", n_train, need=has))
        _dump(raw / "valid.json", _take(src / "valid.json", n_valid, need=has))
        return raw, {}
    if task == "pubmedqa":
        src = require_shared("PubMedQA", "pqal_fold0")
        raw = root / "PubMedQA"
        _dump(raw / "pqal_fold0" / "train_set.json",
              _by_labels(src / "train_set.json", labels) if labels else _take(src / "train_set.json", n_train))
        _dump(raw / "pqal_fold0" / "dev_set.json", _take(src / "dev_set.json", n_valid))
        return raw, {}
    if task == "hoc":
        src = require_shared("HoC", "raw", "train.tsv")
        raw = root / "HoC" / "raw"
        raw.mkdir(parents=True)
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[: n_train + n_valid]
        (raw / "train.tsv").write_text("".join(lines), encoding="utf-8")
        return raw, {"dev_fraction": n_valid / (n_train + n_valid), "valid_from": "train"}  # held out
    raise KeyError(task)


def small_tokenizer(task: str, raw: Path, options: dict):
    """BioGPT's Moses + BPE, with a dictionary of only the BioGPT symbols these records use (+ '...')."""
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer
    from data_prep.tasks import SPLIT_BUILDERS

    full = Tokenizer.from_files(require_shared("tokenizer", "BioGPT", "dict.txt"),
                                require_shared("tokenizer", "BioGPT", "bpecodes"))
    texts = [t for split in SPLIT_BUILDERS[task](raw, options).values() for ex in split.examples
             for t in (ex.source, ex.target) if t is not None]
    used = {sym for line in full.bpe_encode_batch(texts) for sym in line.split()} | {"..."}
    small = Dictionary()
    for i in sorted(full.dictionary.index(s) for s in used if s in full.dictionary):
        small.add_symbol(full.dictionary[i], n=full.dictionary.count[i])
    return Tokenizer(small, full.bpecodes)


def prepare(task: str, root: Path, **subset) -> tuple[Path, Path]:
    from data_prep.tasks import BUILDERS

    raw, options = make_raw_subset(task, root, **subset)
    out = root / "data" / task
    BUILDERS[task](raw, out, small_tokenizer(task, raw, options), workers=1, options=options)
    return raw, out


# ----------------------------------------------------------------------------------------------- config / run
def compose_task(task: str, data: Path, runs: Path, overrides=()):
    """+experiment=<task> (conf/experiment), shrunk: tiny model, CPU, a few updates, short sources."""
    from biogpt_train.config import compose

    averaged = "average" in compose([f"+experiment={task}"]).pipeline.stages  # the recipe's own choice
    base = [f"+experiment={task}"]
    base += ["model=tiny", f"task.data={data}", f"paths.runs={runs}", "trainer.device=cpu", "trainer.update_freq=1",
             "checkpoint.finetune_from=null", "task.max_source_positions=64", "task.max_target_positions=200",
             "logging.tensorboard=false", "logging.log_interval=1", "generation.subset=valid", "optim.lr=3e-3",
             "lr_scheduler.warmup_updates=2", "lr_scheduler.warmup_init_lr=1e-4"]
    if averaged:
        base += ["trainer.max_epoch=2", "trainer.max_update=0", "checkpoint.average_last_epochs=2"]
    else:  # HoC: update-based, checkpoint_last.pt
        base += ["trainer.max_update=4", "trainer.max_epoch=0", "checkpoint.save_interval_updates=2"]
    cfg = compose(base + list(overrides))
    OmegaConf.set_struct(cfg, False)
    stages = [s for s in cfg.pipeline.stages]
    for s in ("generate", "score"):
        if s not in stages:
            stages.append(s)
    cfg.pipeline.stages = stages
    return cfg


def run_chain(cfg, run_dir: Path, monkeypatch):
    from biogpt_train import pipeline

    pipeline.run(cfg, run_dir)
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("task", TASK_NAMES)
def test_whole_chain_writes_results(task, tmp_path, monkeypatch):
    from biogpt_train.tasks.registry import get_task
    from biogpt_train.utils import sha256_file
    from experiments.collect import summarise

    spec = get_task(task)
    raw, data = prepare(task, tmp_path)
    overrides = ["evaluation.restrict_gold=true"] if task == "bc5cdr" else []  # 3 of the 500 dev documents
    cfg = compose_task(task, data, tmp_path / "runs", overrides)
    eval_checkpoint = cfg.generation.checkpoint  # the experiment file's (BioGPT: checkpoint_avg.pt, HoC: _last)
    run_dir = tmp_path / "run"
    res = run_chain(cfg, run_dir, monkeypatch)

    assert REQUIRED_KEYS <= set(res)
    assert (res["task"], res["split"], res["seed"], res["primary_metric"]) == (task, "valid", 1, spec.primary_metric)
    assert spec.primary_metric in res["metrics"] and res["primary"] == res["metrics"][spec.primary_metric]
    assert "units" not in res["metrics"] and res["units"]["kind"] in ("mean", "micro_f1")
    ckpt = Path(res["checkpoint"]["path"])
    assert ckpt.name == eval_checkpoint and res["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert res["data"]["files"]["valid.x-y.x.bin"] == sha256_file(data / "valid.x-y.x.bin")
    assert res["config"]["task"]["name"] == task and res["config"]["model"]["arch"] == res["model"] == "tiny"
    assert res["group"] == res["run_name"] == str(cfg.run_name)  # no command-line overrides recorded here
    assert res["baseline"][spec.primary_metric] is not None or task == "bc5cdr"
    assert res["baseline"]["from"] == "training targets"

    # one decoded line per prepared example: the whole hypothesis, source (detokenised) + prompt + answer
    n = len((data / "valid.pmid").read_text(encoding="utf-8").splitlines())
    lines = Path(res["predictions"]["path"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == n == res["predictions"]["lines"]
    prompt = " ".join(f"learned{k}" for k in range(1, int(cfg.task.learned_prompt) + 1))
    assert all(prompt in line for line in lines)
    if task == "hoc":  # HoC sources are not lowercased; the detokenised source starts the line
        first = (data / "valid.x").read_text(encoding="utf-8").splitlines()[0]
        assert lines[0].startswith(first.split()[0])
    else:
        assert lines[0][:10].lower() == lines[0][:10]  # the lowercased RE source / "question: ..."

    if task == "bc5cdr":
        assert res["gold"]["restricted_to_decoded"] and Path(res["gold"]["source"]).name == \
            "CDR_DevelopmentSet.PubTator.txt"
    if task in ("kd_dti", "ddi"):
        assert Path(res["gold"]["path"]) == raw / "valid.json"
    if task == "pubmedqa":
        assert res["gold"]["how"].startswith("final_decision of pqal_fold0/dev_set.json")
    if task == "hoc":
        assert res["gold"]["how"] == "derived from the prepared valid.y"

    row, = summarise([dict(res, _path=str(run_dir / "results.json"))], bootstrap_samples=50)
    assert row["task"] == task and row["metric"] == spec.primary_metric


def test_tiny_model_overfit_to_a_few_examples_scores_100(tmp_path, monkeypatch):
    """PubMedQA, train == evaluation split: the decoded answers are the training answers, accuracy 100."""
    labels = ["yes", "no", "maybe", "no"]  # not solvable by always giving the same answer
    raw, data = prepare("pubmedqa", tmp_path, n_valid=1, labels=labels)
    cfg = compose_task("pubmedqa", data, tmp_path / "runs", [
        "task.valid_subset=train", "generation.subset=train", "model.dropout=0", "model.attention_dropout=0",
        "optim.lr=1e-2", "optim.weight_decay=0", "lr_scheduler.warmup_updates=5", "trainer.max_epoch=0",
        "trainer.max_update=60", "checkpoint.no_epoch_checkpoints=true", "trainer.disable_validation=true",
        "generation.checkpoint=checkpoint_last.pt", "task.max_source_positions=24"])
    cfg.pipeline.stages = [s for s in cfg.pipeline.stages if s != "average"]
    res = run_chain(cfg, tmp_path / "run", monkeypatch)
    assert res["metrics"]["accuracy"] == 100.0, Path(res["predictions"]["path"]).read_text()
    assert res["units"] == {"kind": "mean", "values": [1, 1, 1, 1]}
    assert res["gold"]["how"].startswith("final_decision of pqal_fold0/train_set.json")
    answers = [line.rsplit(" is ", 1)[-1] for line in Path(res["predictions"]["path"]).read_text().splitlines()]
    assert answers == [f"{label}." for label in labels]
    assert res["baseline"]["accuracy"] == 100.0 * max(labels.count(x) for x in set(labels)) / len(labels)


@pytest.mark.parametrize("budget", [["trainer.max_epoch=2"], ["trainer.max_epoch=0", "trainer.max_update=3"]])
def test_cli_runs_the_whole_chain(tmp_path, budget):
    """`python -m biogpt_train +experiment=pubmedqa ...` as a user runs it, with a reduced budget: the paper row's
    average of the last 5 epochs becomes the average of what the budget makes, with a warning."""
    raw, data = prepare("pubmedqa", tmp_path, n_train=4, n_valid=2)
    cmd = [sys.executable, "-m", "biogpt_train", "+experiment=pubmedqa", "model=tiny", f"task.data={data}",
           f"paths.runs={tmp_path / 'runs'}", "trainer.device=cpu", "trainer.update_freq=1",
           "checkpoint.finetune_from=null", "task.max_source_positions=64", "logging.tensorboard=false",
           "generation.subset=valid", *budget]
    env = dict(os.environ, OMP_NUM_THREADS="1", BIOGPT_RUN_ID="cli")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "pubmedqa" / "cli"
    res = json.loads((run_dir / "results.json").read_text())
    assert REQUIRED_KEYS <= set(res) and res["task"] == "pubmedqa" and res["split"] == "valid"
    assert budget[-1] in res["overrides"]
    out = proc.stdout + proc.stderr
    assert "checkpoint.average_last_epochs=5" in out and "progress: update 1/" in out
    assert "training finished" in out and f"run directory {run_dir}: stages" in out
    assert "generate: 2/2 sentences (100%)" in out
