"""`python -m biogpt_train` end to end in subprocesses: the built-in default run (prepare the shipped PubMed sample,
pretrain the small model), a multirun sweep, and the pipeline's clear errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from biogpt_train import pipeline
from biogpt_train.config import compose
from test_trainer_helpers import REPO, make_lm_data, read_metrics, run_cli, tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend

SAMPLE = REPO / "data_prep" / "samples" / "pubmed_sample.xml"


@pytest.mark.slow
def test_default_run_end_to_end(tmp_path):
    if not SAMPLE.exists():
        pytest.skip(f"needs the shipped sample {SAMPLE} (written by data_prep)")
    # the default run, only shorter: max_update and the paths are excluded from the run id, so the directory is
    # runs/default/default exactly as for a bare `python -m biogpt_train`
    proc = run_cli([f"paths.runs={tmp_path}/runs", f"paths.cache={tmp_path}/cache", "trainer.max_update=1",
                    "logging.log_interval=1"])
    run_dir = tmp_path / "runs" / "default" / "default"
    assert (tmp_path / "cache" / "pubmed_sample" / "manifest.json").exists()  # the prepare stage ran
    assert (tmp_path / "cache" / "pubmed_sample" / "bpecodes").exists()  # BPE learned on the sample
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "config.resolved.yaml").exists()
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").exists()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    train, valid = read_metrics(run_dir), read_metrics(run_dir, "valid")
    assert sorted(train) == [1] and valid[1]["loss"] > 0
    assert {"loss", "ppl", "lr", "gnorm", "wps", "ups", "mem_gb"} <= set(train[1])
    assert "model small" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_multirun_sweep(tmp_path):
    data = make_lm_data(tmp_path / "data")
    args = ["-m", *tiny_overrides(data, tmp_path / "runs", **{"trainer.max_update": 1}), "optim.lr=1e-3,2e-3"]
    run_cli(args, env_extra={"BIOGPT_SWEEP_ID": "sweep1"})
    jobs = sorted((tmp_path / "runs" / "default" / "sweeps" / "sweep1").glob("[0-9]_*"))
    assert [j.name[:2] for j in jobs] == ["0_", "1_"]
    lrs = []
    for job in jobs:
        assert (job / "checkpoints" / "checkpoint_last.pt").exists()
        lrs.append(OmegaConf.load(job / "config.resolved.yaml").optim.lr)
    assert lrs == [1e-3, 2e-3]


def test_unknown_stage_and_missing_data_are_clear(tmp_path):
    data = make_lm_data(tmp_path / "data")
    with pytest.raises(ValueError, match="unknown pipeline stage"):
        pipeline.run(compose(tiny_overrides(data, tmp_path, **{"pipeline.stages": "[train,bogus]"})), tmp_path / "a")
    cfg = compose(tiny_overrides(tmp_path / "nowhere", tmp_path))
    with pytest.raises(FileNotFoundError, match="prepare the data first"):
        pipeline.run(cfg, tmp_path / "b")
    cfg = compose(tiny_overrides(tmp_path / "nowhere", tmp_path, **{"pipeline.stages": "[prepare]",
                                                                     "pipeline.prepare.dataset": "null"}))
    with pytest.raises(FileNotFoundError, match="pipeline.prepare.dataset is not set"):
        pipeline.run(cfg, tmp_path / "c")
