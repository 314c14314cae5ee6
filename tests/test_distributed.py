"""Data parallelism on CPU (gloo) through the real CLI under torchrun: 2 ranks x update_freq 1 give the same updates
as 1 rank x update_freq 2 on the same batches (fairseq's global-token normalisation), with an uneven last group
(dummy batch on rank 1); FSDP2 (`fully_shard`) matches DDP; all ranks share one run directory; a stopped FSDP run
resumes exactly; a 2-rank checkpoint relaunched on 1 rank is refused mid-epoch unless resharding is asked for."""

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


@pytest.fixture(scope="module")
def fsdp_run(runs):
    root, data = runs
    return _torchrun(root, data, "fsdp", distributed="fsdp")


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
    runs = root / f"runs_{run_id}"  # one parent per run: what both ranks create there is checked
    run_cli(tiny_overrides(data, runs, **{**EXTRA, **extra}), torchrun=2, env_extra={"BIOGPT_RUN_ID": run_id})
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
def test_fsdp_two_ranks_match_ddp(runs, ddp_run, fsdp_run):
    root, _ = runs
    run_dir = fsdp_run
    _assert_params_close(_model(run_dir), _model(root / "uf2"))
    # FSDP vs DDP: same reduction order, so every parameter agrees
    _assert_params_close(_model(run_dir), _model(ddp_run), skip=())
    state = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    emb = state["optimizer"]["state"]["decoder.embed_tokens.weight"]["exp_avg"]
    assert emb.shape == (64, 64)  # the full (gathered) optimizer state, keyed by parameter name


def _train_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]


@pytest.mark.slow
def test_fsdp_stopped_and_resumed_equals_uninterrupted(runs, fsdp_run):
    """2-rank FSDP stopped mid-epoch at update 5 and relaunched with the whole budget: the sharded optimizer
    state, update count and data position come back, so updates 6..12 and the weights equal the 12-update run's."""
    root, data = runs
    run_dir = _torchrun(root, data, "fsdp_resume", distributed="fsdp", **{"trainer.max_update": 5})
    saved = _train_state(run_dir)
    assert (saved["num_updates"], saved["world_size"], saved["iterator"]["iterations_in_epoch"]) == (5, 2, 5)
    assert _torchrun(root, data, "fsdp_resume", distributed="fsdp") == run_dir  # same command, full budget
    got, want = read_metrics(run_dir), read_metrics(fsdp_run)
    assert sorted(got) == list(range(1, 13))
    for u in range(1, 13):
        assert (got[u]["loss"], got[u]["gnorm"], got[u]["lr"]) == (want[u]["loss"], want[u]["gnorm"], want[u]["lr"]), u
    final, ref = _model(run_dir), _model(fsdp_run)
    assert all(torch.equal(final[k], ref[k]) for k in ref)
    assert _train_state(run_dir)["iterator"] == _train_state(fsdp_run)["iterator"]


@pytest.mark.slow
def test_resume_on_another_world_size(runs):
    """A 2-rank run relaunched on 1 rank: mid-epoch it is a clear error, unless checkpoint.reshard_on_resume=true
    (then it continues at the same share of the epoch); at an epoch boundary it just works."""
    from biogpt_train.train.state import ResumeError

    root, data = runs
    one_rank = {**EXTRA, "trainer.max_update": 12}
    mid = _torchrun(root, data, "ws_mid", **{"trainer.max_update": 4})  # 4 batches per rank of epoch 1
    with pytest.raises(ResumeError, match=r"saved on 2 rank\(s\) in the middle of epoch 1 \(4 batches per rank "
                                          r"done\) but this launch has 1.*reshard_on_resume=true"):
        run_in_process(tiny_overrides(data, mid.parent.parent, **one_rank), mid)
    assert _train_state(mid)["num_updates"] == 4  # nothing was touched
    run_in_process(tiny_overrides(data, mid.parent.parent, **one_rank, **{"checkpoint.reshard_on_resume": "true"}),
                   mid)
    state = _train_state(mid)
    # 4 batches per rank on 2 ranks = batch 8 of epoch 1's 21 on 1 rank, then 8 more updates
    assert (state["num_updates"], state["world_size"]) == (12, 1)
    assert (state["iterator"]["epoch"], state["iterator"]["iterations_in_epoch"]) == (1, 16)
    assert sorted(read_metrics(mid)) == list(range(1, 13))

    edge = _torchrun(root, data, "ws_edge", **{"trainer.max_update": 11})  # epoch 1 done (21 batches on 2 ranks)
    assert _train_state(edge)["iterator"]["iterations_in_epoch"] == 0
    run_in_process(tiny_overrides(data, edge.parent.parent, **{**EXTRA, "trainer.max_update": 14}), edge)
    state = _train_state(edge)
    assert state["num_updates"] == 14 and state["world_size"] == 1
    assert (state["iterator"]["epoch"], state["iterator"]["iterations_in_epoch"]) == (2, 3)
