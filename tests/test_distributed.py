"""Data parallelism on CPU (gloo) through the real CLI under torchrun: 2 ranks x update_freq 1 give the same updates
as 1 rank x update_freq 2 on the same batches (fairseq's global-token normalisation), with an uneven last group
(dummy batch on rank 1); FSDP2 (`fully_shard`) matches DDP; all ranks share one run directory."""

from __future__ import annotations

import pytest
import torch

from test_trainer_helpers import make_lm_data, read_metrics, run_cli, run_in_process, tiny_overrides

# 21 batches per epoch: update 11 is batch 20 alone (rank 1 runs a zero-weight dummy), update 12 starts epoch 2
EXTRA = {"trainer.max_update": 12}
# k_proj biases: their exact gradient is 0 (softmax is invariant to a per-query shift), so Adam turns rounding
# noise (~1e-10) into lr-sized steps whose sign depends on summation order; they carry no signal to compare.
NOISE_ONLY = ("self_attn.k_proj.bias",)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = make_lm_data(root / "data")
    run_in_process(tiny_overrides(data, root / "runs", **EXTRA, **{"trainer.update_freq": 2}), root / "uf2")
    return root, data


@pytest.fixture(scope="module")
def ddp_run(runs):
    """The 2-rank DDP run, launched once and shared: the FSDP test compares with it whatever ran before."""
    root, data = runs
    return _torchrun(root, data, "ddp")


def _model(run_dir):
    return torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]


def _assert_params_close(a, b, skip=NOISE_ONLY, atol=1e-6):
    compared = 0
    for k in a:
        if any(k.endswith(s) for s in skip):
            continue
        diff = (a[k].double() - b[k].double()).abs().max().item()
        assert diff <= atol, f"{k}: max |diff| {diff:.3g}"
        compared += 1
    assert compared >= len(a) - 2


def _torchrun(root, data, run_id, **extra):
    runs = root / f"runs_{run_id}"  # one parent per launch: what both ranks create there is checked
    run_cli(tiny_overrides(data, runs, **EXTRA, **extra), torchrun=2, env_extra={"BIOGPT_RUN_ID": run_id})
    return runs / "default" / run_id


@pytest.mark.slow
def test_ddp_two_ranks_equal_one_rank_with_update_freq_2(runs, ddp_run):
    root, _ = runs
    run_dir = ddp_run
    ref = root / "uf2"
    _assert_params_close(_model(run_dir), _model(ref))
    got, want = read_metrics(run_dir), read_metrics(ref)
    assert sorted(got) == list(range(1, 13))
    for u in got:
        assert got[u]["ntokens"] == want[u]["ntokens"]  # the same batches, summed over ranks
        assert got[u]["loss"] == pytest.approx(want[u]["loss"], rel=1e-6)
    # one run directory for both ranks: one .hydra/ (rank 0), a log file per rank
    assert (run_dir / ".hydra").is_dir() and (run_dir / "train_rank0.log").exists()
    assert (run_dir / "train_rank1.log").exists()
    assert [p.name for p in run_dir.parent.iterdir()] == ["ddp"]


@pytest.mark.slow
def test_fsdp_two_ranks_match_ddp(runs, ddp_run):
    root, data = runs
    run_dir = _torchrun(root, data, "fsdp", distributed="fsdp")
    _assert_params_close(_model(run_dir), _model(root / "uf2"))
    # FSDP vs DDP: same reduction order, so every parameter agrees
    _assert_params_close(_model(run_dir), _model(ddp_run), skip=())
    state = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    emb = state["optimizer"]["state"]["decoder.embed_tokens.weight"]["exp_avg"]
    assert emb.shape == (64, 64)  # the full (gathered) optimizer state, keyed by parameter name
