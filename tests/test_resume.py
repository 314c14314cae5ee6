"""Exact resume: a run killed with a real SIGKILL and relaunched with the same command repeats the uninterrupted run's
per-update losses and final weights bitwise (CPU fp32, dropout on), across epoch boundaries and mid-epoch
checkpoints. SIGTERM (Slurm preemption) saves checkpoint_last.pt after the current update and exits with 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from test_trainer_helpers import PY, REPO, make_lm_data, read_metrics, run_cli, run_in_process, tiny_overrides

MAX_UPDATE = 40
EXTRA = {"trainer.max_update": MAX_UPDATE, "model.dropout": 0.1, "model.attention_dropout": 0.1,
         "checkpoint.save_interval_updates": 5, "trainer.validate_interval_updates": 7}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = make_lm_data(root / "data")  # 21 batches per epoch: the run crosses two epoch boundaries
    ref_dir = root / "reference"
    run_in_process(tiny_overrides(data, root / "runs", **EXTRA), ref_dir)
    return root, data, read_metrics(ref_dir), torch.load(ref_dir / "checkpoints" / "checkpoint_last.pt",
                                                       weights_only=True)


def _launch(args, env):
    return subprocess.Popen([PY, "-m", "biogpt_train", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_update(proc, run_dir, update: int, timeout: float = 120) -> int:
    """Poll metrics.jsonl until a train record >= `update` appears; returns the latest update seen."""
    path, deadline = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            done = [json.loads(x)["update"] for x in path.read_text().splitlines() if '"split": "train"' in x]
            if done and max(done) >= update:
                return max(done)
        if proc.poll() is not None:
            pytest.fail(f"run ended before update {update}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.005)
    pytest.fail(f"no update {update} within {timeout} s")


def _wait_for_run_dir(proc, parent, timeout: float = 120):
    """The single run directory Hydra creates under `parent` (its name is the run id)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(parent.iterdir()) if parent.exists() else []
        if found:
            assert len(found) == 1, found
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"run ended before creating its directory:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.01)
    pytest.fail(f"no run directory under {parent} within {timeout} s")


def _assert_same_as_reference(run_dir, ref_metrics, ref_ckpt):
    got = read_metrics(run_dir)
    assert sorted(got) == list(range(1, MAX_UPDATE + 1))
    for u in range(1, MAX_UPDATE + 1):
        assert got[u]["loss"] == ref_metrics[u]["loss"], f"update {u}: {got[u]['loss']} != {ref_metrics[u]['loss']}"
        assert got[u]["gnorm"] == ref_metrics[u]["gnorm"], f"update {u}"
    final = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    for k, v in ref_ckpt["model"].items():
        assert torch.equal(final["model"][k], v), k
    assert final["train_state"]["iterator"] == ref_ckpt["train_state"]["iterator"]


@pytest.mark.slow
def test_sigkill_and_relaunch_equals_uninterrupted(setup):
    root, data, ref_metrics, ref_ckpt = setup
    runs = root / "runs_kill"
    args = tiny_overrides(data, runs, **EXTRA)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = _launch(args, env)
    run_dir = _wait_for_run_dir(proc, runs / "default")
    seen = _wait_for_update(proc, run_dir, 12)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    killed_at = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    assert 10 <= killed_at["num_updates"] < MAX_UPDATE and killed_at["num_updates"] <= seen
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # nothing half-written under a real name
    run_cli(args)  # the same command resumes from checkpoint_last.pt
    _assert_same_as_reference(run_dir, ref_metrics, ref_ckpt)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(setup):
    root, data, _, _ = setup
    runs = root / "runs_term"
    args = tiny_overrides(data, runs, **EXTRA)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), BIOGPT_RUN_ID="job42")
    proc = _launch(args, env)
    run_dir = _wait_for_run_dir(proc, runs / "default")
    assert run_dir.name == "job42"  # BIOGPT_RUN_ID names the run directory
    _wait_for_update(proc, run_dir, 6)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "relaunch the same command to resume" in out
    state = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    assert 6 <= state["num_updates"] < MAX_UPDATE
    assert max(read_metrics(run_dir)) == state["num_updates"]  # saved right after the last logged update
    # (resuming from it is the same code path as after SIGKILL, checked bitwise above)


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_like_sigterm(setup):
    root, data, _, _ = setup
    runs = root / "runs_int"
    args = tiny_overrides(data, runs, **EXTRA)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), BIOGPT_RUN_ID="ctrlc")
    proc = _launch(args, env)
    run_dir = _wait_for_run_dir(proc, runs / "default")
    _wait_for_update(proc, run_dir, 6)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "received SIGINT" in out and "relaunch the same command to resume" in out and "Traceback" not in out
    state = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    assert 6 <= state["num_updates"] < MAX_UPDATE


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once(tmp_path):
    # updates of a few hundred ms, so that the second Ctrl-C lands before the first one's save
    data = make_lm_data(tmp_path / "data")
    args = tiny_overrides(data, tmp_path / "runs", **{"trainer.max_update": 10000, "model.embed_dim": 512,
                                                      "model.ffn_dim": 2048, "model.layers": 4,
                                                      "data.max_tokens": 512, "task.tokens_per_sample": 128})
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), BIOGPT_RUN_ID="twice")
    proc = _launch(args, env)
    run_dir = _wait_for_run_dir(proc, tmp_path / "runs" / "default")
    _wait_for_update(proc, run_dir, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGINT, out[-3000:]
    assert "aborting without saving" in out
    assert not (run_dir / "checkpoints" / "checkpoint_last.pt").exists()
