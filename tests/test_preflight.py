"""The run's start-up checks (pipeline/preflight.py): a missing pretrained checkpoint, averaging more epochs than the
budget makes, a missing gold file or an unwritable run directory fail (or warn) before any stage runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import pytest

from biogpt_train import pipeline
from biogpt_train.config import compose
from biogpt_train.pipeline import preflight
from biogpt_train.pipeline.preflight import PreflightError
from test_trainer_helpers import REPO, make_lm_data, make_pair_data, tiny_overrides


def _pubmedqa(data, runs, **extra):
    base = {"task.data": str(data), "paths.runs": str(runs), "model": "tiny", "trainer.device": "cpu",
            "logging.tensorboard": "false"}
    base.update(extra)
    return compose(["+experiment=pubmedqa", *[f"{k}={v}" for k, v in base.items()]])


def test_missing_pretrained_checkpoint_fails_before_any_stage(tmp_path):
    cfg = _pubmedqa(tmp_path / "not-prepared", tmp_path / "runs", **{"paths.pretrained": str(tmp_path / "ckpts")})
    with pytest.raises(PreflightError) as e:
        pipeline.run(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "ckpts" / "Pre-trained-BioGPT" / "checkpoint.pt") in msg
    assert "python -m data_prep.download Pre-trained-BioGPT --dest" in msg and "--help" in msg
    assert not (tmp_path / "not-prepared").exists() and not (tmp_path / "run").exists()  # prepare never ran


@pytest.mark.slow
def test_headline_command_without_weights_is_one_line(tmp_path):
    """`python -m biogpt_train +experiment=pubmedqa` as a newcomer types it: one line, non-zero exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "biogpt_train", "+experiment=pubmedqa",
                           f"paths.pretrained={tmp_path}/ckpts", f"paths.runs={tmp_path}/runs",
                           f"paths.data={tmp_path}/data"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "data_prep.download" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "data").exists()


def test_hub_id_resolves_through_snapshot_download(tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, **kw):
        calls.append(repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(snapshot_download=fake_snapshot_download))
    assert preflight.resolve_finetune_from("microsoft/biogpt") == tmp_path / "snap" and calls == ["microsoft/biogpt"]
    local = tmp_path / "model.pt"
    local.write_bytes(b"x")
    assert preflight.resolve_finetune_from(str(local)) == local and calls == ["microsoft/biogpt"]

    def offline(repo_id, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=offline))
    with pytest.raises(PreflightError, match=r"microsoft/biogpt: could not fetch .*OSError: We couldn't connect") as e:
        preflight.resolve_finetune_from("microsoft/biogpt")
    assert "\n" not in str(e.value)


def test_hub_id_in_the_config_becomes_the_snapshot_path(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(snapshot_download=lambda repo_id, **kw: str(tmp_path / "snap")))
    cfg = _pubmedqa(tmp_path / "data", tmp_path / "runs", **{"checkpoint.finetune_from": "microsoft/biogpt"})
    preflight.check(cfg, tmp_path / "run")
    assert cfg.checkpoint.finetune_from == str(tmp_path / "snap")


def test_reduced_epoch_budget_averages_fewer_with_a_warning(tmp_path, caplog):
    cfg = _pubmedqa(tmp_path / "data", tmp_path / "runs", **{"checkpoint.finetune_from": "null",
                                                           "trainer.max_epoch": 2})
    assert cfg.checkpoint.average_last_epochs == 5 and preflight.epochs_to_average(cfg) == 2
    with caplog.at_level(logging.WARNING, logger="biogpt_train"):
        preflight.check(cfg, tmp_path / "run")
    assert "the last 2 will be averaged" in caplog.text
    cfg.checkpoint.no_epoch_checkpoints = True
    with pytest.raises(PreflightError, match="no_epoch_checkpoints"):
        preflight.check(cfg, tmp_path / "run")


def test_average_stage_uses_the_available_epochs(tmp_path, caplog):
    import torch

    from biogpt_train.pipeline.average import average

    cfg = _pubmedqa(tmp_path / "data", tmp_path / "runs", **{"checkpoint.finetune_from": "null"})
    save = tmp_path / "run" / "checkpoints"
    save.mkdir(parents=True)
    for epoch in (1, 2):
        torch.save({"model": {"w": torch.full((2,), float(epoch))}}, save / f"checkpoint{epoch}.pt")
    with caplog.at_level(logging.WARNING, logger="biogpt_train"):
        average(cfg, tmp_path / "run")
    assert "averaging those 2" in caplog.text
    assert torch.load(save / "checkpoint_avg.pt", weights_only=True)["model"]["w"].tolist() == [1.5, 1.5]


def test_missing_gold_and_split_fail_before_training(tmp_path):
    data = make_pair_data(tmp_path / "data")
    cfg = _pubmedqa(data, tmp_path / "runs", **{"checkpoint.finetune_from": "null", "generation.subset": "test"})
    with pytest.raises(PreflightError, match=r"test\.x-y\.x\.bin/\.idx not found.*generation.subset=valid"):
        preflight.check(cfg, tmp_path / "run")
    cfg = _pubmedqa(data, tmp_path / "runs", **{"checkpoint.finetune_from": "null", "generation.subset": "valid",
                                                "evaluation.raw_dir": str(tmp_path / "no-raw")})
    with pytest.raises(PreflightError, match=r"no gold for pubmedqa split 'valid'.*evaluation.gold=FILE"):
        pipeline.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_generate_without_a_checkpoint_source_fails_at_start(tmp_path):
    data = make_pair_data(tmp_path / "data")
    cfg = _pubmedqa(data, tmp_path / "runs", **{"checkpoint.finetune_from": "null", "generation.subset": "valid",
                                                "pipeline.stages": "[generate]"})
    with pytest.raises(PreflightError, match=r"checkpoint_avg.pt does not exist and no stage of this run writes it"):
        preflight.check(cfg, tmp_path / "run")


def test_unwritable_run_directory_is_one_line(tmp_path):
    data = make_lm_data(tmp_path / "data")
    (tmp_path / "afile").write_text("x")
    cfg = compose(tiny_overrides(data, tmp_path / "runs"))
    with pytest.raises(PreflightError, match=r"run directory .*afile/run: .*afile is a file"):
        pipeline.run(cfg, tmp_path / "afile" / "run")


def test_average_after_an_update_budget_inside_the_first_epoch(tmp_path, caplog):
    import torch

    from biogpt_train.pipeline.average import average

    cfg = _pubmedqa(tmp_path / "data", tmp_path / "runs", **{"checkpoint.finetune_from": "null"})
    save = tmp_path / "run" / "checkpoints"
    save.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(2)}, "train_state": {}}, save / "checkpoint_last.pt")
    with caplog.at_level(logging.WARNING, logger="biogpt_train"):
        average(cfg, tmp_path / "run")
    assert "using checkpoint_last.pt alone" in caplog.text
    out = torch.load(save / "checkpoint_avg.pt", weights_only=True)
    assert out["model"]["w"].tolist() == [1.0, 1.0] and "train_state" not in out
