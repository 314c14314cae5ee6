"""The experiment files added for the paper's rows and the mini reproduction: each is a delta on the recipe it
names, and the mini chain's files agree with each other (the fine-tuning runs find the mini pretraining checkpoint
and its BPE). Generic checks (every experiment composes and validates) are in tests/test_configs.py."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from biogpt_train.config import CONF_DIR, resolved_dict
from biogpt_train.config import compose as _compose
from biogpt_train.tasks.paper_results import KD_DTI_TARGET_FORMAT

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TASKS = ("bc5cdr", "kd_dti", "ddi", "pubmedqa", "hoc")


@functools.lru_cache(maxsize=None)
def _compose_cached(overrides: tuple):
    return _compose(list(overrides))


def compose(overrides):
    """The composed config (cached: composing takes a while; callers only read it)."""
    return _compose_cached(tuple(overrides))


def _plain(overrides) -> dict:
    cfg = compose(overrides)
    OmegaConf.to_object(cfg)  # validates against the schema
    return resolved_dict(cfg)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _diff(a: dict, b: dict) -> set[str]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}


def _base_experiment(name: str) -> str | None:
    """The experiment a file builds on (its first defaults entry naming another experiment), if any."""
    data = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and entry in EXPERIMENTS:
            return entry
    return None


def test_every_paper_row_has_an_experiment():
    # BioGPT and BioGPT-Large rows of the five tasks, the two pretraining rows, the target-format rows
    want = {"pretrain_biogpt", "pretrain_biogpt_large", *TASKS, *(f"{t}_large" for t in TASKS),
            "kd_dti_htr", "kd_dti_svo", "kd_dti_is_of"}
    assert want <= set(EXPERIMENTS)


# what each derived experiment may change relative to the experiment it builds on (everything else must be equal,
# so that a later change to the base recipe reaches the derived one)
LARGE_KEYS = {"run_name", "model.", "task.data", "task.tokens_per_sample", "task.max_target_positions",
              "task.max_source_positions", "data.max_tokens", "trainer.update_freq", "trainer.precision",
              "checkpoint.finetune_from", "pipeline.prepare.args", "evaluation."}
FORMAT_KEYS = {"run_name", "task.data", "pipeline.prepare.args"}


def _allowed(key: str, allowed: set[str]) -> bool:
    return any(key == a or (a.endswith(".") and key.startswith(a)) for a in allowed)


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if _base_experiment(e) and not e.startswith(("mini_",
                                                                                                      "smoke_"))])
def test_derived_experiments_change_only_their_own_keys(name):
    base = _base_experiment(name)
    ours, theirs = _plain([f"+experiment={name}"]), _plain([f"+experiment={base}"])
    changed = _diff(ours, theirs)
    allowed = LARGE_KEYS if name.endswith("_large") else FORMAT_KEYS
    assert changed, f"{name} equals {base}"
    assert {k for k in changed if not _allowed(k, allowed) and k != "pipeline.stages"} == set(), \
        f"{name} drifted from {base}"
    # a paper row ends with its number: the base recipe's stages, then decoding and scoring
    stages = theirs["pipeline"]["stages"]
    assert ours["pipeline"]["stages"] == stages + [s for s in ("generate", "score") if s not in stages]
    # data_prep gets the base recipe's arguments; a Large row swaps in the Large tokenizer, a format row adds it
    args, base_args = ours["pipeline"]["prepare"]["args"], theirs["pipeline"]["prepare"]["args"]
    if name.endswith("_large"):
        assert args == [a.replace("/tokenizer/BioGPT", "/tokenizer/BioGPT-Large") if a.startswith("tokenizer_dir=")
                        else a for a in base_args]
    else:
        assert args[:len(base_args)] == base_args and len(args) == len(base_args) + 1


@pytest.mark.parametrize("task", TASKS)
def test_large_rows_use_biogpt_large(task):
    cfg = compose([f"+experiment={task}_large"])
    assert cfg.model.arch == "biogpt_large" and cfg.model.max_positions == 2048
    assert cfg.run_name == f"{task}_large"
    assert "BioGPT-Large" in cfg.checkpoint.finetune_from
    # the Large vocabulary (57,717 symbols) differs from BioGPT's: its data is prepared separately with its BPE
    assert cfg.task.data != compose([f"+experiment={task}"]).task.data
    assert any(str(a).startswith("tokenizer_dir=") and str(a).endswith("BioGPT-Large")
               for a in cfg.pipeline.prepare.args)
    # BioGPT-Large-QA (the released PubMedQA-Large): 2048-token samples, 1900-token sources (reference §5.4)
    if task == "pubmedqa":
        assert cfg.task.max_source_positions == 1900 and cfg.data.max_tokens == 2048 and cfg.trainer.update_freq == 16


@pytest.mark.parametrize("fmt", ["htr", "svo", "is-of"])
def test_kd_dti_target_format_rows(fmt):
    cfg = compose([f"+experiment=kd_dti_{fmt.replace('-', '_')}"])
    assert fmt in KD_DTI_TARGET_FORMAT
    assert f"dataset.target_format={fmt}" in list(cfg.pipeline.prepare.args)
    assert cfg.task.data.endswith(f"KD-DTI-{fmt}")
    assert cfg.pipeline.prepare.dataset == "kd_dti"


MINI_TASKS = ("mini_hoc", "mini_pubmedqa", "mini_ddi")


def test_mini_chain_is_consistent():
    """The fine-tuning runs load the mini pretraining checkpoint (same shape), read data prepared with its BPE,
    and find it where experiments/reproduce_mini.py puts it (BIOGPT_RUN_ID)."""
    from experiments.reproduce_mini import RUN_ID

    pre = compose(["+experiment=mini_pretrain"])
    assert pre.trainer.device == "cpu" and pre.trainer.stop_time_hours > 0
    assert "bpe.learn=true" in list(pre.pipeline.prepare.args)
    run_dir = Path(pre.paths.runs) / pre.run_name / RUN_ID
    shape = {k: pre.model[k] for k in ("embed_dim", "layers", "heads", "ffn_dim", "max_positions")}
    total_hours = pre.trainer.stop_time_hours
    for name in MINI_TASKS:
        cfg = compose([f"+experiment={name}"])
        assert {k: cfg.model[k] for k in shape} == shape, name
        assert Path(cfg.checkpoint.finetune_from) == run_dir / pre.checkpoint.save_dir / "checkpoint_last.pt"
        assert f"tokenizer_dir={pre.task.data}" in list(cfg.pipeline.prepare.args), name
        assert cfg.trainer.device == "cpu" and cfg.trainer.stop_time_hours > 0
        assert cfg.generation.subset == "valid" and cfg.generation.checkpoint == "checkpoint_last.pt"
        assert list(cfg.pipeline.stages)[-2:] == ["generate", "score"]
        # the task's own recipe underneath (same prompt, targets, stopping rule); the loss is on prompt + answer
        # (BioGPT: whole sequence), which the mini reproduction's source_loss sweep compares
        base = compose([f"+experiment={name.removeprefix('mini_')}"])
        assert cfg.task.name == base.task.name and cfg.task.learned_prompt == base.task.learned_prompt
        assert cfg.task.mask_source_loss is True and base.task.mask_source_loss is False
        total_hours += cfg.trainer.stop_time_hours
    # training budgets leave room for preparing, decoding and scoring within the 30 minutes
    assert total_hours * 60 <= 20


def test_mini_and_smoke_tasks_cover_the_documented_datasets():
    assert {compose([f"+experiment={n}"]).task.name for n in MINI_TASKS} == {"hoc", "pubmedqa", "ddi"}
    smoke = compose(["+experiment=smoke_pubmedqa"])
    assert smoke.model.arch == "tiny" and smoke.trainer.max_update <= 10 and smoke.checkpoint.finetune_from is None


def test_mini_report_puts_each_number_next_to_its_baseline():
    from experiments.reproduce_mini import report

    row = {"split": "valid", "examples": 50, "primary_metric": "accuracy", "ours": 55.0, "metrics": {},
           "majority_baseline": 55.0, "majority_prediction": "the answer ... is yes.", "paper_biogpt_test": 78.2,
           "ci95": [40.0, 68.0]}
    summary = {"command": "python -m experiments.reproduce_mini", "started": "2026-01-01T00:00:00+00:00", "time_scale": 1.0,
               "machine": {"cpu": "cpu", "logical_cores": 2, "torch_threads": 2, "python": "3.11", "torch": "2",
                           "platform": "linux", "load_average_at_start": [1.0, 1.0, 1.0]},
               "timings_s": {"mini_pretrain": 400.0, "total": 1200.0}, "parameters": 3_400_000,
               "training": {"mini_pretrain": {"updates": 600, "train_tokens": 1_200_000, "first_valid_loss": 11.0,
                                              "last_valid_loss": 8.0}},
               "results": {"pubmedqa": row}, "sweep": None, "plots": ["loss_mini_pretrain.png"],
               "contamination": {"hoc": {"test_documents": 4947, "contaminated": 0}}}
    text = report(summary, "| table |", {"corpus_documents": 8123})
    assert ("| pubmedqa | PQA-L fold-0 dev_set.json (50 questions) | 50 | accuracy 55.00 [40.00, 68.00] | 55.00 "
            "(“the answer ... is yes.”) | not distinguishable (baseline inside our 95% CI) | 78.20 |") in text
    assert "small-model numbers" in text and "1.20M tokens" in text and "3.4M parameters" in text
    assert "![loss_mini_pretrain.png](loss_mini_pretrain.png)" in text and "| hoc | 4947 | 0 | 0.00 |" in text


# --- Llama family -------------------------------------------------------------------------------------------------

def _card() -> dict:
    """BioMedGPT-LM-7B's continued-pretraining hyper-parameters as the card states them (seed-systems.md B.1)."""
    import re

    path = Path(CONF_DIR).parents[1] / "shared" / "docs" / "seed-systems.md"
    if not path.exists():
        pytest.skip(f"needs {path} (the project's reference docs, beside the checkout)")
    m = re.search(r"\*\*(\d+) epochs, batch (\d+), cutoff/context (\d+), lr ([0-9.e-]+)\*\*", path.read_text())
    assert m, f"{path}: the BioMedGPT-LM-7B hyper-parameter line moved"
    return {"epochs": int(m[1]), "batch": int(m[2]), "context": int(m[3]), "lr": float(m[4])}


def test_continue_pretrain_biomedgpt_is_the_card_recipe():
    card = _card()
    cfg = compose(["+experiment=continue_pretrain_biomedgpt"])
    assert cfg.model.family == "llama" and cfg.model.arch == "biomedgpt_lm_7b"
    assert cfg.trainer.max_epoch == card["epochs"] and cfg.optim.lr == card["lr"]
    assert cfg.task.tokens_per_sample == card["context"] and cfg.model.max_positions >= card["context"]
    # global batch: blocks per micro-batch x update_freq x 8 GPUs (the file's arithmetic)
    per_micro = cfg.data.max_tokens // cfg.task.tokens_per_sample
    assert per_micro * cfg.task.tokens_per_sample == cfg.data.max_tokens
    assert per_micro * cfg.trainer.update_freq * 8 == card["batch"]
    # the cosine period covers the card's epochs over its 26B tokens
    tokens_per_update = card["batch"] * card["context"]
    assert cfg.lr_scheduler.total_num_update == int(card["epochs"] * 26e9 / tokens_per_update)
    assert cfg.trainer.precision == "bf16" and cfg.distributed.data_parallel == "fsdp"
    assert cfg.trainer.activation_checkpointing and cfg.lr_scheduler.name == "cosine"
    assert cfg.lr_scheduler.warmup_updates > 0 and cfg.task.name == "language_modeling"
    assert "Llama-2" in cfg.checkpoint.finetune_from


def test_sft_llama_trains_on_the_answer_only():
    for overrides in ([], ["task=hoc"]):
        cfg = compose(["+experiment=sft_llama_pubmedqa", *overrides])
        assert cfg.model.family == "llama" and cfg.task.mask_source_loss
        assert cfg.task.learned_prompt == 0 and cfg.task.manual_prompt is None
        plain = _plain(["+experiment=sft_llama_pubmedqa", *overrides])
        assert plain["task"]["data"].endswith(f"llama2/{cfg.task.name}")
        assert plain["pipeline"]["prepare"]["dataset"] == cfg.task.name
        assert "tokenizer=sentencepiece" in plain["pipeline"]["prepare"]["args"]
    lora = compose(["+experiment=sft_llama_pubmedqa", "model.lora.rank=16"])
    assert lora.model.lora.rank == 16 and list(lora.model.lora.target_modules)


def test_smoke_llama_prepares_its_own_sentencepiece_data():
    cfg = compose(["+experiment=smoke_llama"])
    assert cfg.model.family == "llama" and cfg.trainer.device == "cpu" and cfg.model.lora.rank == 0
    assert cfg.task.data != compose(["+experiment=smoke"]).task.data  # not the BPE sample directory
    assert {"tokenizer=sentencepiece", "spm.train=true"} <= set(cfg.pipeline.prepare.args)
