"""Every shipped config composes and validates against the schema; experiments are deltas; the paper's
fine-tuning hyperparameters are what the experiment files say; model groups equal the model presets."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from biogpt_train.config import CONF_DIR, compose, resolved_dict, run_id
from biogpt_train.config.schema import Config

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = ["model", "task", "lr_scheduler", "distributed", "generation"]


@functools.lru_cache(maxsize=None)
def _compose(*overrides):
    return compose(list(overrides))


def _resolved(*overrides):
    cfg = _compose(*overrides)
    OmegaConf.to_object(cfg)  # validates every value against the dataclass schema
    return cfg, resolved_dict(cfg)  # every interpolation resolves


def test_experiments_exist():
    assert {"smoke", "pretrain_biogpt", "pretrain_biogpt_large", "bc5cdr", "kd_dti", "ddi", "pubmedqa",
            "hoc"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_"), "experiments hold global deltas"
    cfg, plain = _resolved(f"+experiment={name}")
    assert plain["run_name"] == name
    assert set(cfg.pipeline.stages) <= {"prepare", "train", "average", "generate", "score"}


def test_every_group_option_composes():
    """Option i of every group in one composition (fewer, slower Hydra composes; each option is still used)."""
    options = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in GROUPS}
    assert all(options.values()), options
    for i in range(max(map(len, options.values()))):
        _resolved(*(f"{g}={opts[i]}" for g, opts in options.items() if i < len(opts)))


def test_primary_config_has_no_experiment_in_defaults():
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    assert not any(isinstance(d, dict) and "experiment" in d for d in defaults)
    assert "base_config" in defaults and defaults.index("_self_") > defaults.index("base_config")


def test_schema_rejects_typos_and_bad_values():
    with pytest.raises(ConfigCompositionException, match="layrs"):
        compose(["model.layrs=3"])
    with pytest.raises(ConfigCompositionException, match="lr"):
        compose(["optim.lr=abc"])
    with pytest.raises(ConfigCompositionException, match="precision"):
        compose(["trainer.precision=fp8"])


# reference §5.4 (train.sh of each task)
PAPER = {
    "bc5cdr": dict(lr=1e-5, warmup=100, max_src=640, prompt=9, max_epoch=100, keep_last=5, average=True),
    "kd_dti": dict(lr=1e-5, warmup=1000, max_src=640, prompt=9, max_epoch=30, keep_last=5, average=True),
    "ddi": dict(lr=1e-4, warmup=500, max_src=640, prompt=9, max_epoch=100, keep_last=5, average=True),
    "pubmedqa": dict(lr=1e-5, warmup=100, max_src=900, prompt=9, max_epoch=100, keep_last=5, average=True),
    "hoc": dict(lr=1e-5, warmup=1000, max_src=900, prompt=1, max_epoch=0, keep_last=-1, average=False),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_fine_tuning_recipes_match_the_paper(name):
    cfg = _compose(f"+experiment={name}")
    want = PAPER[name]
    assert cfg.optim.lr == want["lr"] and list(cfg.optim.betas) == [0.9, 0.98] and cfg.optim.weight_decay == 0.01
    assert cfg.optim.eps == 1e-8 and cfg.optim.clip_norm == 0.0 and cfg.optim.decay_all_params
    assert cfg.lr_scheduler.name == "inverse_sqrt" and cfg.lr_scheduler.warmup_updates == want["warmup"]
    assert cfg.lr_scheduler.warmup_init_lr == 1e-7
    assert cfg.task.max_source_positions == want["max_src"] and cfg.task.learned_prompt == want["prompt"]
    assert cfg.task.tokens_per_sample == 1024 and cfg.task.max_target_positions == 1024
    assert cfg.data.max_tokens == 1024 and cfg.trainer.update_freq == 32 and cfg.trainer.precision == "fp32"
    assert cfg.trainer.max_epoch == want["max_epoch"] and cfg.checkpoint.keep_last_epochs == want["keep_last"]
    assert ("average" in cfg.pipeline.stages) == want["average"]
    assert cfg.model.arch == "biogpt" and cfg.seed == 1
    assert cfg.checkpoint.finetune_from.endswith("Pre-trained-BioGPT/checkpoint.pt")
    if name == "hoc":
        assert cfg.trainer.max_update == 20000 and cfg.checkpoint.save_interval_updates == 1000
        assert cfg.checkpoint.no_epoch_checkpoints and cfg.generation.checkpoint == "checkpoint_last.pt"
        # BioGPT trains on all of train.tsv (data_prep's default valid_from=biogpt) and decodes test
        assert cfg.generation.subset == "test"
        assert not any("valid_from" in a for a in cfg.pipeline.prepare.args)


def test_pretraining_recipe():
    cfg = _compose("+experiment=pretrain_biogpt")
    assert cfg.optim.lr == 2e-4 and cfg.lr_scheduler.warmup_updates == 20000 and cfg.trainer.max_update == 200000
    # 1024 tokens x 8 GPUs x 64 accumulation = 524,288 tokens per update (reference §4)
    assert cfg.data.max_tokens * 8 * cfg.trainer.update_freq == 524288
    assert cfg.model.arch == "biogpt" and cfg.task.tokens_per_sample == 1024


def test_run_id_is_deterministic():
    assert run_id("") == "default"
    assert run_id("+experiment=smoke,optim.lr=0.001") == run_id("+experiment=smoke,optim.lr=0.001")
    assert run_id("optim.lr=0.001") != run_id("optim.lr=0.002")


def test_cli_from_another_directory_finds_conf_and_anchors_paths_at_the_repo(tmp_path):
    """Launched from any working directory, `python -m biogpt_train` composes conf/ (an experiment group
    included) and its default paths point into the checkout, not the cwd; `--cfg` writes nothing there."""
    import os
    import subprocess
    import sys

    repo = CONF_DIR.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([sys.executable, "-m", "biogpt_train", "--cfg", "job", "--resolve", "+experiment=smoke"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = yaml.safe_load(out.stdout)
    assert cfg["run_name"] == "smoke"
    assert cfg["paths"]["root"] == str(repo) and cfg["paths"]["runs"] == str(repo / "runs")
    assert Path(cfg["paths"]["data"]).is_absolute() and Path(cfg["paths"]["data"]).parent == repo
    assert list(tmp_path.iterdir()) == []


def _leaf_keys(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaf_keys(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_set_every_default_run_key(name):
    """conf/config.yaml's body configures the default run and is applied after the group files: an experiment
    that did not set one of those keys would silently inherit a CPU-demo value."""
    body = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    keys = {k for k in _leaf_keys({k: v for k, v in body.items() if k not in ("defaults", "run_name", "seed")})
            if not k.startswith("pipeline.prepare")}  # only read by the prepare stage
    exp = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
    set_by_exp = set(_leaf_keys({k: v for k, v in exp.items() if k != "defaults"}))
    assert keys <= set_by_exp, f"{name} must set {sorted(keys - set_by_exp)}"
    cfg = _compose(f"+experiment={name}")
    if "prepare" in cfg.pipeline.stages:
        assert "pipeline.prepare.dataset" in set_by_exp


def test_unknown_keys_are_rejected_with_the_closest_valid_key():
    """Hydra's `+key=` appends even to a typed config; the schema check after composition refuses it."""
    with pytest.raises(ValueError, match=r"optim\.lrr.*did you mean optim\.lr\?"):
        compose(["+optim.lrr=1"])
    with pytest.raises(ValueError, match=r"trainer\.max_updates.*did you mean trainer\.max_update\?"):
        compose(["+trainer.max_updates=5"])
    # free-form dict fields still take any key
    assert compose(["+evaluation.scorer_options.target_format=svo"]).evaluation.scorer_options.target_format == "svo"


def test_defaults_live_in_the_schema_only():
    """No YAML group restates the dataclass defaults: the groups left are real alternatives."""
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
    assert groups == ["data_prep", "distributed", "experiment", "generation", "hydra", "lr_scheduler", "model",
                      "sweep", "task"]
    schema = OmegaConf.structured(Config)
    for group in ("lr_scheduler", "distributed", "generation"):
        for path in (CONF_DIR / group).glob("*.yaml"):
            values = OmegaConf.to_container(OmegaConf.load(path))
            same = [k for k, v in values.items() if k not in ("name", "data_parallel") and schema[group][k] == v]
            assert not same, f"{path} restates schema defaults: {same}"


def test_evaluation_only_overrides_reuse_the_trained_run_directory():
    """Every generation.*/evaluation.* key and the averaging keys are in override_dirname.exclude_keys (Hydra
    matches exact keys), so `generation.beam=5` or `evaluation.max_examples=10` decodes the trained run."""
    import dataclasses

    from biogpt_train.config.schema import EvaluationConfig, GenerationConfig

    hydra_cfg = yaml.safe_load((CONF_DIR / "hydra" / "default.yaml").read_text())
    excluded = set(hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"])
    wanted = ({f"generation.{f.name}" for f in dataclasses.fields(GenerationConfig)}
              | {f"evaluation.{f.name}" for f in dataclasses.fields(EvaluationConfig)}
              | {"checkpoint.average_last_epochs", "checkpoint.average_output"})
    assert wanted <= excluded, sorted(wanted - excluded)
    assert not {k for k in excluded if k.startswith(("generation.", "evaluation."))} - wanted  # no stale keys
    cfg = compose(["+experiment=pubmedqa", "generation.beam=5", "evaluation.max_examples=3",
                   "checkpoint.average_last_epochs=2"], return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == "+experiment=pubmedqa"


def test_help_describes_this_program():
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "biogpt_train", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120).stdout
    assert out.startswith("python -m biogpt_train [+experiment=NAME]")
    assert "pubmedqa" in out and "trainer.max_update=N" in out and "Powered by Hydra" not in out


def test_default_run_keeps_its_disk_use_small():
    cfg = _compose()
    assert cfg.checkpoint.keep_last_epochs == 1 and not cfg.checkpoint.save_optimizer_state_in_epoch_checkpoints
