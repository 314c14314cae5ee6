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

    from biogpt_train.checkpoint.training import average_checkpoints
    from biogpt_train.utils import atomic_path

    save_dir = run_dir / cfg.checkpoint.save_dir
    out = save_dir / cfg.checkpoint.average_output
    if distributed.info().rank == 0:
        paths = _available_epoch_checkpoints(save_dir, int(cfg.checkpoint.average_last_epochs))
        state = average_checkpoints(paths)
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
        logger.info("average: %s = mean of %s", out, ", ".join(p.name for p in paths))
    distributed.barrier()
    return {"averaged_checkpoint": str(out)}


def _available_epoch_checkpoints(save_dir: Path, n: int) -> list[Path]:
    """The last n epoch checkpoints, or all there are (with a warning) when a reduced budget made fewer."""
    from biogpt_train.checkpoint.training import EPOCH_RE, last_n_epoch_checkpoints, sorted_checkpoints

    have = len(sorted_checkpoints(save_dir, EPOCH_RE))
    last = Path(save_dir) / "checkpoint_last.pt"
    if have == 0 and last.exists():  # a max_update budget that ended inside the first epoch
        logger.warning("average: no epoch checkpoint in %s (the run stopped before the end of an epoch); using "
                       "checkpoint_last.pt alone", save_dir)
        return [last]
    if 0 < have < n:
        logger.warning("average: only %d epoch checkpoint(s) in %s, fewer than checkpoint.average_last_epochs=%d; "
                       "averaging those %d", have, save_dir, n, have)
        n = have
    return last_n_epoch_checkpoints(save_dir, n)
