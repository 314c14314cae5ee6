"""Mixed precision: fairseq's dynamic loss scaler, fp16 overflow skipping (no update, no LR move), and bf16 / fp16
training runs whose loss falls on the real PubMed abstracts in ../shared/data/pretrain_corpus."""

from __future__ import annotations

import math
import shutil

import pytest

from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.train.precision import DynamicLossScaler, MinimumLossScaleError, default_scale_window
from biogpt_train.train.trainer import Trainer
from conftest import require_shared
from test_trainer_helpers import make_lm_data, read_metrics, tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend


def test_loss_scaler_follows_fairseq():
    s = DynamicLossScaler(init_scale=128, scale_window=2, min_loss_scale=1e-4)
    trace = []
    for overflow in [False, False, True, False, False, False, True, True]:
        if s.check_overflow(float("inf") if overflow else 1.0):
            trace.append(("skip", s.loss_scale))
        else:
            s.update()
            trace.append(("step", s.loss_scale))
    # fairseq: grow when (iter - last_overflow_iter) % window == 0 after a good step; halve on every overflow
    assert trace == [("step", 128), ("step", 256), ("skip", 128), ("step", 128), ("step", 256), ("step", 256),
                     ("skip", 128), ("skip", 64)]
    restored = DynamicLossScaler(scale_window=2)  # the window comes from the config (W, update_freq), not the state
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict()
    tiny = DynamicLossScaler(init_scale=4e-4, scale_window=10, min_loss_scale=1e-4)
    assert tiny.check_overflow(float("nan"))  # 2e-4 is still above the minimum
    with pytest.raises(MinimumLossScaleError, match="minimum loss scale"):
        tiny.check_overflow(float("inf"))
    assert tiny.loss_scale == 2e-4  # fairseq restores the previous scale before raising


def test_scale_window_default():
    assert default_scale_window(world_size=8, update_freq=64) == int(2**14 / 8 / 64) == 32
    assert default_scale_window(world_size=1, update_freq=1) == 2**14


def test_fp16_overflow_skips_without_moving_updates_or_lr(tmp_path):
    data = make_lm_data(tmp_path / "data")
    cfg = compose(tiny_overrides(data, tmp_path / "runs", **{
        "trainer.precision": "fp16", "trainer.fp16_init_scale": 2.0**22, "trainer.max_update": 3,
        "trainer.max_consecutive_nonfinite": 30, "lr_scheduler.warmup_init_lr": 1e-5}))
    tr = Trainer(cfg, tmp_path / "run", distributed.init("cpu"))
    tr.train()
    assert tr.state.num_updates == 3 and tr.state.skipped_updates > 0  # 2**22 overflows fp16 gradients
    m = read_metrics(tmp_path / "run")
    assert m[1]["lr"] == 1e-5  # the first *applied* update still runs at lr(0)
    assert tr.scaler.loss_scale == 2.0**22 / 2**tr.state.skipped_updates
    assert m[1]["loss_scale"] == tr.scaler.loss_scale


@pytest.fixture(scope="module")
def pubmed_lm(tmp_path_factory):
    """~150 real abstracts, Moses + BioGPT BPE, binarised as a language-modelling directory."""
    corpus = require_shared("pretrain_corpus", "sy-wada", "PubMedAbstract_1MB.dedup.txt")
    dict_txt = require_shared("tokenizer", "BioGPT", "dict.txt")
    codes = require_shared("tokenizer", "BioGPT", "bpecodes")
    from biogpt_train.data.indexed_dataset import write_dataset
    from biogpt_train.data.tokenizer import Tokenizer

    tok = Tokenizer.from_files(dict_txt, codes)
    lines = [x for x in corpus.read_text(encoding="utf-8").splitlines() if x.strip()]
    ids = [x + [2] for x in tok.encode_batch(lines[:160])]
    out = tmp_path_factory.mktemp("pubmed")
    shutil.copy(dict_txt, out / "dict.txt")
    write_dataset(out / "train", ids[:144], len(tok.dictionary))
    write_dataset(out / "valid", ids[144:], len(tok.dictionary))
    return out


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_loss_falls_on_real_pubmed(tmp_path, pubmed_lm, precision):
    cfg = compose(tiny_overrides(pubmed_lm, tmp_path / "runs", **{
        "trainer.precision": precision, "trainer.max_update": 12, "task.tokens_per_sample": 64,
        "data.max_tokens": 256, "optim.lr": 1e-2, "lr_scheduler.warmup_updates": 4}))
    tr = Trainer(cfg, tmp_path / "run", distributed.init("cpu"))
    tr.train()
    m = read_metrics(tmp_path / "run")
    first = sum(m[u]["loss"] for u in range(1, 5)) / 4
    last = sum(m[u]["loss"] for u in range(9, 13)) / 4
    assert math.isfinite(last) and last < first - 2.0, (first, last)  # bits/token, from ~15.4 (= log2 42384)
    assert tr.state.num_updates == 12


@pytest.mark.parametrize("mode", ["master", "memory_efficient"])
def test_fp16_weights_train_and_resume_exactly(tmp_path, mode):
    """trainer.fp16_weights (fairseq --fp16 / --memory-efficient-fp16): the model's weights are fp16, Adam's moments
    fp32 (and, with master, fp32 master weights whose rounding is the model); the loss falls; 4 + 4 updates with a
    resume in between give bitwise the weights and losses of 8 uninterrupted updates."""
    import torch

    data = make_lm_data(tmp_path / "data")
    over = {"trainer.precision": "fp16", "trainer.fp16_weights": mode, "optim.lr": 1e-2,
            "checkpoint.save_interval_updates": 4, "trainer.max_update": 8}

    def trainer(run, **extra):
        return Trainer(compose(tiny_overrides(data, tmp_path / "runs", **{**over, **extra})), tmp_path / run,
                       distributed.init("cpu"))

    tr = trainer("full")
    tr.train()
    assert {p.dtype for p in tr.raw_model.parameters()} == {torch.float16}
    for p in tr.params:
        st = tr.optimizer.state[p]
        assert st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.float32 and ("master" in st) == (mode == "master")
        if mode == "master":
            assert st["master"].dtype == torch.float32 and torch.equal(st["master"].half(), p.detach())
    full = read_metrics(tmp_path / "full")
    assert full[8]["loss"] < full[1]["loss"] - 0.5 and tr.state.skipped_updates == 0
    trainer("split", **{"trainer.max_update": 4}).train()
    resumed = trainer("split")
    assert resumed.state.num_updates == 4
    state = resumed.optimizer.state[resumed.params[0]]
    assert state["exp_avg"].dtype == torch.float32  # not cast to the half parameter's dtype on load
    resumed.train()
    split = read_metrics(tmp_path / "split")
    assert [split[u]["loss"] for u in range(1, 9)] == [full[u]["loss"] for u in range(1, 9)]
    for (name, a), b in zip(tr.raw_model.named_parameters(), resumed.raw_model.parameters()):
        assert torch.equal(a, b), name


def test_fp16_weights_need_fp16_precision(tmp_path):
    data = make_lm_data(tmp_path / "data")
    cfg = compose(tiny_overrides(data, tmp_path / "runs", **{"trainer.fp16_weights": "master"}))
    with pytest.raises(ValueError, match="needs trainer.precision=fp16"):
        Trainer(cfg, tmp_path / "run", distributed.init("cpu"))
