"""CPU dropout with numpy masks (models/dropout.py): torch's arithmetic, the seed's masks whatever the threads."""

import pytest
import torch
import torch.nn.functional as F

from biogpt_train.models import dropout as D


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
    D.set_cpu_masks("numpy")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_noise_is_torch_dropout_arithmetic_for_its_mask(dtype):
    torch.manual_seed(0)
    n = 3 * D.BLOCK + 12_345  # several blocks, a short odd last one
    noise = D.keep_noise(n, 0.1, dtype)
    kept = noise != 0
    assert noise.dtype == dtype and noise.shape == (n,)
    assert torch.equal(noise, kept.to(dtype).div_(0.9))  # exactly `mask.to(dtype).div_(1 - p)`
    assert abs(kept.double().mean().item() - 0.9) < 1e-3  # std of the mean is ~1.6e-4
    for b in range(4):  # every block draws its own numbers (no block repeats another)
        assert 0.88 < kept[b * D.BLOCK:(b + 1) * D.BLOCK].double().mean().item() < 0.92
    assert not torch.equal(kept[:12_345], kept[D.BLOCK:D.BLOCK + 12_345])


@pytest.mark.parametrize("p", [0.1, 1 - 200.75 / 256, 1e-9, 1 - 1e-9])
def test_mask_is_a_32_bit_comparison_decided_by_the_top_byte_first(p):
    """keep iff (byte << 24 | low 24 bits) < threshold, the low bits drawn after the block's bytes only where the
    byte ties the threshold's top byte: the law of 32 random bits per element, from far fewer random numbers."""
    import numpy as np

    threshold, scale_bits = D._constants(p, torch.float32)
    n = D.BLOCK - 5  # a length that is not a whole number of 64-bit draws
    noise = np.empty(n, dtype=np.int32)
    D._fill(noise, 1234, threshold, scale_bits, 0)
    stream = np.random.SFC64(np.random.SeedSequence((1234, 0)))
    top = stream.random_raw(-(-n // 8)).view(np.uint8)[:n].astype(np.uint64)
    ties = np.flatnonzero(top == int(threshold) >> 24)
    number = top << 24  # low bits 0 where the top byte decides alone (they cannot change the outcome there)
    number[ties] |= stream.random_raw(ties.size) & 0xFFFFFF
    assert np.array_equal(noise != 0, number < int(threshold))
    assert set(np.unique(noise).tolist()) <= {0, int(scale_bits)}
    if p == 1 - 200.75 / 256:  # 1 in 256 elements tie; 3 in 4 of those are kept
        assert 2_000 < ties.size < 6_000 and 0.7 < (noise[ties] != 0).mean() < 0.8


def test_output_and_gradient_are_x_times_noise():
    torch.manual_seed(1)
    x = torch.randn(4, 8, 33, 17, requires_grad=True)
    state = torch.get_rng_state()
    y = D.dropout(x, 0.25, True)
    torch.set_rng_state(state)
    noise = D.keep_noise(x.numel(), 0.25, x.dtype).view(x.shape)
    assert torch.equal(y, x.detach() * noise)
    y.sum().backward()
    assert torch.equal(x.grad, noise)


def test_masks_follow_torch_rng_not_threads(restore_threads):
    x = torch.ones(2 * D.BLOCK + 7)
    outs = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        torch.manual_seed(5)
        outs.append(D.dropout(x, 0.1, True))
        outs.append(D.dropout(x, 0.1, True))  # the second call draws another key
    assert all(torch.equal(outs[0], o) for o in outs[0::2]) and all(torch.equal(outs[1], o) for o in outs[1::2])
    assert not torch.equal(outs[0], outs[1])
    torch.manual_seed(6)
    assert not torch.equal(D.dropout(x, 0.1, True), outs[0])


def test_identity_cases_and_torch_switch(restore_threads):
    x = torch.randn(3, 5)
    assert D.dropout(x, 0.1, False) is x and D.dropout(x, 0.0, True) is x
    assert torch.equal(D.dropout(x, 1.0, True), torch.zeros_like(x))
    D.set_cpu_masks("torch")
    torch.manual_seed(2)
    ours = D.dropout(x, 0.3, True)
    torch.manual_seed(2)
    assert torch.equal(ours, F.dropout(x, 0.3, True))
    with pytest.raises(ValueError, match="'numpy' or 'torch'"):
        D.set_cpu_masks("philox")


def test_activation_checkpoint_recomputes_the_same_masks():
    from torch.utils.checkpoint import checkpoint

    lin = torch.nn.Linear(16, 16)
    x = torch.randn(64, 16)

    def block(h):
        return D.dropout(torch.tanh(lin(h)), 0.5, True).sum(-1)

    torch.manual_seed(3)
    block(x).sum().backward()
    plain = lin.weight.grad.clone()
    lin.weight.grad = None
    torch.manual_seed(3)
    checkpoint(block, x, use_reentrant=False).sum().backward()
    assert torch.equal(lin.weight.grad, plain)


def test_trainer_sets_the_process_wide_choice(restore_threads, tmp_path):
    """trainer.cpu_dropout_masks reaches models/dropout.py (the Trainer sets it like TF32)."""
    from biogpt_train import distributed
    from biogpt_train.config import compose
    from biogpt_train.train.trainer import Trainer
    from test_trainer_helpers import make_lm_data, tiny_overrides

    data = make_lm_data(tmp_path / "data")
    over = tiny_overrides(data, tmp_path / "runs", **{"trainer.cpu_dropout_masks": "torch"})
    Trainer(compose(over), tmp_path / "run", distributed.init("cpu"))
    assert D._state["masks"] == "torch"


def test_training_attention_keeps_sdpa_dropout_off_cpu(monkeypatch):
    """GPUs keep SDPA's in-kernel dropout (flash / memory-efficient); CPU takes the plain path with these masks."""
    from biogpt_train.models import biogpt

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(kw) or sdpa(*a, **kw))
    q = torch.empty(2, 4, 8, 16, device="meta")  # any non-CPU device takes the GPU branch
    assert biogpt.dropout_attention(q, q, q, None, True, 0.1).shape == q.shape
    assert calls == [{"attn_mask": None, "is_causal": True, "dropout_p": 0.1}]
    x = torch.randn(2, 4, 8, 16)
    torch.manual_seed(4)
    out = biogpt.dropout_attention(x, x, x, None, True, 0.1)
    assert len(calls) == 1 and out.shape == x.shape
    torch.manual_seed(4)
    assert torch.equal(out, biogpt.dropout_attention(x, x, x, None, True, 0.1))  # masks follow the seed
