"""Named model shapes, read from their one home: conf/model/<name>.yaml (also Hydra's `model=<name>` group)."""

from __future__ import annotations

from biogpt_train.config.schema import REPO_ROOT
from biogpt_train.models import model_config

MODEL_CONF = REPO_ROOT / "conf" / "model"
BIOGPT_VOCAB = 42384  # BioGPT's dictionary: the default vocabulary of a BioGPT preset without one


def preset_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONF.glob("*.yaml"))


def read_preset(name: str) -> dict:
    from omegaconf import OmegaConf

    path = MODEL_CONF / f"{name}.yaml"
    if not path.exists():
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(preset_names())}")
    return OmegaConf.to_container(OmegaConf.load(path))


def get_preset(name: str, **overrides):
    """conf/model/<name>.yaml as its family's config dataclass (`overrides` replace fields, e.g. vocab_size)."""
    values = read_preset(name)
    if (values.get("family") or "biogpt") == "biogpt":
        values.setdefault("vocab_size", BIOGPT_VOCAB)
    return model_config(values, **overrides)
