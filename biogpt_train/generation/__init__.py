"""Decoding: `generate(model, prefixes, beam=, max_len_b=, min_len=, ...)` (fairseq's SequenceGenerator semantics,
KV cache, forced prefix) in generator.py; the one decode path shared by the CLI and the pipeline in decode.py."""

from biogpt_train.generation.generator import generate, generate_nbest

__all__ = ["generate", "generate_nbest"]
