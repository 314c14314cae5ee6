"""Trainer unit tests, in-process on CPU with a tiny model: fairseq's loss normalisation, LR per update, batching,
non-finite handling, finetune_from with vocabulary growth, checkpoint names/pruning/averaging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biogpt_train.checkpoint import training as ckpt
from biogpt_train.checkpoint.io import read_checkpoint, save_native
from biogpt_train.data.batching import make_batches
from biogpt_train.models.biogpt import ModelConfig, TransformerLM
from biogpt_train.train.trainer import NonFiniteLossError, Trainer
from test_trainer_helpers import make_lm_data, make_pair_data, make_trainer, read_metrics

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm") / "data")


def test_update_is_per_token_mean_over_all_micro_batches(tmp_path, lm_data, monkeypatch):
    """update_freq=3: gradient = d(sum of token NLLs of the 3 micro-batches)/d(theta) / total target tokens."""
    tr = make_trainer(tmp_path, lm_data, **{"trainer.update_freq": 3})
    samples = list(next(iter(_groups(tr, 3))))
    assert len(samples) == 3
    # expected: autograd of the summed loss / total tokens, on a copy of the model
    ref = TransformerLM(tr.raw_model.cfg)
    ref.load_state_dict(tr.raw_model.state_dict())
    ref.train()
    torch.manual_seed(tr.cfg.seed + 0)  # the trainer reseeds dropout with seed + num_updates
    total = sum(s["ntokens"] for s in samples)
    loss = sum(F.cross_entropy(ref(s["net_input"]["src_tokens"]).view(-1, len(tr.dictionary)),
                               s["target"].view(-1), ignore_index=1, reduction="sum") for s in samples)
    (loss / total).backward()
    monkeypatch.setattr(tr.optimizer, "step", lambda: None)  # keep the gradients for inspection
    out = tr.train_step(samples, epoch=1)
    for (name, p), q in zip(tr.raw_model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert out["ntokens"] == total
    assert out["loss_sum"] == pytest.approx(loss.item(), rel=1e-6)
    all_grads = torch.cat([q.grad.flatten() for q in ref.parameters()])
    assert out["gnorm"] == pytest.approx(torch.linalg.vector_norm(all_grads).item(), rel=1e-5)
    assert tr.state.num_updates == 1


def _groups(tr: Trainer, uf: int):
    from biogpt_train.data.iterators import group

    return group(tr.train_itr.next_epoch_itr(), uf)


PEAK, INIT, WARMUP, MAX_UPDATE = 3e-3, 1e-5, 4, 6
# fairseq's formulas for the LR of update n + 1 (n = completed updates), framework-notes §2.5
LR_FORMULAS = {
    "inverse_sqrt": lambda n: INIT + n * (PEAK - INIT) / WARMUP if n < WARMUP else PEAK * math.sqrt(WARMUP / n),
    "polynomial_decay": lambda n: PEAK * n / WARMUP if n <= WARMUP
    else PEAK * (1 - (n - WARMUP) / (MAX_UPDATE - WARMUP)),
    "cosine": lambda n: INIT + n * (PEAK - INIT) / WARMUP if n < WARMUP
    else 0.5 * PEAK * (1 + math.cos(math.pi * (n - WARMUP) / (MAX_UPDATE - WARMUP))),
}


@pytest.mark.parametrize("scheduler", sorted(LR_FORMULAS))
def test_lr_per_update_batching_and_base2_logging(tmp_path, lm_data, scheduler):
    """The logged LR of update n+1 is the scheduler's value at n (so polynomial_decay's first update runs at 0);
    every update holds at most max_tokens x update_freq padded tokens from fairseq's batches; the loss is logged
    in bits and ppl = 2**loss."""
    tr = make_trainer(tmp_path, lm_data, **{
        "trainer.max_update": MAX_UPDATE, "trainer.update_freq": 2, "lr_scheduler": scheduler,
        "lr_scheduler.warmup_updates": WARMUP, "lr_scheduler.warmup_init_lr": INIT if scheduler != "polynomial_decay"
        else 0.0})
    expected_batches = make_batches(tr.train_itr.dataset, seed=1, max_tokens=128, required_batch_size_multiple=8,
                                    max_positions=32)
    assert [b.tolist() for b in tr.train_itr.frozen_batches] == [b.tolist() for b in expected_batches]
    assert all(len(b) * max(tr.train_itr.dataset.sizes[b]) <= 128 for b in expected_batches)
    tr.train()
    metrics = read_metrics(tmp_path / "run")
    for n in range(MAX_UPDATE):
        assert metrics[n + 1]["lr"] == pytest.approx(LR_FORMULAS[scheduler](n), rel=1e-12, abs=1e-15), n
        assert metrics[n + 1]["ppl"] == pytest.approx(2 ** metrics[n + 1]["loss"])
        assert metrics[n + 1]["ntokens"] <= 2 * 128
    valid = read_metrics(tmp_path / "run", "valid")
    assert list(valid) == [MAX_UPDATE] and valid[MAX_UPDATE]["loss"] < metrics[1]["loss"]


@pytest.mark.parametrize("limit", [None, 3])
def test_nonfinite_updates_are_skipped_then_the_run_stops(tmp_path, lm_data, limit):
    """fp32 default (null) = fairseq: FloatingPointError at the first non-finite update; N: N-1 skipped, then stop."""
    tr = make_trainer(tmp_path, lm_data, **{"trainer.max_consecutive_nonfinite": "null" if limit is None else limit})
    with torch.no_grad():
        tr.raw_model.decoder.layers[0].fc1.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in tr.raw_model.state_dict().items()}
    n = limit or 1
    with pytest.raises(FloatingPointError, match=f"{n} update\\(s\\) in a row") as e:
        tr.train()
    assert isinstance(e.value, NonFiniteLossError)
    assert tr.state.num_updates == 0 and tr.state.skipped_updates == n
    after = tr.raw_model.state_dict()
    assert all(torch.equal(before[k], after[k]) or before[k].isnan().any() for k in before)  # no step taken


def test_finetune_from_grows_vocab_on_first_launch_only(tmp_path):
    """learned1..3 are appended after the pretrained vocabulary; the old rows are kept, the new ones are
    N(0, d^-0.5); the checkpoint carries the symbols; a relaunch resumes from checkpoint_last.pt instead."""
    data = make_pair_data(tmp_path / "pair")
    from biogpt_train.data.dictionary import Dictionary

    base = Dictionary.load(data / "dict.txt")
    torch.manual_seed(0)
    pre = TransformerLM(ModelConfig(vocab_size=len(base), embed_dim=64, layers=2, heads=4, ffn_dim=256,
                                    max_positions=256))
    save_native(tmp_path / "pre.pt", pre, base)
    over = {"task": "bc5cdr", "task.max_source_positions": 40, "task.max_target_positions": 64,
            "task.learned_prompt": 3, "task.tokens_per_sample": 64, "checkpoint.finetune_from": tmp_path / "pre.pt",
            "trainer.max_update": 3}
    tr = make_trainer(tmp_path, data, **over)
    emb = tr.raw_model.decoder.embed_tokens.weight.detach()
    assert emb.shape[0] == len(base) + 3 and tr.dictionary.symbols[-3:] == ["learned1", "learned2", "learned3"]
    torch.testing.assert_close(emb[: len(base)], pre.decoder.embed_tokens.weight)
    assert emb[len(base):].std().item() == pytest.approx(64**-0.5, rel=0.5)
    tr.train()
    loaded = read_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt")
    assert loaded.dictionary_symbols == tr.dictionary.symbols and loaded.model_config.vocab_size == len(base) + 3
    # relaunch with a higher max_update: resumes (3 updates done), does not reload pre.pt
    tr2 = make_trainer(tmp_path, data, **{**over, "trainer.max_update": 5})
    assert tr2.state.num_updates == 3
    torch.testing.assert_close(tr2.raw_model.decoder.embed_tokens.weight,
                               loaded.state_dict["decoder.embed_tokens.weight"])
    tr2.train()
    assert tr2.state.num_updates == 5


def test_checkpoint_names_pruning_and_average(tmp_path, lm_data):
    """fairseq names and keep-last-N; averaging = mean of the last N epoch checkpoints (ints: floor division)."""
    tr = make_trainer(tmp_path, lm_data, **{"trainer.max_update": 0, "trainer.max_epoch": 4,
                                            "checkpoint.keep_last_epochs": 3, "checkpoint.save_interval_updates": 10,
                                            "checkpoint.keep_interval_updates": 2})
    tr.train()
    save_dir = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in save_dir.glob("*.pt"))
    assert [n for n in names if ckpt.EPOCH_RE.fullmatch(n)] == ["checkpoint2.pt", "checkpoint3.pt", "checkpoint4.pt"]
    assert len([n for n in names if ckpt.UPDATE_RE.fullmatch(n)]) == 2
    assert {"checkpoint_last.pt", "checkpoint_best.pt"} <= set(names)
    last = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 4 and last["train_state"]["iterator"]["epoch"] == 5
    paths = ckpt.last_n_epoch_checkpoints(save_dir, 2)
    assert [p.name for p in paths] == ["checkpoint4.pt", "checkpoint3.pt"]
    avg = ckpt.average_checkpoints(paths)
    a, b = (torch.load(p, weights_only=True)["model"] for p in paths)
    for k in a:
        mean = (a[k] + b[k]) / 2 if a[k].is_floating_point() else (a[k] + b[k]) // 2
        torch.testing.assert_close(avg["model"][k], mean)
    assert "train_state" not in avg and avg["dictionary"] == last["dictionary"]
    with pytest.raises(FileNotFoundError, match="need at least 5"):
        ckpt.last_n_epoch_checkpoints(save_dir, 5)


def test_activation_checkpointing_gives_the_same_update(tmp_path, lm_data):
    """Same update, and the blocks really are recomputed in backward (their forward runs twice per micro-batch)."""
    outs = []
    for ac in ("false", "true"):
        tr = make_trainer(tmp_path / ac, lm_data, **{"trainer.activation_checkpointing": ac, "model.dropout": 0.1,
                                                      "trainer.update_freq": 2})
        calls = []
        tr.raw_model.decoder.layers[0].fc1.register_forward_hook(lambda *a: calls.append(1))
        out = tr.train_step(next(_groups(tr, 2)), epoch=1)
        assert len(calls) == (4 if ac == "true" else 2)  # 2 micro-batches, x2 with recomputation
        assert ("CheckpointWrapper" in repr(tr.raw_model)) == (ac == "true")
        assert not any("_checkpoint_wrapped_module" in k for k in tr.raw_model.state_dict())
        outs.append((out["loss_sum"], out["gnorm"], tr.raw_model.decoder.layers[0].fc1.weight.detach().clone()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-6) and outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
    torch.testing.assert_close(outs[0][2], outs[1][2])


def test_several_shards_rotate_per_epoch(tmp_path):
    """fairseq's "a:b" data paths: epoch 1 trains on shard a, epoch 2 on shard b, epoch 3 on a again."""
    a = make_lm_data(tmp_path / "a", n_train=40, seed=1)
    b = make_lm_data(tmp_path / "b", n_train=70, seed=2)
    tr = make_trainer(tmp_path, f"{a}:{b}", **{"trainer.max_update": 0, "trainer.max_epoch": 3,
                                              "trainer.disable_validation": "true"})
    tr.train()
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset

    tokens = [int(MMapIndexedDataset(d / "train").sizes.sum()) for d in (a, b, a)]
    epochs = read_metrics(tmp_path / "run", "train_epoch")
    assert [r["ntokens"] for r in sorted(epochs.values(), key=lambda r: r["epoch"])] == tokens


def test_bad_lr_schedule_fails_at_start(tmp_path, lm_data):
    """The schedule is built once, when the trainer starts: a bad setting fails before any update."""
    with pytest.raises(ValueError, match="warmup"):
        make_trainer(tmp_path, lm_data, **{"lr_scheduler.warmup_updates": 0})


def test_resume_on_another_world_size_is_checked(tmp_path, lm_data):
    from biogpt_train.train.state import ResumeError

    tr = make_trainer(tmp_path, lm_data)
    state = tr.train_state
    mid = {"iterator": {"version": 2, "epoch": 3, "iterations_in_epoch": 6, "shuffle": True}, "world_size": 2}
    with pytest.raises(ResumeError, match="saved on 2 rank.*reshard_on_resume=true"):
        state._iterator_state(mid)
    boundary = {"iterator": {**mid["iterator"], "iterations_in_epoch": 0}, "world_size": 2}
    assert state._iterator_state(boundary)["iterations_in_epoch"] == 0  # next epoch is sharded afresh
    tr.cfg.checkpoint.reshard_on_resume = True
    assert state._iterator_state(mid)["iterations_in_epoch"] == 12  # 6 per rank on 2 ranks = 12 on 1
    same = {"iterator": mid["iterator"], "world_size": 1}
    assert state._iterator_state(same) == mid["iterator"]


def test_distributed_init_refuses_different_arguments():
    from biogpt_train import distributed

    distributed.destroy()
    distributed.init("cpu")
    assert distributed.init("cpu").device.type == "cpu"
    with pytest.raises(RuntimeError, match="already called with device='cpu'"):
        distributed.init("cuda")
    distributed.destroy()


@pytest.mark.parametrize("flag", ["true", "false"])
def test_validation_at_mid_epoch_saves(tmp_path, lm_data, flag):
    """fairseq's validate_and_save validates whenever it saves (checkpoint_best.pt can come from any save);
    trainer.validate_mid_epoch_saves=false only validates at epoch ends / validate_interval_updates / the end."""
    tr = make_trainer(tmp_path, lm_data, **{"trainer.max_update": 5, "checkpoint.save_interval_updates": 2,
                                            "trainer.validate_mid_epoch_saves": flag})
    tr.train()
    assert len(tr.train_itr.frozen_batches) > 5  # all 5 updates are mid-epoch
    valid = read_metrics(tmp_path / "run", "valid")
    assert sorted(valid) == ([2, 4, 5] if flag == "true" else [5])


@pytest.mark.parametrize("init", ["fairseq", "normal"])
def test_finetune_from_new_rows_are_fairseqs_draw_for_the_seed(tmp_path, init):
    """fairseq-train seeds, then builds Embedding(len(dict), d, pad): nn.Embedding's own N(0, 1) draw, then
    normal_(0, d^-0.5) over it; BioGPT's load_state_dict keeps rows [N:] of that for learned1..k. A literal port
    of that sequence gives the trainer's new rows (checkpoint.new_rows_init=fairseq); `normal` does not."""
    data = make_pair_data(tmp_path / "pair")
    from biogpt_train.data.dictionary import Dictionary

    base = Dictionary.load(data / "dict.txt")
    pre = TransformerLM(ModelConfig(vocab_size=len(base), embed_dim=64, layers=2, heads=4, ffn_dim=256,
                                    max_positions=256))
    save_native(tmp_path / "pre.pt", pre, base)
    seed = 7
    tr = make_trainer(tmp_path, data, **{
        "task": "bc5cdr", "task.max_source_positions": 40, "task.max_target_positions": 64, "task.learned_prompt": 3,
        "checkpoint.finetune_from": tmp_path / "pre.pt", "seed": seed, "checkpoint.new_rows_init": init})
    torch.manual_seed(seed)  # fairseq_cli/train.py main(): utils.set_torch_seed(cfg.common.seed)
    fresh = torch.nn.Embedding(len(base) + 3, 64, padding_idx=1)  # transformer_lm Embedding(len(dict), d, pad)
    torch.nn.init.normal_(fresh.weight, mean=0, std=64**-0.5)
    torch.nn.init.constant_(fresh.weight[1], 0)
    new_rows = tr.raw_model.decoder.embed_tokens.weight.detach()[len(base):]
    assert torch.equal(new_rows, fresh.weight.detach()[len(base):]) == (init == "fairseq")


def test_training_items_longer_than_max_tokens_are_dropped(tmp_path, lm_data):
    """fairseq's train iterator filters by min(task, model, max_tokens) positions: blocks of up to 32 tokens with
    data.max_tokens=24: the longer ones are dropped with a warning (valid, batched with max_tokens_valid, keeps
    them); before, batching raised."""
    tr = make_trainer(tmp_path, lm_data, **{"data.max_tokens": 24, "data.max_tokens_valid": 128,
                                            "task.sample_break_mode": "complete", "trainer.max_update": 2,
                                            "data.skip_invalid_size_inputs_valid_test": "true"})
    sizes = tr.train_itr.dataset.sizes
    kept = [int(i) for b in tr.train_itr.frozen_batches for i in b]
    assert kept and all(sizes[i] <= 24 for i in kept) and (sizes > 24).sum() == len(sizes) - len(kept)
    tr.train()
    assert tr.state.num_updates == 2


def test_total_norm_is_the_fp64_norm_on_cpu_and_torchs_elsewhere():
    from biogpt_train.train.trainer import total_norm

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=g) * 1e-3 for s in [(1024, 1024), (70,), (5, 4, 3)]]
    exact = math.sqrt(sum(float(x.double().pow(2).sum()) for x in grads))
    got = total_norm(grads)
    # 1M elements: torch's CPU norm kernel is off by ~1e-5 here, the dots by ~1e-7
    assert got.dtype == torch.float32 and got.item() == pytest.approx(exact, rel=1e-6)
    low = [x.bfloat16() for x in grads]  # low precision: torch's get_total_norm computation, in fp32
    want = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(low, 2, dtype=torch.float32)))
    assert torch.equal(total_norm(low), want)
