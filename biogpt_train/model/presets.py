"""Named model shapes. `biogpt` / `biogpt_large` are the released models (reference §0, §1.1)."""

from biogpt_train.model.transformer_lm import ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # fairseq transformer_lm_gpt2_small: 346,763,264 parameters with the 42,384-entry base dict
    "biogpt": ModelConfig(vocab_size=42384, embed_dim=1024, layers=24, heads=16, ffn_dim=4096, max_positions=1024),
    # fairseq transformer_lm_gpt2_big: 1,571,188,800 parameters with the 57,717-entry Large dict
    "biogpt_large": ModelConfig(vocab_size=57717, embed_dim=1600, layers=48, heads=25, ffn_dim=6400,
                                max_positions=2048),
    # for experiments and smoke runs; vocab_size is normally replaced by len(dictionary)
    "small": ModelConfig(vocab_size=42384, embed_dim=512, layers=6, heads=8, ffn_dim=2048, max_positions=1024),
    "tiny": ModelConfig(vocab_size=42384, embed_dim=64, layers=2, heads=4, ffn_dim=256, max_positions=256),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A fresh copy of PRESETS[name] with field overrides (e.g. vocab_size=len(dictionary))."""
    from dataclasses import replace

    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
