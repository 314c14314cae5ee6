"""The chunked output-projection + cross-entropy equals the plain one (loss and both gradients)."""

import pytest
import torch
import torch.nn.functional as F

from biogpt_train.models.loss import SOFTMAX_BLOCK_ROWS, _log_softmax_target, linear_cross_entropy

PAD = 1


def _inputs(seed=0, N=37, d=16, V=50):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2, N, d, generator=g).requires_grad_()
    w = (torch.randn(V, d, generator=g) * 0.3).requires_grad_()
    t = torch.randint(0, V, (2, N), generator=g)
    t[:, ::5] = PAD
    return h, w, t


def _grads(loss, h, w):
    h.grad = w.grad = None
    loss.backward(torch.tensor(0.5))  # a non-unit incoming gradient is scaled through
    return h.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("chunk_logits", [50 * 7, 50 * 1000])  # 7 rows per chunk, and one chunk
def test_equals_cross_entropy_of_full_logits_fp32(chunk_logits):
    h, w, t = _inputs()
    ref = F.cross_entropy(F.linear(h, w).view(-1, 50), t.view(-1), ignore_index=PAD, reduction="sum")
    ref_grads = _grads(ref, h, w)
    got = linear_cross_entropy(h, w, t, PAD, chunk_logits=chunk_logits)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(_grads(got, h, w), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_autocast_reference():
    h, w, t = _inputs(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(h, w).float().view(-1, 50), t.view(-1), ignore_index=PAD, reduction="sum")
        got = linear_cross_entropy(h, w, t, PAD, chunk_logits=50 * 8)
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)
    for a, b in zip(_grads(got, h, w), _grads(ref, h, w)):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


def test_no_grad_and_bad_shapes():
    h, w, t = _inputs()
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, t, PAD)
    assert not loss.requires_grad
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(h, w, t[:, 1:], PAD)


def test_bf16_one_chunk_feature_gradient_is_autocast_bitwise():
    """log-softmax, p = exp(log p), bf16 cast: the same operations as autocast + F.cross_entropy's backward, so
    with one chunk and a unit incoming gradient the feature gradient is bit-for-bit the reference's."""
    h, w, t = _inputs(seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(h, w).float().view(-1, 50), t.view(-1), ignore_index=PAD, reduction="sum")
        got = linear_cross_entropy(h, w, t, PAD)
    ref.backward()
    ref_gh, h.grad = h.grad.clone(), None
    got.backward()
    assert torch.equal(h.grad, ref_gh)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)  # only the summation order differs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpu_softmax_row_blocks_equal_one_pass(dtype):
    """CPU logits go through the fp32 log-softmax in row blocks (in place for fp32; p written over the logits): bit
    for bit the one-pass cast -> log_softmax -> gather -> exp -> cast, a partial last block included."""
    g = torch.Generator().manual_seed(3)
    n = 2 * SOFTMAX_BLOCK_ROWS + 5
    logits = (torch.randn(n, 300, generator=g) * 4).to(dtype)
    t = torch.randint(0, 300, (n, 1), generator=g)
    logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    ref_t, ref_p = logp.gather(1, t), logp.exp().to(dtype)
    got_t, got_p = _log_softmax_target(logits.clone(), t, want_p=True)
    assert torch.equal(got_t, ref_t) and got_p.dtype == dtype and torch.equal(got_p, ref_p)
    only_t, no_p = _log_softmax_target(logits.clone(), t, want_p=False)
    assert torch.equal(only_t, ref_t) and no_p is None


def test_unit_incoming_gradient_skips_the_scaling_and_keeps_the_saved_gradients():
    """backward() with d loss = 1 returns the saved gradients unscaled (x * 1.0 == x): equal to twice those of
    d loss = 0.5, and a retained graph gives the same gradients again (nothing saved is modified in place)."""
    h, w, t = _inputs(seed=3)
    loss = linear_cross_entropy(h, w, t, PAD)
    loss.backward(torch.tensor(0.5), retain_graph=True)
    half = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss.backward(retain_graph=True)
    unit = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss.backward()
    for a, b, c in zip(unit, half, (h.grad, w.grad)):
        assert torch.equal(a, 2 * b) and torch.equal(c, a)


@pytest.mark.parametrize("grad_loss", [1.0, 0.5])
def test_tied_embedding_gradient_equals_autograds_sum(grad_loss):
    """model(tokens, target=) on CPU hands the loss's weight gradient to the embedding lookup, which adds only the
    rows of the tokens it saw: the same gradients as the plain lookup + loss, whose [V, d] gradients autograd sums
    (repeated tokens, pads, a non-unit incoming gradient)."""
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=40, embed_dim=16, layers=2, heads=2, ffn_dim=32, max_positions=64,
                                      dropout=0.0, attention_dropout=0.0))
    tokens = torch.randint(2, 12, (3, 20))  # few distinct tokens: every row repeats
    tokens[2, 15:] = PAD
    target = torch.roll(tokens, -1, 1)
    target[:, -1] = PAD

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward(torch.tensor(grad_loss))
        return [p.grad.clone() for p in model.parameters()]

    tied = grads(model(tokens, target=target))
    dec = model.decoder
    plain = grads(linear_cross_entropy(model(tokens, features_only=True), dec.output_projection.weight, target, PAD))
    assert all(torch.equal(a, b) for a, b in zip(tied, plain))
    assert dec.embed_tokens.weight.grad[PAD].abs().sum() > 0  # the pad row's gradient is the loss's alone
    assert torch.equal(tied[0][PAD], plain[0][PAD])
    loss = model(tokens, target=target)  # a retained graph: saved tensors are never changed silently
    loss.backward(torch.tensor(grad_loss), retain_graph=True)
    if grad_loss == 1.0:  # the handed gradient is the saved one: autograd's in-place check refuses a second pass
        with pytest.raises(RuntimeError, match="inplace operation"):
            loss.backward(torch.tensor(grad_loss))
    else:
        model.zero_grad(set_to_none=True)
        loss.backward(torch.tensor(grad_loss))
        assert all(torch.equal(p.grad, a) for p, a in zip(model.parameters(), tied))
    with torch.no_grad():  # no gradient: the plain lookup
        assert torch.equal(model(tokens, target=target), linear_cross_entropy(
            model(tokens, features_only=True), dec.output_projection.weight, target, PAD))


def test_tied_embedding_without_the_loss_gradient_is_the_embedding_gradient():
    from biogpt_train.models.loss import tied_embedding

    w = torch.randn(10, 4, requires_grad=True)
    tokens = torch.tensor([[3, 1, 3, 5]])
    (tied_embedding(tokens, w, 1, {}) * torch.arange(16.0).view(1, 4, 4)).sum().backward()
    ref = w.detach().clone().requires_grad_()
    (F.embedding(tokens, ref, 1) * torch.arange(16.0).view(1, 4, 4)).sum().backward()
    assert torch.equal(w.grad, ref.grad)
