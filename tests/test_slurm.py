"""Slurm launches without Slurm: rank/world/master address from SLURM_* variables (srun, one task per GPU), and
`scontrol requeue` after a preemption checkpoint (subprocess faked), down to a real signal during training."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.train import trainer as trainer_mod
from test_trainer_helpers import make_lm_data, tiny_overrides

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
              "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables; whatever detect_env exports is removed again afterwards."""
    for name in TORCHRUN_VARS + SLURM_VARS:
        monkeypatch.setenv(name, "x")  # recorded, so monkeypatch restores the original (absent) state
        monkeypatch.delenv(name)
    return monkeypatch


def _no_scontrol(monkeypatch):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        raise FileNotFoundError(2, "No such file or directory", "scontrol")

    monkeypatch.setattr(distributed.subprocess, "run", run)
    return calls


def _srun_env(monkeypatch, nodelist="gpu[01-04]"):
    for k, v in {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": nodelist,
                 "SLURM_JOB_ID": "123456"}.items():
        monkeypatch.setenv(k, v)


def test_detect_env_reads_slurm_and_exports_torchrun_variables(clean_env):
    calls = _no_scontrol(clean_env)
    _srun_env(clean_env)
    assert distributed.detect_env() == (5, 1, 8)
    assert calls == [["scontrol", "show", "hostnames", "gpu[01-04]"]]
    env = os.environ
    assert env["MASTER_ADDR"] == "gpu01"  # first host of the node list, parsed without scontrol
    assert env["MASTER_PORT"] == str(20000 + 123456 % 20000) == "23456"  # per job: concurrent jobs do not collide
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("5", "1", "8")
    clean_env.setattr(distributed, "_INFO", None)  # before init (another test may have run it in this process)
    assert distributed.info() == distributed.DistInfo(5, 1, 8)


@pytest.mark.parametrize("nodelist,first", [("gpu[003-005,7],cpu1", "gpu003"), ("node17", "node17"),
                                            ("a100-[2,4]", "a100-2"), ("n[9],m[1-2]", "n9")])
def test_first_host_of_a_node_list_without_scontrol(clean_env, nodelist, first):
    _no_scontrol(clean_env)
    assert distributed._first_slurm_host(nodelist) == first


def test_scontrol_answer_wins_and_preset_master_is_kept(clean_env):
    clean_env.setattr(distributed.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, stdout="gpu17\ngpu18\n", stderr=""))
    _srun_env(clean_env, "gpu[17-18]")
    distributed.detect_env()
    assert os.environ["MASTER_ADDR"] == "gpu17"
    clean_env.setenv("MASTER_ADDR", "10.0.0.9")
    clean_env.setenv("MASTER_PORT", "29500")
    distributed.detect_env()
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.0.0.9", "29500")


def test_torchrun_variables_take_precedence_and_one_task_is_not_distributed(clean_env):
    _srun_env(clean_env)
    clean_env.setenv("RANK", "3")
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "0")
    assert distributed.detect_env() == (3, 0, 4)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        clean_env.delenv(name)
    clean_env.setenv("SLURM_NTASKS", "1")  # `sbatch` with one task: plain single-process run
    assert distributed.detect_env() == (0, 0, 1)
    assert "RANK" not in os.environ and "MASTER_ADDR" not in os.environ


def _record_runs(monkeypatch, fail=False):
    calls = []

    def run(cmd, check=False, **kw):
        calls.append(cmd)
        if fail:
            raise subprocess.CalledProcessError(1, cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(distributed.subprocess, "run", run)
    return calls


def test_requeue_calls_scontrol_with_the_job_id(clean_env, caplog):
    calls = _record_runs(clean_env)
    distributed.requeue_slurm_job()
    assert calls == []  # outside Slurm: nothing to requeue
    clean_env.setenv("SLURM_JOB_ID", "777")
    distributed.requeue_slurm_job()
    clean_env.setenv("SLURM_ARRAY_JOB_ID", "700")
    clean_env.setenv("SLURM_ARRAY_TASK_ID", "3")
    distributed.requeue_slurm_job()  # an array task is requeued by its array id
    assert calls == [["scontrol", "requeue", "777"], ["scontrol", "requeue", "700_3"]]
    _record_runs(clean_env, fail=True)
    distributed.requeue_slurm_job()  # best effort: a failure is a warning, not an exception
    assert "could not requeue Slurm job 700_3" in caplog.text


@pytest.mark.parametrize("signum,requeued", [(signal.SIGUSR1, True), (signal.SIGINT, False)])
def test_preemption_signal_saves_then_requeues(tmp_path, clean_env, single_torch_thread, signum, requeued):
    """A real SIGUSR1 (sbatch --signal=USR1@90) during update 2: the trainer finishes the update, saves
    checkpoint_last.pt, raises Preempted, and rank 0 runs `scontrol requeue $SLURM_JOB_ID`; Ctrl-C does not."""
    clean_env.setenv("SLURM_JOB_ID", "4242")
    calls = _record_runs(clean_env)
    data = make_lm_data(tmp_path / "data")
    cfg = compose(tiny_overrides(data, tmp_path / "runs", **{"trainer.max_update": 20}))
    step = trainer_mod.Trainer.train_step

    def step_then_signal(self, samples, epoch):
        if self.state.num_updates == 1:
            os.kill(os.getpid(), signum)  # delivered now, in the main thread, before this update's all-reduce
        return step(self, samples, epoch)

    clean_env.setattr(trainer_mod.Trainer, "train_step", step_then_signal)
    previous = signal.getsignal(signum)
    distributed.destroy()
    with pytest.raises(distributed.Preempted, match="stopped by a signal at update 2"):
        trainer_mod.train(cfg, tmp_path / "run")
    assert signal.getsignal(signum) is previous  # handlers restored
    import torch

    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    assert state["num_updates"] == 2
    assert calls == ([["scontrol", "requeue", "4242"]] if requeued else [])
