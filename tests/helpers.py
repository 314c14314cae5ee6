"""Plain helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch

EOS, PAD = 2, 1


def tiny_lm(vocab_size: int, *, max_positions: int, seed: int, eos_boost: float, dtype=torch.float32):
    """A tiny random TransformerLM (eval mode) whose hypotheses end at different lengths.

    A freshly initialised tied-embedding LM just repeats its input token, so the final LayerNorm gets random
    weights, and its bias is pushed towards </s> (raising the </s> logit by ``eos_boost``)."""
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=max_positions,
                      dropout=0.0, attention_dropout=0.0)
    model = TransformerLM(cfg).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.decoder.layer_norm.weight.copy_(torch.randn(cfg.embed_dim, generator=g, dtype=dtype))
        e = model.decoder.embed_tokens.weight[EOS]
        model.decoder.layer_norm.bias += eos_boost * e / e.dot(e)
    return model


def write_dict(path: Path, words: list[str]) -> Path:
    """A fairseq dict.txt holding ``words`` in this order (counts 100, 99, ...: the order is the id order)."""
    path.write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(words)), encoding="utf-8")
    return path
