"""ELECTRA/BERT encoders: logits equal transformers' on the same random weights, presets, and the ELECTRA objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from biogpt_train.models.electra import (ElectraDiscriminator, ElectraGenerator, EncoderConfig, EncoderConfigError,
                                         QAModel, build_encoder, config_from_yaml_dict,
                                         generator_config, num_parameters, tie_electra_embeddings)
from biogpt_train.models.electra_pretraining import ElectraPretraining, electra_loss, mask_tokens

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
HF_CLASSES = {
    ("electra", "qa"): "ElectraForQuestionAnswering", ("electra", "rtd"): "ElectraForPreTraining",
    ("electra", "mlm"): "ElectraForMaskedLM", ("electra", "cls"): "ElectraForSequenceClassification",
    ("bert", "qa"): "BertForQuestionAnswering", ("bert", "cls"): "BertForSequenceClassification",
}


def tiny_cfg(style="electra", **kw) -> EncoderConfig:
    emb = 24 if style == "electra" else 32  # ELECTRA: embedding_size != hidden_size -> embeddings_project
    base = dict(vocab_size=97, embedding_size=emb, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=40,
                type_vocab_size=2, dropout=0.0, attention_dropout=0.0, style=style)
    return EncoderConfig(**{**base, **kw})


def hf_model(cfg: EncoderConfig, head: str, num_labels: int = 3, seed: int = 0):
    """A transformers model of the same shape with every tensor random (LayerNorms and biases included)."""
    import transformers

    Config = transformers.ElectraConfig if cfg.style == "electra" else transformers.BertConfig
    extra = {"embedding_size": cfg.embedding_size} if cfg.style == "electra" else {}
    hc = Config(vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads, intermediate_size=cfg.ffn_dim, max_position_embeddings=cfg.max_positions,
                type_vocab_size=cfg.type_vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                num_labels=num_labels if head == "cls" else 2, attn_implementation="eager", **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASSES[(cfg.style, head)])(hc).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "LayerNorm.weight" in name else 0.0))
    return model


def padded_batch(vocab_size, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (3, 11), generator=g)
    am = torch.ones_like(ids)
    am[1, 6:] = 0
    am[2, 9:] = 0
    ids[am == 0] = 0
    tt = torch.zeros_like(ids)
    tt[:, 4:] = 1
    tt[am == 0] = 0
    return ids, am, tt


def hf_outputs(model, head, ids, am, tt):
    out = model(input_ids=ids, attention_mask=am, token_type_ids=tt)
    return [out.start_logits, out.end_logits] if head == "qa" else [out.logits]


@pytest.mark.parametrize("style,head", sorted(HF_CLASSES))
def test_logits_equal_transformers(style, head, single_torch_thread):
    cfg = tiny_cfg(style)
    ref = hf_model(cfg, head)
    ours = build_encoder(cfg, head, num_labels=3).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ids, am, tt = padded_batch(cfg.vocab_size)
    with torch.no_grad():
        want = hf_outputs(ref, head, ids, am, tt)
        got = ours(ids, am, tt)
        got = list(got) if isinstance(got, tuple) else [got]
        # no mask and no token types: the defaults must equal transformers' defaults
        want_plain = ref(input_ids=ids[:1, :6])
        got_plain = ours(ids[:1, :6])
    for w, g in zip(want, got):
        assert w.shape == g.shape
        keep = am.bool() if w.dim() >= 2 and w.shape[:2] == ids.shape else slice(None)
        torch.testing.assert_close(g[keep], w[keep], atol=1e-5, rtol=1e-5)
    first = got_plain[0] if isinstance(got_plain, tuple) else got_plain
    ref_first = want_plain.start_logits if head == "qa" else want_plain.logits
    torch.testing.assert_close(first, ref_first, atol=1e-5, rtol=1e-5)


def test_generator_scores_selected_positions(single_torch_thread):
    cfg = tiny_cfg()
    gen = ElectraGenerator(cfg).eval()
    ids, am, tt = padded_batch(cfg.vocab_size)
    pos = torch.tensor([[0, 3], [5, 1], [2, 8]])
    with torch.no_grad():
        full = gen(ids, am, tt)
        part = gen(ids, am, tt, positions=pos)
    torch.testing.assert_close(part, full.gather(1, pos[..., None].expand(-1, -1, cfg.vocab_size)))
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight


def test_sequence_too_long_and_bad_configs():
    with pytest.raises(ValueError, match="max_positions 40"):
        QAModel(tiny_cfg())(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(EncoderConfigError, match="embedding projection"):
        tiny_cfg("bert", embedding_size=16)
    with pytest.raises(EncoderConfigError, match="divisible"):
        tiny_cfg(heads=5)
    with pytest.raises(EncoderConfigError, match="only for style 'electra'"):
        ElectraDiscriminator(tiny_cfg("bert"))
    with pytest.raises(EncoderConfigError, match="hidden_act"):
        tiny_cfg(hidden_act="swish")


# ---------------------------------------------------------------------------------------------- presets


def load_preset(name, **kw):
    return config_from_yaml_dict(yaml.safe_load((CONF / f"{name}.yaml").read_text()), **kw)


def test_biom_electra_large_qa_parameter_count():
    cfg = load_preset("biom_electra_large")
    with torch.device("meta"):
        model = QAModel(cfg)
    assert num_parameters(model) == 332_428_290
    assert not hasattr(model.electra, "embeddings_project")  # embedding_size == hidden_size
    gen = generator_config(cfg, size=0.25)
    assert (gen.embed_dim, gen.heads, gen.ffn_dim, gen.layers, gen.embedding_size) == (256, 4, 1024, 24, 1024)


def test_presets_parse():
    base = load_preset("biom_electra_base")
    assert (base.layers, base.embed_dim, base.heads, base.ffn_dim) == (12, 768, 12, 3072)
    gen = generator_config(base, size=yaml.safe_load((CONF / "biom_electra_base.yaml").read_text())["generator_size"])
    assert (gen.embed_dim, gen.heads, gen.ffn_dim) == (256, 4, 1024)  # = google/electra-base-generator
    for name in ("electra_small_test", "electra_tiny"):
        with pytest.raises(EncoderConfigError, match="vocab_size"):
            load_preset(name)
        cfg = load_preset(name, vocab_size=100)
        assert cfg.embedding_size != cfg.embed_dim and cfg.vocab_size == 100
    with pytest.raises(EncoderConfigError, match="unknown encoder config keys"):
        config_from_yaml_dict({"family": "electra", "arch": "x", "vocab_size": 5, "hidden_size": 8})
    with pytest.raises(EncoderConfigError, match="family"):
        config_from_yaml_dict({"family": "biogpt", "arch": "x"})


# ---------------------------------------------------------------------------------------------- objective


def test_mask_tokens_follows_electra():
    g = torch.Generator().manual_seed(0)
    B, T = 64, 40
    ids = torch.randint(10, 50, (B, T), generator=g)
    am = torch.ones_like(ids)
    am[::2, 30:] = 0
    ids[:, 0] = 2
    ids[am == 0] = 0
    last = am.sum(1) - 1
    ids[torch.arange(B), last] = 3
    special = (ids == 2) | (ids == 3) | (am == 0)
    m = mask_tokens(ids, special, mask_id=4, mask_prob=0.15, attention_mask=am, generator=g)
    N = int((0.15 + 0.005) * T)
    assert m.positions.shape == (B, N) and m.weights.shape == (B, N)
    k = torch.round(am.sum(1) * 0.15).long()
    assert torch.equal(m.weights.sum(1), k)  # round(n_tokens * mask_prob) per row
    chosen = m.positions[m.weights]
    rows = torch.arange(B)[:, None].expand(B, N)[m.weights]
    assert not special[rows, chosen].any()  # never [CLS]/[SEP]/pad
    for r in range(B):  # distinct positions
        assert len(set(m.positions[r].tolist())) == N
    assert torch.equal(m.labels, ids.gather(1, m.positions))
    changed = m.input_ids != ids
    assert torch.equal(changed.sum(1), (m.input_ids.gather(1, m.positions).eq(4) & m.weights).sum(1))
    frac_masked = (m.input_ids.gather(1, m.positions)[m.weights] == 4).float().mean().item()
    assert 0.75 < frac_masked < 0.95  # 85% [MASK], 15% kept, no random tokens
    assert set(m.input_ids[changed].tolist()) == {4}


def tiny_pretrainer(seed=0):
    torch.manual_seed(seed)
    cfg = tiny_cfg(vocab_size=40, max_positions=32)
    return ElectraPretraining(cfg, mask_id=4, generator_size=0.5, special_ids=(2, 3))


def structured_batch(B=16, T=24, seed=0):
    """Counting sequences ([CLS] s s+1 ... [SEP]): both the MLM and the RTD task are learnable."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(5, 20, (B, 1), generator=g)
    ids = start + torch.arange(T - 2)[None] % 15
    ids = torch.cat([torch.full((B, 1), 2), ids, torch.full((B, 1), 3)], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_embeddings_are_shared_parameters():
    model = tiny_pretrainer()
    gen, disc = model.generator, model.discriminator
    assert gen.electra.embeddings is disc.electra.embeddings
    w = disc.electra.embeddings.word_embeddings.weight
    assert gen.generator_lm_head.weight is w
    assert sum(p is w for p in model.parameters()) == 1
    assert gen.config.embed_dim == 16 and hasattr(gen.electra, "embeddings_project")
    loss, _ = model(structured_batch(), rng=torch.Generator().manual_seed(0))
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    with pytest.raises(EncoderConfigError, match="cannot tie"):
        tie_electra_embeddings(ElectraGenerator(tiny_cfg(embedding_size=16)), ElectraDiscriminator(tiny_cfg()))


def test_electra_loss_decreases(single_torch_thread):
    model = tiny_pretrainer()
    batch = structured_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate():
        model.eval()
        with torch.no_grad():
            logs = [model(batch, rng=torch.Generator().manual_seed(s))[1] for s in range(4)]
        model.train()
        return {k: sum(log[k] for log in logs).item() / 4 for k in ("loss", "mlm_loss", "rtd_loss")}

    before = evaluate()
    for step in range(40):
        loss, logs = model(batch, rng=torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after["mlm_loss"] < 0.9 * before["mlm_loss"], (before, after)
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert set(logs) >= {"loss", "mlm_loss", "rtd_loss", "gen_acc", "disc_acc", "n_masked", "replaced_frac"}
    assert all(v.dim() == 0 for v in logs.values())


def test_electra_loss_labels_and_weights():
    """disc_weight scales only the RTD term; a generator that always reproduces the original gives no replacements."""
    model = tiny_pretrainer()
    batch = structured_batch()
    rng = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    kw = dict(mask_id=4, special_ids=(2, 3))
    l1, logs1 = electra_loss(model.generator, model.discriminator, batch, disc_weight=1.0, rng=rng(), **kw)
    l50, logs50 = electra_loss(model.generator, model.discriminator, batch, disc_weight=50.0, rng=rng(), **kw)
    torch.testing.assert_close(l1, logs1["mlm_loss"] + logs1["rtd_loss"])
    torch.testing.assert_close(l50, logs50["mlm_loss"] + 50 * logs50["rtd_loss"])
    with torch.no_grad():  # a generator whose bias puts all mass on the right answer is impossible per position,
        model.generator.generator_lm_head.bias.fill_(-1e4)  # but one that only emits token 39 replaces all masks
        model.generator.generator_lm_head.bias[39] = 1e4
    _, logs = electra_loss(model.generator, model.discriminator, batch, rng=rng(), **kw)
    assert logs["replaced_frac"].item() == pytest.approx(logs["n_masked"].item() / batch["input_ids"].numel())
