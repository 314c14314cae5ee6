"""Sweep presets (conf/sweep), Slurm launcher presets (conf/hydra/launcher) and a real two-point multirun on CPU
whose results `python -m experiments.collect` turns into a table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from unittest import mock

import pytest
import yaml
from omegaconf import OmegaConf

from biogpt_train.config import CONF_DIR, compose
from tests.conftest import REPO

SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))
SHARED = REPO.parent / "shared" / "data"


def _hydra(overrides) -> OmegaConf:
    return compose(overrides, return_hydra_config=True)


def _expand(key: str, value) -> list:
    """The values the basic sweeper runs for one `key: value` entry of hydra.sweeper.params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return [getattr(v, "text", v) for v in values]  # quoted strings -> str


def test_presets_exist():
    assert {"grid", "prompt_length", "manual_prompt", "target_format", "lr_warmup", "source_loss", "seeds",
            "optuna_lr_warmup"} <= set(SWEEPS)
    assert {"slurm_1gpu", "slurm_8gpu", "slurm_multinode"} <= set(LAUNCHERS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_as_a_multirun(name):
    text = (CONF_DIR / "sweep" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    experiment = [] if name == "target_format" else ["+experiment=kd_dti"]
    cfg = _hydra([*experiment, f"+sweep={name}"])
    OmegaConf.to_object(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}_${hydra.job.override_dirname}"
    # each preset names its sweep directory after itself (grid: the command-line grid)
    assert f"/sweeps/{name}_" in sweep["dir"]
    params = cfg.hydra.sweeper.get("params") or {}
    assert bool(params) == (name != "grid")


def test_sweep_values_are_the_papers():
    from biogpt_train.tasks.paper_results import KD_DTI_PROMPT, KD_DTI_TARGET_FORMAT

    p = _hydra(["+experiment=kd_dti", "+sweep=prompt_length"]).hydra.sweeper.params
    lengths = _expand("task.learned_prompt", p["task.learned_prompt"])
    assert lengths == [1, 5, 9, 13, 17] and {f"soft_{n}" for n in lengths} <= set(KD_DTI_PROMPT)

    cfg = _hydra(["+experiment=kd_dti", "+sweep=manual_prompt"])
    assert cfg.task.learned_prompt == 0  # manual and learned prompts are exclusive
    prompts = _expand("task.manual_prompt", cfg.hydra.sweeper.params["task.manual_prompt"])
    # the paper's prompts, written as dictionary words (Moses puts a space before the comma)
    assert [p.replace(" ,", ",") for p in prompts] == [k for k in KD_DTI_PROMPT if not k.startswith("soft_")]
    dict_txt = SHARED / "tokenizer" / "BioGPT" / "dict.txt"
    if dict_txt.exists():
        words = {line.split(" ", 1)[0] for line in dict_txt.read_text(encoding="utf-8").splitlines()}
        assert {w for p in prompts for w in p.split()} <= words

    p = _hydra(["+sweep=target_format"]).hydra.sweeper.params
    experiments = _expand("+experiment", p["+experiment"])
    fmts = [compose([f"+experiment={e}"]).pipeline.prepare.args for e in experiments]
    fmts = [next((a.split("=", 1)[1] for a in args if a.startswith("dataset.target_format=")), "rel-is")
            for args in fmts]
    assert sorted(fmts) == sorted(KD_DTI_TARGET_FORMAT)

    p = _hydra(["+experiment=ddi", "+sweep=lr_warmup"]).hydra.sweeper.params
    assert len(_expand("optim.lr", p["optim.lr"])) * len(_expand("w", p["lr_scheduler.warmup_updates"])) == 12
    assert 1e-5 in _expand("optim.lr", p["optim.lr"]) and 1e-4 in _expand("optim.lr", p["optim.lr"])
    assert _expand("m", _hydra(["+sweep=source_loss"]).hydra.sweeper.params["task.mask_source_loss"]) == [False, True]
    assert _expand("seed", _hydra(["+sweep=seeds"]).hydra.sweeper.params["seed"]) == [1, 2, 3]


def test_run_dir_names_leave_out_the_same_keys_as_single_runs():
    """grid.yaml repeats conf/hydra/default.yaml's exclude_keys (a list cannot be extended in Hydra)."""
    default = yaml.safe_load((CONF_DIR / "hydra" / "default.yaml").read_text())
    single = set(default["job"]["config"]["override_dirname"]["exclude_keys"])
    grid = set(_hydra(["+sweep=grid"]).hydra.job.config.override_dirname.exclude_keys)
    assert grid >= single | {"experiment", "sweep", "paths.shared", "paths.pretrained"}
    target = set(_hydra(["+sweep=target_format"]).hydra.job.config.override_dirname.exclude_keys)
    assert target == grid - {"experiment"}  # the swept experiment names its directories


def test_optuna_preset():
    cfg = _hydra(["+experiment=ddi", "+sweep=optuna_lr_warmup"])
    s = cfg.hydra.sweeper
    assert s._target_.endswith("OptunaSweeper") and s.direction == "maximize"
    assert set(s.params) == {"optim.lr", "lr_scheduler.warmup_updates"}
    assert cfg.pipeline.objective == "primary" and cfg.generation.subset == "valid"  # tuned on dev, never test


@pytest.mark.parametrize("name", LAUNCHERS)
def test_slurm_presets_write_the_expected_sbatch(name, tmp_path):
    """The sbatch script submitit would submit: one task per GPU, and the warning signal routed to the trainer's
    save-on-signal (SIGUSR1) instead of submitit's SIGUSR2 handler."""
    import submitit
    import submitit.slurm.slurm as slurm
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = _hydra(["+experiment=pretrain_biogpt", f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    params["name"] = "x"
    with mock.patch.object(slurm.shutil, "which", lambda cmd: f"/usr/bin/{cmd}"):  # no Slurm here
        executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())  # as BaseSubmititLauncher.launch maps them
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    flags = dict(line[len("#SBATCH --"):].partition("=")[::2] for line in sbatch.splitlines()
                 if line.startswith("#SBATCH --"))
    launcher = cfg.hydra.launcher
    assert flags["ntasks-per-node"] == flags["gpus-per-node"] == str(launcher.gpus_per_node)
    assert flags["signal"] == f"USR1@{launcher.signal_delay_s}" and "requeue" in flags
    assert int(flags["nodes"]) == launcher.nodes and "srun" in sbatch


# ---------------------------------------------------------------------------------------- real multiruns (CPU)
# python -m biogpt_train, with the generate/score stages registered where pipeline.STAGES does not list them yet
def _biogpt_train(args, tmp_path, timeout=300):
    env = {**os.environ, "BIOGPT_SWEEP_ID": "test", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "biogpt_train", *args, f"paths.runs={tmp_path / 'runs'}",
                           f"paths.data={tmp_path / 'data'}", f"paths.cache={tmp_path / 'cache'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
@pytest.mark.shared_data
def test_two_point_multirun_then_collect_and_plot(tmp_path):
    if not (SHARED / "PubMedQA").exists() or not (SHARED / "tokenizer" / "BioGPT").exists():
        pytest.skip(f"needs {SHARED}/PubMedQA and tokenizer/BioGPT")
    _biogpt_train(["+experiment=smoke_pubmedqa", "+sweep=source_loss", f"paths.shared={SHARED}",
                   "evaluation.max_examples=8"], tmp_path)
    sweep = tmp_path / "runs" / "smoke_pubmedqa" / "sweeps" / "source_loss_test"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # named from the overrides (paths.*, evaluation.* and the sweep/experiment choice left out)
    assert [j.lower() for j in jobs] == ["0_task.mask_source_loss=false", "1_task.mask_source_loss=true"]
    results = [json.loads((sweep / j / "results.json").read_text()) for j in jobs]
    assert [r["task"] for r in results] == ["pubmedqa", "pubmedqa"]
    assert len({r["group"] for r in results}) == 2  # two settings, not two seeds of one

    out = tmp_path / "table"
    proc = subprocess.run([sys.executable, "-m", "experiments.collect", str(sweep), "--out", str(out),
                           "--bootstrap-samples", "200"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out.with_suffix(".csv"), encoding="utf-8")))
    assert len(rows) == 2 and {r["metric"] for r in rows} == {"accuracy"}
    for row, res in zip(sorted(rows, key=lambda r: r["group"]), sorted(results, key=lambda r: r["group"])):
        assert float(row["ours_mean"]) == pytest.approx(res["metrics"]["accuracy"])
        assert float(row["ci95_low"]) <= float(row["ours_mean"]) <= float(row["ci95_high"])
        assert row["majority_baseline"] != ""
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert md.count("| pubmedqa |") == 2 and "majority baseline" in md

    from experiments.plots import plot_loss, plot_sweep

    png = plot_sweep(sweep, "task.mask_source_loss", tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss(sweep / jobs[0], tmp_path / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_optuna_sweeper_runs_trials(tmp_path):
    """Two Optuna trials of the smoke pretraining, minimising its validation loss (the train stage's best_loss)."""
    _biogpt_train(["+experiment=smoke", "+sweep=optuna_lr_warmup", "trainer.max_update=4",
                   "pipeline.objective=best_loss", "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=2",
                   "lr_scheduler.warmup_updates=2"], tmp_path)
    sweep = tmp_path / "runs" / "smoke" / "sweeps" / "optuna_lr_warmup_test"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and "optim.lr" in best["best_params"]
    assert 1e-6 <= best["best_params"]["optim.lr"] <= 1e-3 and best["best_value"] > 0
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 2


def test_sweep_plot_reads_swept_values_and_draws_the_papers(tmp_path):
    from experiments.plots import paper_series, plot_sweep, swept_value

    assert swept_value({"overrides": ["+experiment=kd_dti", "task.learned_prompt=13"]}, "task.learned_prompt") == 13
    assert swept_value({"overrides": ["optim.lr=1e-05"]}, "optim.lr") == 1e-5
    assert swept_value({"overrides": ["task.manual_prompt='in conclusion ,'"]}, "task.manual_prompt") == \
        "in conclusion ,"
    assert swept_value({"overrides": ["+experiment=kd_dti_svo"]}, "experiment") == "kd_dti_svo"
    assert paper_series("kd_dti", "task.learned_prompt", "f1")[9] == 38.38
    assert paper_series("kd_dti", "task.manual_prompt", "f1")["in conclusion ,"] == 37.76
    assert paper_series("kd_dti", "experiment", "f1") == {"kd_dti": 38.38, "kd_dti_htr": 37.32, "kd_dti_svo": 36.57,
                                                          "kd_dti_is_of": 37.77}
    assert paper_series("hoc", "task.learned_prompt", "micro_f1") is None
    for i, (n, seed, f1) in enumerate([(1, 1, 30.0), (1, 2, 32.0), (9, 1, 35.0), (17, 1, 33.0)]):
        d = tmp_path / "sweep" / f"{i}_task.learned_prompt={n},seed={seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "task": "kd_dti", "primary_metric": "f1", "metrics": {"f1": f1},
            "overrides": ["+experiment=kd_dti", f"task.learned_prompt={n}", f"seed={seed}"]}))
    png = plot_sweep(tmp_path / "sweep", "task.learned_prompt", tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no results.json"):
        plot_sweep(tmp_path / "sweep", "optim.lr", tmp_path / "none.png")
