"""Llama against transformers.LlamaForCausalLM on identical random weights, KV cache, generation, presets."""

from __future__ import annotations

import pytest
import torch
import yaml

from biogpt_train.config import CONF_DIR
from biogpt_train.models.llama import Llama, LlamaConfig, config_from_yaml_dict

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend

BOS, EOS, PAD = 1, 2, 0
CONFIGS = {
    "mha-2L-d32-h4": LlamaConfig(vocab_size=101, embed_dim=32, layers=2, heads=4, kv_heads=4, ffn_dim=64, max_positions=64),
    "gqa-3L-d48-h6-kv2": LlamaConfig(vocab_size=64, embed_dim=48, layers=3, heads=6, kv_heads=2, ffn_dim=80,
                                     max_positions=40, norm_eps=1e-6, rope_theta=500.0),
    "mqa-1L-d32-h4-kv1": LlamaConfig(vocab_size=50, embed_dim=32, layers=1, heads=4, kv_heads=1, ffn_dim=88,
                                     max_positions=48),
}


def hf_config(cfg: LlamaConfig):
    return transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.ffn_dim,
        max_position_embeddings=cfg.max_positions, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )


def make_pair(cfg: LlamaConfig, seed=0):
    torch.manual_seed(seed)
    ours = Llama(cfg).eval()
    with torch.no_grad():  # RMSNorm weights are 1 at init; randomise so they are exercised
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
            else:
                p.mul_(10.0)  # std 0.2 instead of 0.02, so the logits are far from uniform
    hf = transformers.LlamaForCausalLM(hf_config(cfg)).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)  # same names: no key mapping
    return ours, hf


def padded_batch(cfg, lengths, side, seed=1):
    """tokens [B, T] and mask [B, T]: rows of the given lengths starting with <s>, padded with PAD on `side`."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    tokens = torch.full((len(lengths), T), PAD)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        row = torch.randint(3, cfg.vocab_size, (n,), generator=g)
        row[0] = BOS
        where = slice(0, n) if side == "right" else slice(T - n, T)
        tokens[i, where], mask[i, where] = row, 1
    return tokens, mask


def hf_position_ids(mask):
    """What transformers' generate computes for a left-padded batch."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_all_positions(name):
    cfg = CONFIGS[name]
    ours, hf = make_pair(cfg)
    tokens, _ = padded_batch(cfg, [19, 19, 19], "right")
    with torch.no_grad():
        a, b = ours(tokens), hf(tokens).logits
    assert a.shape == (3, 19, cfg.vocab_size) and a.dtype == torch.float32
    assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_right_padding_matches_transformers_and_unpadded(name):
    cfg = CONFIGS[name]
    ours, hf = make_pair(cfg, seed=2)
    tokens, mask = padded_batch(cfg, [17, 11, 5, 17], "right")
    with torch.no_grad():
        a = ours(tokens, attention_mask=mask)
        b = hf(tokens, attention_mask=mask).logits  # no position_ids: 0..T-1, as ours
        assert torch.isfinite(a).all()
        assert (a - b)[mask.bool()].abs().max().item() <= 1e-5
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = ours(tokens[i : i + 1, :n])
            assert (a[i, :n] - alone[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_padding_matches_transformers_generate_positions(name):
    cfg = CONFIGS[name]
    ours, hf = make_pair(cfg, seed=3)
    tokens, mask = padded_batch(cfg, [13, 4, 9, 1], "left")
    with torch.no_grad():
        a = ours(tokens, attention_mask=mask)
        b = hf(tokens, attention_mask=mask, position_ids=hf_position_ids(mask)).logits
        assert torch.isfinite(a).all()
        assert (a - b)[mask.bool()].abs().max().item() <= 1e-5
        for i, n in enumerate(mask.sum(1).tolist()):  # and equal to the row alone, unpadded
            alone = ours(tokens[i : i + 1, -n:])
            assert (a[i, -n:] - alone[0]).abs().max().item() <= 1e-5


def test_tied_embeddings_match_transformers():
    cfg = LlamaConfig(vocab_size=70, embed_dim=32, layers=2, heads=4, kv_heads=2, ffn_dim=64, max_positions=32,
                      tie_embeddings=True)
    ours, hf = make_pair(cfg)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())
    tokens, _ = padded_batch(cfg, [11, 11], "right")
    with torch.no_grad():
        assert (ours(tokens) - hf(tokens).logits).abs().max().item() <= 1e-5


def test_parameter_names_are_transformers_names():
    cfg = CONFIGS["gqa-3L-d48-h6-kv2"]
    ours = Llama(cfg)
    hf = transformers.LlamaForCausalLM(hf_config(cfg))
    assert list(ours.state_dict()) == list(hf.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in hf.state_dict().items()}
    assert not list(ours.buffers())


# --- KV cache ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cache_step_by_step_equals_full_forward(name):
    cfg = CONFIGS[name]
    ours, _ = make_pair(cfg, seed=4)
    tokens, _ = padded_batch(cfg, [15, 15], "right")
    with torch.no_grad():
        full = ours(tokens)
        cache = ours.make_cache(2, 20)
        parts = [ours(tokens[:, :6], cache=cache)]  # a prefill block, then one token at a time
        parts += [ours(tokens[:, t : t + 1], cache=cache) for t in range(6, 11)]
        parts.append(ours(tokens[:, 11:], cache=cache))  # a block after cached positions
    assert cache.length == 15 and cache.max_len == 20
    assert cache.k.shape == (cfg.layers, 2, cfg.kv_heads, 20, cfg.embed_dim // cfg.heads)  # kv heads only (GQA)
    assert (torch.cat(parts, 1) - full).abs().max().item() <= 1e-5


def test_cache_with_left_padding_mask_equals_full_forward():
    cfg = CONFIGS["gqa-3L-d48-h6-kv2"]
    ours, _ = make_pair(cfg, seed=5)
    tokens, mask = padded_batch(cfg, [12, 5, 8], "left")
    new = torch.randint(3, cfg.vocab_size, (3, 4), generator=torch.Generator().manual_seed(0))
    all_tokens = torch.cat([tokens, new], 1)
    all_mask = torch.cat([mask, torch.ones(3, 4, dtype=mask.dtype)], 1)
    with torch.no_grad():
        full = ours(all_tokens, attention_mask=all_mask)
        cache = ours.make_cache(3, 16)
        parts = [ours(tokens, attention_mask=mask, cache=cache)]
        for t in range(4):  # HF convention: the mask covers cached + new positions
            parts.append(ours(new[:, t : t + 1], attention_mask=all_mask[:, : 12 + t + 1], cache=cache))
    keep = all_mask.bool()
    assert (torch.cat(parts, 1) - full)[keep].abs().max().item() <= 1e-5


def test_cache_reorder_follows_batch_rows():
    cfg = CONFIGS["mha-2L-d32-h4"]
    ours, _ = make_pair(cfg, seed=6)
    tokens, _ = padded_batch(cfg, [7, 7, 7], "right", seed=3)
    nxt = torch.tensor([[5], [6], [7]])
    with torch.no_grad():
        cache = ours.make_cache(3, 10)
        ours(tokens, cache=cache)
        cache.reorder(torch.tensor([2, 0, 0, 1]))  # beam-style: change the batch size
        a = ours(nxt[[2, 0, 0, 1]], cache=cache)
        b = ours(torch.cat([tokens, nxt], 1)[[2, 0, 0, 1]])[:, -1:]
    assert (a - b).abs().max().item() <= 1e-5


# --- generation ----------------------------------------------------------------------------------------------------
def greedy(model, prompt: list[int], steps: int, use_cache: bool) -> list[int]:
    """A plain greedy loop (no stopping): the reference for cache vs no cache vs transformers."""
    seq = torch.tensor([prompt])
    cache = model.make_cache(1, len(prompt) + steps) if use_cache else None
    x = seq
    with torch.no_grad():
        for _ in range(steps):
            logits = model(x, cache=cache)[:, -1]
            nxt = logits.argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            x = nxt if use_cache else seq
    return seq[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_with_and_without_cache_equals_transformers_generate(name):
    cfg = CONFIGS[name]
    ours, hf = make_pair(cfg, seed=7)
    hf.generation_config.eos_token_id = None  # run the full number of steps, like the plain loop
    prompts = [[BOS, 5, 9, 14, 3], [BOS, 20], [BOS, 7, 7, 8, 30, 31, 4, 12]]
    steps = 12
    outs = []
    for p in prompts:
        a, b = greedy(ours, p, steps, use_cache=True), greedy(ours, p, steps, use_cache=False)
        assert a == b
        outs.append(a)
    assert len({tuple(o) for o in outs}) > 1  # not a degenerate model
    # transformers, batched with left padding (so this also checks the mask + position handling)
    T = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        hf_out = hf.generate(ids, attention_mask=mask, max_new_tokens=steps, do_sample=False, pad_token_id=PAD)
    assert hf_out[:, T:].tolist() == outs


def test_generator_decodes_llama_from_bos_as_transformers_generate():
    """`generation.generate(..., bos=<s>)`: a Llama model reads `<s> prefix` and decodes greedily exactly as
    transformers' `generate` (argmax; batched, left-padded on the HF side); beam search runs on its cache too."""
    from biogpt_train.generation.generator import generate

    cfg = CONFIGS["gqa-3L-d48-h6-kv2"]
    ours, hf = make_pair(cfg, seed=8)
    hf.generation_config.eos_token_id = EOS
    prefixes = [[5, 9, 14], [20], [7, 7, 8, 30]]
    steps = 8
    got = generate(ours, prefixes, beam=1, max_len_b=max(map(len, prefixes)) + 1 + steps, bos=BOS, eos=EOS, pad=PAD,
                   greedy_tiebreak="argmax")
    for prefix, hyp in zip(prefixes, got):
        ids = torch.tensor([[BOS] + prefix])
        with torch.no_grad():
            want = hf.generate(ids, max_new_tokens=steps, do_sample=False, pad_token_id=PAD,
                               suppress_tokens=[PAD])[0, 1:].tolist()  # as fairseq, we never emit the pad id
        want = want[: want.index(EOS)] if EOS in want else want
        n = min(len(hyp), len(want))
        assert hyp[:n] == want[:n] and len(hyp) > len(prefix)
    beams = generate(ours, prefixes, beam=3, max_len_b=12, bos=BOS, eos=EOS, pad=PAD)  # exercises cache.reorder
    assert [b[: len(p)] for b, p in zip(beams, prefixes)] == prefixes


# --- model API -------------------------------------------------------------------------------------------------
def test_forward_has_no_host_sync():
    """Everything on the meta device: any .item()/.any()/bool() on data would raise."""
    cfg = CONFIGS["gqa-3L-d48-h6-kv2"]
    with torch.device("meta"):
        model = Llama(cfg)
        tokens = torch.zeros(2, 9, dtype=torch.long)
        mask = torch.ones(2, 9, dtype=torch.long)
    assert model(tokens).shape == (2, 9, cfg.vocab_size)
    assert model(tokens, attention_mask=mask).shape == (2, 9, cfg.vocab_size)
    cache = model.make_cache(2, 12)
    model(tokens, attention_mask=mask, cache=cache)
    out = model(tokens[:, :2], cache=cache)
    assert out.is_meta and cache.length == 11


def test_forward_errors():
    cfg = CONFIGS["mha-2L-d32-h4"]
    model = Llama(cfg).eval()
    with pytest.raises(ValueError, match="exceed max_positions=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\), expected \(1, 5\)"):
        model(torch.zeros(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4))
    cache = model.make_cache(1, 4)
    with pytest.raises(ValueError, match="KV cache holds 4 positions"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="not a multiple of kv_heads"):
        LlamaConfig(vocab_size=10, embed_dim=32, layers=1, heads=4, kv_heads=3, ffn_dim=8, max_positions=8)


@pytest.mark.parametrize("tied", [False, True])
def test_resize_vocab_keeps_old_rows(tied):
    cfg = LlamaConfig(vocab_size=40, embed_dim=32, layers=1, heads=4, kv_heads=2, ffn_dim=64, max_positions=16,
                      tie_embeddings=tied)
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    tokens = torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        before = model(tokens)
        model.resize_vocab(45)
        after = model(tokens)
    assert model.cfg.vocab_size == 45 and after.shape[-1] == 45
    assert (after[..., :40] - before).abs().max().item() <= 1e-6
    assert model.model.embed_tokens.weight.shape == model.lm_head.weight.shape == (45, 32)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    assert not model.lm_head.weight.is_meta
    with pytest.raises(ValueError, match="only grows"):
        model.resize_vocab(10)


def test_dropout_only_in_training():
    cfg = LlamaConfig(vocab_size=30, embed_dim=32, layers=1, heads=4, kv_heads=4, ffn_dim=64, max_positions=16,
                      dropout=0.5, attention_dropout=0.5)
    model = Llama(cfg)
    tokens = torch.randint(0, 30, (2, 8))
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(tokens), model(tokens))
        model.eval()
        assert torch.equal(model(tokens), model(tokens))


# --- presets -------------------------------------------------------------------------------------------------------
LLAMA_PRESETS = ["biomedgpt_lm_7b", "llama2_7b", "llama_small", "llama_tiny"]


def read_preset(name):
    return yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", LLAMA_PRESETS)
def test_preset_yaml_keys_are_config_fields(name):
    d = read_preset(name)
    assert d["family"] == "llama" and d["arch"] == name
    fields = set(LlamaConfig.__dataclass_fields__) - {"vocab_size"}
    has_vocab = name.endswith("_7b")
    assert set(d) == fields | {"family", "arch"} | ({"vocab_size"} if has_vocab else set())


@pytest.mark.parametrize("name,eps", [("biomedgpt_lm_7b", 1e-6), ("llama2_7b", 1e-5)])
def test_7b_parameter_count_on_meta(name, eps):
    cfg = config_from_yaml_dict(read_preset(name))
    assert (cfg.vocab_size, cfg.embed_dim, cfg.layers, cfg.heads, cfg.kv_heads, cfg.ffn_dim, cfg.max_positions) == (
        32000, 4096, 32, 32, 32, 11008, 4096)
    assert cfg.norm_eps == eps and cfg.rope_theta == 10000.0 and not cfg.tie_embeddings
    with torch.device("meta"):
        model = Llama(cfg)
    assert model.num_parameters() == 6_738_415_616
    assert model.max_positions() == 4096


def test_small_presets_build_with_tokenizer_vocab():
    for name in ("llama_small", "llama_tiny"):
        cfg = config_from_yaml_dict(read_preset(name), vocab_size=2000)
        assert cfg.kv_heads < cfg.heads  # both demo sizes exercise GQA
        Llama(cfg)(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no vocab_size"):
        config_from_yaml_dict(read_preset("llama_tiny"))
    with pytest.raises(ValueError, match=r"unknown Llama model keys \[.dim.\]"):
        config_from_yaml_dict({**read_preset("llama_tiny"), "dim": 3}, vocab_size=10)
    # vocab_size= overrides the file's
    assert config_from_yaml_dict(read_preset("llama2_7b"), vocab_size=32001).vocab_size == 32001


def _materialised_loss(model, tokens, target, ignore):
    logits = model(tokens)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=ignore,
                                             reduction="sum")


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_target_loss_equals_materialised_logits_loss(tied, precision):
    """forward(target=) (lm_head fused with the CE in row chunks, what the trainer calls) = cross_entropy of the
    materialised logits: the loss and every parameter's gradient, right-padded targets ignored."""
    cfg = LlamaConfig(vocab_size=90, embed_dim=32, layers=2, heads=4, kv_heads=2, ffn_dim=64, max_positions=32,
                      tie_embeddings=tied)
    model, _ = make_pair(cfg)
    model.train()
    tokens, mask = padded_batch(cfg, [13, 9, 13], "right")
    target = torch.roll(tokens, -1, dims=1).masked_fill(mask == 0, PAD)
    target[:, -1] = PAD
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    results = []
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = model(tokens, target=target) if fused else _materialised_loss(model, tokens, target, PAD)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = results
    tol = {"fp32": dict(rtol=1e-4, atol=1e-5), "bf16": dict(rtol=2e-2, atol=2e-2)}[precision]
    torch.testing.assert_close(a, b, **tol)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], **tol, msg=lambda m: f"{name}: {m}")
    with torch.no_grad():  # explicit ignore_index and no pad id at all
        assert model(tokens, target=target, ignore_index=PAD).item() == model(tokens, target=target).item()
        everything = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), target.flatten(),
                                                       reduction="sum")
        model.cfg.pad_id = None
        assert model(tokens, target=target).item() == pytest.approx(everything.item(), rel=1e-5)


def test_target_loss_through_a_lora_wrapped_head():
    """LoRA on lm_head: forward(target=) uses the adapter's forward (the fused path would drop its delta)."""
    pytest.importorskip("peft")
    from biogpt_train.train.lora import apply_lora

    cfg = CONFIGS["mha-2L-d32-h4"]
    model = apply_lora(make_pair(cfg)[0], {"rank": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["lm_head"]})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a non-zero adapter delta
    tokens, mask = padded_batch(cfg, [9, 7], "right")
    target = torch.roll(tokens, -1, dims=1).masked_fill(mask == 0, PAD)
    with torch.no_grad():
        got = model(tokens, target=target)
        assert got.item() == pytest.approx(_materialised_loss(model, tokens, target, PAD).item(), rel=1e-6)
