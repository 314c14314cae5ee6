"""Named model shapes, read from their one home: conf/model/<name>.yaml (also Hydra's `model=<name>` group)."""

from __future__ import annotations

from dataclasses import replace

from biogpt_train.config.schema import REPO_ROOT
from biogpt_train.models.biogpt import ModelConfig

MODEL_CONF = REPO_ROOT / "conf" / "model"
_NOT_SHAPE = ("arch", "family")


def preset_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONF.glob("*.yaml"))


def get_preset(name: str, **overrides) -> ModelConfig:
    """conf/model/<name>.yaml as the family's config dataclass (vocab_size from the file or `overrides`)."""
    from omegaconf import OmegaConf

    path = MODEL_CONF / f"{name}.yaml"
    if not path.exists():
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(preset_names())}")
    values = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k not in _NOT_SHAPE}
    values.setdefault("vocab_size", 42384)  # BioGPT's dictionary; normally replaced by len(dictionary)
    return replace(ModelConfig(**values), **overrides)
