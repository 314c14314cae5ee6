"""Trainer options that a run can silently ignore, each checked by its effect, in-process on CPU with a tiny model:
optim.clip_norm, optim.decay_all_params=false, trainer.compile, checkpoint.reset_optimizer / reset_dataloader,
checkpoint_best.pt contents, trainer.stop_time_hours."""

from __future__ import annotations

import types

import pytest
import torch

from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.data.iterators import group
from biogpt_train.train import trainer as trainer_mod
from biogpt_train.train.trainer import Trainer
from test_trainer_helpers import make_lm_data, make_trainer, read_metrics, tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm") / "data")


def _grads_after_one_step(tr: Trainer, monkeypatch) -> tuple[dict, list[torch.Tensor]]:
    monkeypatch.setattr(tr.optimizer, "step", lambda: None)  # keep the gradients for inspection
    out = tr.train_step(next(group(tr.train_itr.next_epoch_itr(), 1)), epoch=1)
    return out, [p.grad.detach().clone() for p in tr.params]


# --- optim.clip_norm ------------------------------------------------------------------------------------------
def test_clip_norm_scales_grads_by_fairseqs_factor_and_logs_the_norm_before_clipping(tmp_path, lm_data, monkeypatch):
    free_out, free = _grads_after_one_step(make_trainer(tmp_path / "a", lm_data), monkeypatch)
    norm = free_out["gnorm"]
    assert norm == pytest.approx(torch.linalg.vector_norm(torch.cat([g.flatten() for g in free])).item(), rel=1e-5)
    clip = norm / 4
    out, clipped = _grads_after_one_step(make_trainer(tmp_path / "b", lm_data, **{"optim.clip_norm": clip}),
                                         monkeypatch)
    assert out["gnorm"] == norm  # the logged norm is the one before clipping (fairseq's gnorm)
    coef = clip / (norm + 1e-6)  # fairseq clip_grad_norm_: grads * (max_norm / (total_norm + 1e-6))
    for g, f in zip(clipped, free):
        torch.testing.assert_close(g, f * coef, rtol=1e-6, atol=0)
    # a limit above the norm changes nothing
    out, loose = _grads_after_one_step(make_trainer(tmp_path / "c", lm_data, **{"optim.clip_norm": norm * 2}),
                                       monkeypatch)
    assert out["gnorm"] == norm and all(torch.equal(g, f) for g, f in zip(loose, free))


# --- optim.decay_all_params ------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay_all", [True, False])
def test_decay_all_params_false_spares_biases_and_norms(tmp_path, lm_data, decay_all):
    """With zero gradients Adam's step is the decoupled decay alone: p <- p (1 - lr wd). fairseq decays every
    parameter; decay_all_params=false decays only matrices (>= 2-D), never biases or LayerNorm weights."""
    lr, wd = 0.01, 0.5
    tr = make_trainer(tmp_path, lm_data, **{"optim.weight_decay": wd, "optim.decay_all_params": str(decay_all)})
    with torch.no_grad():  # no zeros (out_proj biases start at 0): every decayed tensor visibly changes
        for p in tr.params:
            p.add_(torch.rand_like(p) + 0.5)
    before = {n: p.detach().clone() for n, p in tr.raw_model.named_parameters()}
    for p in tr.params:
        p.grad = torch.zeros_like(p)
    for g in tr.optimizer.param_groups:
        g["lr"] = lr
    tr.optimizer.step()
    decayed = set()
    for n, p in tr.raw_model.named_parameters():
        if torch.equal(p.detach(), before[n]):
            continue
        torch.testing.assert_close(p.detach(), before[n] * (1 - lr * wd), rtol=1e-6, atol=0, msg=n)
        decayed.add(n)
    names = set(before)
    matrices = {n for n in names if before[n].dim() >= 2}
    assert any("layer_norm" in n for n in names - matrices) and any(n.endswith("bias") for n in names - matrices)
    assert decayed == (names if decay_all else matrices)


# --- trainer.compile --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_model_gives_the_eager_update(tmp_path, lm_data):
    """trainer.compile=true (torch.compile per decoder layer): the same loss, gradient norm and weights after one
    update as eager, and the checkpoint keeps the plain parameter names."""
    outs = []
    for flag in ("false", "true"):
        tr = make_trainer(tmp_path / flag, lm_data, **{"trainer.compile": flag, "model.dropout": 0.0})
        out = tr.train_step(next(group(tr.train_itr.next_epoch_itr(), 1)), epoch=1)
        compiled = [type(layer).__name__ == "OptimizedModule" or getattr(layer, "_compiled_call_impl", None)
                    is not None for layer in tr.raw_model.decoder.layers]
        assert all(compiled) == (flag == "true"), compiled
        assert not any("_orig_mod" in k for k in tr.raw_model.state_dict())
        outs.append((out["loss_sum"], out["gnorm"], {k: v.clone() for k, v in tr.raw_model.state_dict().items()}))
    (loss_e, gnorm_e, sd_e), (loss_c, gnorm_c, sd_c) = outs
    assert loss_c == pytest.approx(loss_e, rel=1e-5) and gnorm_c == pytest.approx(gnorm_e, rel=1e-4)
    for k in sd_e:
        torch.testing.assert_close(sd_c[k], sd_e[k], rtol=1e-4, atol=1e-6, msg=k)


# --- checkpoint.reset_optimizer / reset_dataloader --------------------------------------------------------------
@pytest.fixture(scope="module")
def four_updates(tmp_path_factory, lm_data):
    """A run saved after 4 updates (mid-epoch: 21 batches per epoch)."""
    root = tmp_path_factory.mktemp("reset")
    cfg = compose(tiny_overrides(lm_data, root / "runs", **{"trainer.max_update": 4}))
    Trainer(cfg, root / "run", distributed.init("cpu")).train()
    return root / "run", torch.load(root / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=True)


def _relaunch(tmp_path, data, saved_run, **overrides) -> Trainer:
    """A new launch resuming from `saved_run`'s checkpoint_last.pt (restore_file given as an absolute path)."""
    over = {"trainer.max_update": 8, "checkpoint.restore_file": saved_run / "checkpoints" / "checkpoint_last.pt",
            **overrides}
    return make_trainer(tmp_path, data, **over)


@pytest.mark.parametrize("reset_opt,reset_data", [(False, False), (True, False), (False, True), (True, True)])
def test_reset_optimizer_and_reset_dataloader(tmp_path, lm_data, four_updates, reset_opt, reset_data):
    run, saved = four_updates
    tr = _relaunch(tmp_path, lm_data, run, **{"checkpoint.reset_optimizer": str(reset_opt),
                                                  "checkpoint.reset_dataloader": str(reset_data)})
    for k, v in saved["model"].items():  # the weights always come from the checkpoint
        assert torch.equal(tr.raw_model.state_dict()[k], v), k
    # reset_optimizer: no Adam moments, update count (hence the LR schedule) from 0; else both restored
    assert tr.state.num_updates == (0 if reset_opt else 4)
    assert len(tr.optimizer.state) == (0 if reset_opt else len(tr.params))
    if not reset_opt:
        name = "decoder.layers.0.fc1.weight"
        p = dict(tr.raw_model.named_parameters())[name]
        assert torch.equal(tr.optimizer.state[p]["exp_avg"], saved["train_state"]["optimizer"]["state"][name]["exp_avg"])
    assert tr.lr(1) == pytest.approx(tr.lr_fn(0 if reset_opt else 4, 1))
    # reset_dataloader: epoch 1 from its first batch; else where the save left off
    itr = tr.train_itr.state_dict()
    assert (itr["epoch"], itr["iterations_in_epoch"]) == ((1, 0) if reset_data else (1, 4))
    first = next(tr.train_itr.next_epoch_itr())
    fresh = make_trainer(tmp_path / "fresh", lm_data).train_itr.next_epoch_itr()
    expected = [next(fresh) for _ in range(5)][0 if reset_data else 4]
    assert torch.equal(first["net_input"]["src_tokens"], expected["net_input"]["src_tokens"])


# --- checkpoint_best.pt -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("maximize", [False, True])
def test_best_checkpoint_holds_the_weights_of_the_best_validation(tmp_path, lm_data, monkeypatch, maximize):
    """Validation after every update with scripted losses: checkpoint_best.pt is the save of the best one
    (update 2, or update 3 when maximising), not the last, and checkpoint_last.pt remembers that best value."""
    losses = iter([3.0, 2.0, 3.5, 2.5, 2.7])
    monkeypatch.setattr(Trainer, "validate", lambda self, epoch: next(losses))
    tr = make_trainer(tmp_path, lm_data, **{"trainer.max_update": 5, "trainer.validate_interval_updates": 1,
                                            "checkpoint.save_interval_updates": 1,
                                            "checkpoint.maximize_best_checkpoint_metric": str(maximize)})
    tr.train()
    save_dir = tmp_path / "run" / "checkpoints"
    best = torch.load(save_dir / "checkpoint_best.pt", weights_only=True)
    want_update, want_loss = (3, 3.5) if maximize else (2, 2.0)
    assert best["train_state"]["num_updates"] == want_update and best["train_state"]["best"] == want_loss
    same_save = torch.load(save_dir / f"checkpoint_1_{want_update}.pt", weights_only=True)
    last = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert last["train_state"]["num_updates"] == 5 and last["train_state"]["best"] == want_loss
    changed = 0
    for k, v in best["model"].items():
        assert torch.equal(v, same_save["model"][k]), k
        changed += not torch.equal(v, last["model"][k])
    assert changed > 0  # the best weights are not the last ones
    assert "optimizer" not in best["train_state"]  # a weights copy: resume reads checkpoint_last.pt


# --- trainer.stop_time_hours ------------------------------------------------------------------------------------
def test_stop_time_hours_stops_after_the_update_that_crosses_it(tmp_path, lm_data, monkeypatch):
    """A fake clock advancing 1000 s per update and a 2500 s limit: updates 1 and 2 run within it, the clock
    crosses it during update 3, so the run stops after update 3 (validated and saved), long before max_update."""
    clock = [0.0]
    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    tr = make_trainer(tmp_path, lm_data, **{"trainer.max_update": 50, "trainer.stop_time_hours": 2500 / 3600})
    step = tr.train_step

    def timed_step(samples, epoch):
        clock[0] += 1000.0
        return step(samples, epoch)

    tr.train_step = timed_step
    result = tr.train()
    assert result["num_updates"] == 3 and sorted(read_metrics(tmp_path / "run")) == [1, 2, 3]
    assert list(read_metrics(tmp_path / "run", "valid")) == [3]
    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=True)["train_state"]
    assert state["num_updates"] == 3 and state["elapsed"] == pytest.approx(3000.0)


def test_keep_freed_memory_is_accepted_on_glibc():
    """trainer.cpu_keep_freed_memory (default on): glibc accepts the thresholds; elsewhere it is a no-op."""
    import platform

    from biogpt_train.train.allocator import keep_freed_memory

    ok = keep_freed_memory()
    assert ok is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
