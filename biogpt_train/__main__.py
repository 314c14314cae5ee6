"""`python -m biogpt_train [+experiment=NAME] [overrides]` — the Hydra entry point.

A thin shim: compose the config, then hand it to `pipeline.run(cfg, run_dir)`. Under torchrun every rank runs this
and composes on its own; the run directory is deterministic (conf/hydra/default.yaml), and ranks other than 0 do not
write Hydra's `.hydra/` files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from biogpt_train.config import CONF_DIR, register_configs


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig):
    from biogpt_train import pipeline  # imported here so `--help`/`--cfg job` stay fast
    from biogpt_train.config import check_known_keys
    from biogpt_train.pipeline.preflight import PreflightError

    try:
        check_known_keys(cfg)
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        return pipeline.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except PreflightError as e:  # bad input found before any stage ran: one line, no traceback
        sys.exit(f"error: {e}")


def cli() -> None:
    register_configs()
    # Only rank 0 writes .hydra/{config,hydra,overrides}.yaml into the shared run directory.
    if _global_rank() > 0 and not any(a.startswith("hydra.output_subdir") for a in sys.argv[1:]):
        sys.argv.append("hydra.output_subdir=null")
    main()


if __name__ == "__main__":
    cli()
