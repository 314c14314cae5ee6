"""TransformerLM against transformers.BioGptForCausalLM on identical random weights, plus model invariants."""

import math

import pytest
import torch

from biogpt_train.models.presets import get_preset, preset_names
from biogpt_train.models.biogpt import ModelConfig, TransformerLM, make_positions

PAD, EOS = 1, 2
CONFIGS = {
    "2L-d32-h4": ModelConfig(vocab_size=101, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=64),
    "3L-d48-h3": ModelConfig(vocab_size=64, embed_dim=48, layers=3, heads=3, ffn_dim=96, max_positions=40),
    "1L-d16-h1-ffn80": ModelConfig(vocab_size=50, embed_dim=16, layers=1, heads=1, ffn_dim=80, max_positions=48),
}


def hf_config(transformers, cfg: ModelConfig):
    # layer_norm_eps is left at HF's default 1e-12 on purpose: HF's BioGPT ignores it (see test_hf_layer_norm_eps)
    return transformers.BioGptConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn_dim, max_position_embeddings=cfg.max_positions,
        hidden_act="gelu", scale_embedding=True, pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, activation_dropout=0.0, layerdrop=0.0,
    )


def to_hf_keys(sd):
    out = {}
    for k, v in sd.items():
        if k == "decoder.version":
            continue
        out["output_projection.weight" if k == "decoder.output_projection.weight" else "biogpt." + k[8:]] = v
    return out


def make_ours(cfg: ModelConfig, seed=0):
    torch.manual_seed(seed)
    ours = TransformerLM(cfg).eval()
    with torch.no_grad():  # biases and LayerNorm affine params are 0/1 at init; randomise so they are exercised
        for name, p in ours.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return ours


def make_pair(transformers, cfg: ModelConfig, seed=0):
    ours = make_ours(cfg, seed)
    hf = transformers.BioGptForCausalLM(hf_config(transformers, cfg)).eval()
    hf.load_state_dict(to_hf_keys(ours.state_dict()), strict=True)
    return ours, hf


def random_batch(cfg, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    tokens = torch.randint(4, cfg.vocab_size, (len(lengths), T), generator=g)
    tokens[:, 0] = EOS  # BioGPT sequences start with </s>
    for i, n in enumerate(lengths):
        tokens[i, n:] = PAD
    return tokens


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_with_right_padding(transformers, name):
    cfg = CONFIGS[name]
    ours, hf = make_pair(transformers, cfg)
    tokens = random_batch(cfg, [17, 11, 5, 17])
    mask = tokens.ne(PAD)
    with torch.no_grad():
        a = ours(tokens)
        b = hf(tokens, attention_mask=mask.long()).logits
    assert a.shape == (4, 17, cfg.vocab_size) and a.dtype == torch.float32
    # Only non-pad positions are compared: at pad positions fairseq uses position row 1 (HF counts on) and lets
    # a pad query see itself; both are ignored by the loss and by generation.
    assert (a - b)[mask].abs().max().item() <= 1e-5
    assert torch.isfinite(a).all()


def test_logits_match_transformers_without_padding_all_positions(transformers):
    cfg = CONFIGS["2L-d32-h4"]
    ours, hf = make_pair(transformers, cfg, seed=3)
    tokens = random_batch(cfg, [cfg.max_positions, cfg.max_positions])  # the full position table
    with torch.no_grad():
        assert (ours(tokens) - hf(tokens).logits).abs().max().item() <= 1e-5


def test_hf_layer_norm_eps_is_ignored_and_ours_is_1e5(transformers):
    ours, hf = make_pair(transformers, CONFIGS["2L-d32-h4"])
    assert hf.config.layer_norm_eps == 1e-12
    hf_eps = {m.eps for m in hf.modules() if isinstance(m, torch.nn.LayerNorm)}
    our_eps = {m.eps for m in ours.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert hf_eps == our_eps == {1e-5}


def test_make_positions_fairseq_semantics():
    tokens = torch.tensor([[2, 5, 6, 1, 1], [1, 1, 2, 7, 8]])
    assert make_positions(tokens, 1).tolist() == [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4]]


def test_left_padding_gives_unpadded_logits_and_no_nan():
    cfg = CONFIGS["2L-d32-h4"]
    ours = make_ours(cfg)
    seq = random_batch(cfg, [6])[0]
    left = torch.cat([torch.full((3,), PAD), seq])[None]
    all_pad = torch.full((1, 9), PAD)
    with torch.no_grad():
        out = ours(torch.cat([left, all_pad]))
        ref = ours(seq[None])
    assert torch.isfinite(out).all()  # includes queries whose keys are all pads
    assert (out[0, 3:] - ref[0]).abs().max().item() <= 1e-5


def test_parameter_names_are_fairseq_and_projection_is_tied():
    cfg = ModelConfig(vocab_size=20, embed_dim=8, layers=2, heads=2, ffn_dim=16, max_positions=10)
    model = TransformerLM(cfg)
    per_layer = [f"self_attn.{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")]
    per_layer += ["self_attn.out_proj.weight", "self_attn.out_proj.bias"]
    modules = ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
    per_layer += [f"{m}.{w}" for m in modules for w in ("weight", "bias")]
    expected = {"decoder.version", "decoder.embed_tokens.weight", "decoder.embed_positions.weight",
                "decoder.layer_norm.weight", "decoder.layer_norm.bias", "decoder.output_projection.weight"}
    expected |= {f"decoder.layers.{i}.{n}" for i in range(2) for n in per_layer}
    sd = model.state_dict()
    assert set(sd) == expected
    assert sd["decoder.version"].tolist() == [3.0]
    assert sd["decoder.embed_positions.weight"].shape == (12, 8)  # max_positions + 2
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    assert model.decoder.output_projection.bias is None


def test_preset_parameter_counts_on_meta_device():
    expected = {"biogpt": (346_763_264, 42384), "biogpt_large": (1_571_188_800, 57717)}
    for name, (n, vocab) in expected.items():
        c = get_preset(name, vocab_size=vocab)
        with torch.device("meta"):
            model = TransformerLM(c)
        assert model.num_parameters() == n, name
        d, ff, L = c.embed_dim, c.ffn_dim, c.layers
        per_layer = 4 * (d * d + d) + (2 * d * ff + ff + d) + 4 * d  # attention, FFN, 2 LayerNorms
        formula = c.vocab_size * d + (c.max_positions + 2) * d + L * per_layer + 2 * d  # reference §1.4
        assert formula == n
    assert set(preset_names()) >= {"biogpt", "biogpt_large", "small", "tiny"}
    assert get_preset("tiny", vocab_size=99).vocab_size == 99


def test_initialisation_follows_fairseq():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=3000, embed_dim=64, layers=1, heads=4, ffn_dim=128, max_positions=1000)
    model = TransformerLM(cfg)
    dec = model.decoder
    assert dec.embed_tokens.weight[PAD].abs().sum() == 0 and dec.embed_positions.weight[PAD].abs().sum() == 0
    assert abs(dec.embed_tokens.weight.std().item() - 64**-0.5) < 0.01
    attn = dec.layers[0].self_attn
    assert attn.out_proj.bias.abs().sum() == 0
    bound = math.sqrt(6 / (64 + 64)) / math.sqrt(2)  # xavier_uniform with gain 1/sqrt(2)
    assert attn.q_proj.weight.abs().max() <= bound and attn.q_proj.weight.abs().max() > 0.9 * bound


def greedy(model, prefix, steps, use_cache):
    """Greedy decoding, fed one new token per step with the cache or the whole sequence without it."""
    tokens = prefix.clone()
    cache = model.make_cache(prefix.size(0), prefix.size(1) + steps) if use_cache else None
    new = tokens
    for _ in range(steps):
        with torch.no_grad():
            logits = model(new, cache=cache) if use_cache else model(tokens)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], 1)
        new = nxt
    return tokens


def test_greedy_generation_with_and_without_cache_matches_transformers(transformers):
    cfg = ModelConfig(vocab_size=80, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=64)
    ours, hf = make_pair(transformers, cfg, seed=3)
    with torch.no_grad():
        # with tied random embeddings "repeat the last token" wins every step; stronger attention, FFN and
        # positions give a varied greedy path, so the cache is really exercised
        ours.decoder.layer_norm.bias.zero_()
        ours.decoder.embed_positions.weight.mul_(8)
        for layer in ours.decoder.layers:
            layer.fc2.weight.mul_(10)
            layer.self_attn.out_proj.weight.mul_(5)
            layer.self_attn.q_proj.weight.mul_(3)
        hf.load_state_dict(to_hf_keys(ours.state_dict()))
    prefix = torch.cat([random_batch(cfg, [7], seed=7), random_batch(cfg, [7], seed=8)])
    cached = greedy(ours, prefix, 32, use_cache=True)
    full = greedy(ours, prefix, 32, use_cache=False)
    hf.generation_config.eos_token_id = None  # run all 32 steps, as our loop does
    ref = hf.generate(prefix, attention_mask=torch.ones_like(prefix), do_sample=False, num_beams=1,
                      max_new_tokens=32, pad_token_id=PAD)
    assert cached.shape == (2, 39)
    assert cached.tolist() == full.tolist() == ref.tolist()
    assert len(set(cached[0, 7:].tolist())) >= 4  # a varied path, not one repeated token


def test_cache_prefill_and_reorder_match_full_forward():
    cfg = CONFIGS["3L-d48-h3"]
    ours = make_ours(cfg)
    tokens = random_batch(cfg, [12, 12], seed=4)
    with torch.no_grad():
        full = ours(tokens)
        cache = ours.make_cache(2, 12)
        first = ours(tokens[:, :5], cache=cache)  # prefill several tokens at once
        assert cache.length == 5
        cache.reorder(torch.tensor([1, 1, 0]))  # beam-style: duplicate row 1, batch grows to 3
        rest = ours(tokens[[1, 1, 0], 5:], cache=cache)
    assert cache.length == 12
    assert (first - full[:, :5]).abs().max() <= 1e-5
    assert (rest - full[[1, 1, 0], 5:]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="KV cache holds 12"):
        ours(tokens[:, :1], cache=cache)


def test_too_long_input_is_a_clear_error():
    cfg = CONFIGS["1L-d16-h1-ffn80"]
    model = TransformerLM(cfg)
    with pytest.raises(ValueError, match="max_positions=48"):
        model(torch.full((1, 49), 5))


def test_resize_vocab_keeps_rows_and_tying():
    cfg = ModelConfig(vocab_size=40, embed_dim=256, layers=1, heads=4, ffn_dim=32, max_positions=16)
    model = TransformerLM(cfg)
    old = model.decoder.embed_tokens.weight.detach().clone()
    model.resize_vocab(40 + 500)
    w = model.decoder.embed_tokens.weight
    assert w.shape == (540, 256) and model.cfg.vocab_size == 540 and cfg.vocab_size == 40
    assert torch.equal(w[:40], old)
    assert abs(w[40:].std().item() - 256**-0.5) < 0.005
    assert model.decoder.output_projection.weight is w
    assert model(torch.tensor([[2, 539]])).shape == (1, 2, 540)
    with pytest.raises(ValueError, match="only grows"):
        model.resize_vocab(10)


@pytest.mark.parametrize("knob", ["dropout", "attention_dropout", "activation_dropout"])
def test_each_dropout_setting_acts_in_training_only(knob):
    """Each of the config's three dropouts is wired to its own place, and none acts in eval mode (the SDPA call
    must pass dropout_p=0 outside training): with one rate at 0.5, eval logits equal the no-dropout model's,
    train logits differ from them (and between two forwards)."""
    base = ModelConfig(vocab_size=50, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=32, dropout=0.0,
                       attention_dropout=0.0, activation_dropout=0.0)
    plain = make_ours(base)
    noisy = TransformerLM(ModelConfig(**{**base.__dict__, knob: 0.5}))
    noisy.load_state_dict(plain.state_dict())
    tokens = random_batch(base, [12, 9])
    with torch.no_grad():
        ref = plain.train()(tokens)  # no dropout configured: training mode changes nothing
        assert torch.equal(ref, plain.eval()(tokens))
        assert torch.equal(noisy.eval()(tokens), ref)
        noisy.train()
        a, b = noisy(tokens), noisy(tokens)
    assert not torch.equal(a, ref) and not torch.equal(a, b)


def test_pad_position_row_gets_no_gradient_and_resize_keeps_padding_idx():
    """fairseq's Embedding(padding_idx=pad) with the configured pad id: the pad position row (used by every pad
    token) stays zero through training; resize_vocab's new token embedding keeps padding_idx. (The token pad row
    does get gradient, through the tied output projection's pad logit, as in fairseq.)"""
    cfg = ModelConfig(vocab_size=30, embed_dim=16, layers=1, heads=2, ffn_dim=32, max_positions=16, padding_idx=3)
    model = TransformerLM(cfg)
    model.resize_vocab(40)
    assert model.decoder.embed_tokens.padding_idx == 3
    tokens = torch.tensor([[2, 5, 39, 3, 3], [2, 7, 8, 9, 3]])  # pad id 3: position row 3 for the pads
    model(tokens).logsumexp(-1).sum().backward()
    pos = model.decoder.embed_positions
    assert pos.padding_idx == 3 and pos.weight[3].abs().sum() == 0
    assert pos.weight.grad[3].abs().sum() == 0
    assert pos.weight.grad.abs().sum(-1).gt(0).tolist()[4:9] == [True] * 4 + [False]  # rows of positions 1..4



def test_attention_mask_one_rule_for_cached_and_uncached():
    from biogpt_train.models.biogpt import attention_mask

    tokens = torch.tensor([[PAD, EOS, 5, 6], [EOS, 7, PAD, PAD]])
    assert attention_mask(tokens) == (None, True)  # no pad handling: SDPA's causal kernel
    assert attention_mask(tokens[:, :1], start=3) == (None, False)  # one new token sees the whole cache
    mask, causal = attention_mask(tokens[:, :2], start=2)
    assert not causal and mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    mask, _ = attention_mask(tokens, pad=PAD)
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0].tolist() == [[True, False, False, False], [False, True, False, False],
                                   [False, True, True, False], [False, True, True, True]]
    assert mask[1, 0, 3].tolist() == [True, True, False, True]  # a pad query sees itself


def test_right_padding_needs_no_pad_mask_and_features_are_the_final_layer_norm():
    cfg = CONFIGS["2L-d32-h4"]
    ours = make_ours(cfg)
    tokens = random_batch(cfg, [13, 9, 4])
    real = tokens.ne(PAD)
    with torch.no_grad():
        masked = ours(tokens)
        causal = ours(tokens, pad_mask=False)
        feats = ours(tokens, pad_mask=False, features_only=True)
    assert (masked - causal)[real].abs().max().item() <= 1e-5
    assert torch.equal(ours.decoder.output_projection(feats), causal)


@pytest.mark.slow
def test_whole_model_compiles_as_one_graph_and_equals_eager():
    cfg = CONFIGS["2L-d32-h4"]
    ours = make_ours(cfg)
    tokens = random_batch(cfg, [17, 11, 5, 17])
    compiled = torch.compile(ours, fullgraph=True, dynamic=False)  # fullgraph: a graph break is an error
    with torch.no_grad():
        for pad_mask in (True, False):
            eager = ours(tokens, pad_mask=pad_mask)
            torch.testing.assert_close(compiled(tokens, pad_mask=pad_mask), eager, rtol=1e-5, atol=1e-5)


def test_training_attention_equals_sdpa_without_dropout_and_drops_with_it():
    import torch.nn.functional as F

    from biogpt_train.models.biogpt import attention_mask, dropout_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g) for _ in range(3))
    tokens = torch.tensor([[PAD, PAD, 5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 9, PAD, PAD, PAD, PAD]])
    for pad in (None, PAD):
        mask, causal = attention_mask(tokens, pad=pad)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        torch.testing.assert_close(dropout_attention(q, k, v, mask, causal, 0.0), want, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    dropped = dropout_attention(q, k, v, None, True, 0.5)
    assert torch.isfinite(dropped).all() and not torch.allclose(dropped, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_attention_causal_bias_is_bitwise_the_masked_fill(dtype):
    """The causal training attention adds a 0 / -inf bias inside the matmul instead of masked_fill: outputs and all
    three gradients bit for bit those of matmul -> masked_fill -> softmax -> dropout -> matmul (the same masks)."""
    from biogpt_train.models.biogpt import dropout_attention
    from biogpt_train.models.dropout import dropout

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 16, 8, generator=g).to(dtype).requires_grad_() for _ in range(3))
    grad_out = torch.randn(2, 3, 16, 8, generator=g).to(dtype)

    def reference():
        s = torch.matmul(q * 8**-0.5, k.transpose(-1, -2))
        s = s.masked_fill(~torch.ones(16, 16, dtype=torch.bool).tril(), float("-inf"))
        return torch.matmul(dropout(torch.softmax(s, dim=-1), 0.2, True), v)

    results = []
    for fn in (reference, lambda: dropout_attention(q, k, v, None, True, 0.2)):
        torch.manual_seed(0)
        out = fn()
        results.append([out, *torch.autograd.grad(out, (q, k, v), grad_out)])
    for got, want in zip(*results):
        assert torch.equal(got, want)


def _plain_causal_attention(q, k, v, p, noise=None):
    """models/biogpt.py's unblocked CPU training attention, written out: bias, softmax, dropout (or `noise`
    [B, H, T, T] times the probabilities), matmul."""
    from biogpt_train.models.dropout import dropout

    B, H, T, hd = q.shape
    bias = torch.full((T, T), float("-inf")).triu_(1)
    s = torch.baddbmm(bias, (q * hd**-0.5).reshape(B * H, T, hd), k.reshape(B * H, T, hd).transpose(1, 2))
    probs = torch.softmax(s.view(B, H, T, T), dim=-1)
    return torch.matmul(dropout(probs, p, True) if noise is None else probs * noise, v)


def test_fp32_training_attention_in_query_blocks_equals_the_plain_path(monkeypatch):
    """fp32 CPU training attention runs query blocks against the keys up to their end (models/causal_attention.py).
    One block: output and the three gradients bit for bit the unblocked path's, masks included. Three blocks (one
    partial): equal to the unblocked path with the same masks to fp32 rounding, the masks drawn for visible keys
    only (zero noise is never drawn where a key is masked). dropout_attention takes this path, and checkpointed
    recomputation gives the same gradients. With F.dropout's masks (trainer.cpu_dropout_masks=torch) the blocks
    use the plain path's masks."""
    from torch.utils.checkpoint import checkpoint

    from biogpt_train.models import causal_attention
    from biogpt_train.models import dropout as D
    from biogpt_train.models.biogpt import dropout_attention

    g = torch.Generator().manual_seed(5)
    B, H, T = 2, 3, 40
    q, k, v = (torch.randn(B, T, H, 8, generator=g).transpose(1, 2).requires_grad_() for _ in range(3))
    grad_out = torch.randn(B, H, T, 8, generator=g)
    drawn = []
    keep_noise = causal_attention.keep_noise
    monkeypatch.setattr(causal_attention, "keep_noise", lambda *a: drawn.append(keep_noise(*a)) or drawn[-1])

    def outputs(fn):
        torch.manual_seed(0)
        out = fn()
        return [out, *torch.autograd.grad(out, (q, k, v), grad_out)]

    assert causal_attention.applies(q, k, None, True, 0.2)
    for block, exact in ((64, True), (16, False)):
        monkeypatch.setattr(causal_attention, "QUERY_BLOCK", block)
        drawn.clear()
        got = outputs(lambda: dropout_attention(q, k, v, None, True, 0.2))
        noise = torch.zeros(B * H, T, T)  # the drawn noise in place: blocks of rows, visible keys only
        offset = 0
        for a, e in causal_attention._blocks(T):
            n = B * H * (e - a) * e
            noise[:, a:e, :e] = drawn[0][offset:offset + n].view(B * H, e - a, e)
            offset += n
        assert len(drawn) == 1 and offset == drawn[0].numel()
        want = outputs(lambda: _plain_causal_attention(q, k, v, 0.2, noise.view(B, H, T, T)))
        for a, b in zip(got, want):
            assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        if exact:  # one block: the masks dropout() draws
            assert all(torch.equal(a, b) for a, b in zip(got, outputs(lambda: _plain_causal_attention(q, k, v, 0.2))))
        assert 0.75 < (drawn[0] > 0).float().mean().item() < 0.85  # p = 0.2
        rerun = outputs(lambda: checkpoint(dropout_attention, q, k, v, None, True, 0.2, use_reentrant=False))
        assert all(torch.equal(a, b) for a, b in zip(rerun, got))
        D.set_cpu_masks("torch")  # F.dropout's masks for [B, H, T, T], sliced per block: the plain path's masks
        try:
            got = outputs(lambda: dropout_attention(q, k, v, None, True, 0.2))
            want = outputs(lambda: _plain_causal_attention(q, k, v, 0.2))
        finally:
            D.set_cpu_masks("numpy")
        for a, b in zip(got, want):
            assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_blocked_attention_only_serves_fp32_causal_self_attention():
    from biogpt_train.models import causal_attention
    from biogpt_train.models import dropout as D

    x = torch.randn(1, 2, 8, 4)
    assert causal_attention.applies(x, x, None, True, 0.1)
    assert not causal_attention.applies(x, x, None, False, 0.1)  # encoders
    assert not causal_attention.applies(x, x, torch.ones(1, 1, 8, 8, dtype=torch.bool), True, 0.1)
    assert not causal_attention.applies(x.bfloat16(), x.bfloat16(), None, True, 0.1)
    assert not causal_attention.applies(x, torch.randn(1, 2, 9, 4), None, True, 0.1)  # cached keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not causal_attention.applies(x, x, None, True, 0.1)
    assert not causal_attention.applies(x, x, None, True, 0.0) and not causal_attention.applies(x, x, None, True, 1.0)
    D.set_cpu_masks("torch")
    try:
        assert causal_attention.applies(x, x, None, True, 0.1)  # with F.dropout's masks (sliced per block)
    finally:
        D.set_cpu_masks("numpy")
