"""The `average` stage: fairseq's average_checkpoints over the last epoch checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from biogpt_train import distributed

logger = logging.getLogger("biogpt_train")


def average(cfg: DictConfig, run_dir: Path) -> dict:
    """fairseq average_checkpoints over the last `checkpoint.average_last_epochs` epoch checkpoints."""
    import torch

    from biogpt_train.checkpoint.training import average_checkpoints, last_n_epoch_checkpoints
    from biogpt_train.utils import atomic_path

    save_dir = run_dir / cfg.checkpoint.save_dir
    out = save_dir / cfg.checkpoint.average_output
    if distributed.info().rank == 0:
        paths = last_n_epoch_checkpoints(save_dir, cfg.checkpoint.average_last_epochs)
        state = average_checkpoints(paths)
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
        logger.info("average: %s = mean of %s", out, ", ".join(p.name for p in paths))
    distributed.barrier()
    return {"averaged_checkpoint": str(out)}
