"""Config schema registration and small helpers around Hydra/OmegaConf.

    register_configs()            # once, before @hydra.main or compose(): schema + the `run_id` resolver
    compose(["+experiment=smoke"])  # the composed (unresolved) config, as `python -m biogpt_train` would build it
    resolved_dict(cfg)            # plain dict (enums as str) for checkpoints and results files
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from biogpt_train.config.schema import REPO_ROOT, Config

CONF_DIR = REPO_ROOT / "conf"


def run_id(override_dirname: str = "") -> str:
    """Directory name of a single run: "default" without overrides, else a short hash of them.

    Every rank under torchrun/Slurm gets the same argv, hence the same id (``${now:}`` would differ per rank);
    rerunning the same command finds the same ``checkpoint_last.pt`` and resumes.
    """
    if not override_dirname:
        return "default"
    return "h" + hashlib.sha1(override_dirname.encode("utf-8")).hexdigest()[:10]


def register_configs() -> None:
    """Store the schema as ``base_config`` (conf/config.yaml lists it first) and register resolvers."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)


def compose(overrides: Iterable[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose conf/config.yaml with ``overrides`` outside of ``@hydra.main`` (tests, tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    check_known_keys(cfg)
    return cfg


def resolved_dict(cfg: DictConfig, drop: Optional[Iterable[str]] = ("hydra",)) -> dict:
    """The resolved config as plain Python types (what checkpoints and results files store)."""
    out = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=False)
    for key in drop or ():
        out.pop(key, None)
    return out


def check_known_keys(cfg: DictConfig) -> None:
    """Reject keys the schema does not know, naming the closest valid one.

    Hydra's ``+key=value`` appends even to a typed config, so ``+optim.lrr=1`` or ``+trainer.max_updates=5`` (what
    Hydra itself suggests for a typo) would otherwise be accepted and silently ignored."""
    import dataclasses
    import difflib

    def walk(node: DictConfig, schema: DictConfig, prefix: str) -> None:
        for key in node.keys():
            if not prefix and key == "hydra":
                continue
            if key not in schema.keys():
                known = [str(k) for k in schema.keys()]
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
                hint = f"did you mean {prefix}{close[0]}?" if close else f"the keys of {prefix or 'the root'} are " \
                       f"{', '.join(known)}"
                raise ValueError(f"unknown config key {prefix}{key} (not in biogpt_train/config/schema.py); {hint}")
            sub, child = schema._get_node(key), node._get_node(key)
            if isinstance(sub, DictConfig) and isinstance(child, DictConfig) and \
                    dataclasses.is_dataclass(OmegaConf.get_type(sub)):
                walk(child, sub, f"{prefix}{key}.")

    walk(cfg, OmegaConf.structured(Config), "")


__all__ = ["CONF_DIR", "Config", "register_configs", "compose", "resolved_dict", "run_id", "check_known_keys"]

