"""What a resumed run needs besides the weights, in one object: optimizer, loss scaler, data position, RNG
streams and counters. `TrainState.state_dict()` is what a training checkpoint stores under "train_state";
`load_state_dict()` restores it. The weights themselves are restored before the model is wrapped (FSDP shards
the values it is given), so they travel beside this state in the checkpoint, not inside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from biogpt_train.checkpoint import training as ckpt

logger = logging.getLogger("biogpt_train")


@dataclass
class Counters:
    num_updates: int = 0
    best: float | None = None
    val_loss: float | None = None
    nonfinite_in_a_row: int = 0
    skipped_updates: int = 0
    elapsed: float = 0.0  # training seconds before this launch


class ResumeError(RuntimeError):
    pass


class TrainState:
    """Save/restore view over a Trainer's optimizer, scaler, train iterator, RNG and counters."""

    def __init__(self, trainer):
        self.trainer = trainer

    def state_dict(self, epoch: int) -> dict:
        t, c = self.trainer, self.trainer.state
        return {
            "num_updates": c.num_updates, "epoch": epoch, "iterator": t.train_itr.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else None,
            "rng": ckpt.rng_state(), "best": c.best, "val_loss": c.val_loss,
            "nonfinite_in_a_row": c.nonfinite_in_a_row, "skipped_updates": c.skipped_updates,
            "elapsed": t.elapsed(), "world_size": t.info.world_size,
            # the optimizer state is added by checkpoint.training.build_checkpoint (a collective under FSDP)
        }

    def load_state_dict(self, ts: dict) -> None:
        t, c = self.trainer, self.trainer.cfg.checkpoint
        t.state = Counters(best=ts.get("best"), val_loss=ts.get("val_loss"),
                           skipped_updates=int(ts.get("skipped_updates", 0)), elapsed=float(ts.get("elapsed", 0)))
        if not c.reset_optimizer and "optimizer" not in ts:  # an epoch/best checkpoint saved without it
            logger.warning("the checkpoint has no optimizer state (checkpoint.save_optimizer_state_in_epoch_"
                           "checkpoints=false): the optimizer starts fresh at update %s", ts["num_updates"])
            t.state.num_updates = int(ts["num_updates"])
        elif not c.reset_optimizer:  # as fairseq, the update count (hence the LR) goes with the optimizer state
            ckpt.load_optimizer_state(t.model, t.optimizer, ts["optimizer"])
            if t.scaler is not None and ts.get("scaler"):
                t.scaler.load_state_dict(ts["scaler"])
            t.state.num_updates = int(ts["num_updates"])
            t.state.nonfinite_in_a_row = int(ts.get("nonfinite_in_a_row", 0))
        if not c.reset_dataloader:
            t.train_itr = t.resume_iterator(self._iterator_state(ts))
        ckpt.set_rng_state(ts["rng"])

    def _iterator_state(self, ts: dict) -> dict:
        """The saved data position, checked against this launch's world size.

        Batches are sharded over ranks, so a position in the middle of an epoch means different batches on
        another number of ranks. At an epoch boundary a new world size is harmless (the next epoch is sharded
        afresh); mid-epoch it is an error unless checkpoint.reshard_on_resume=true, which continues at the same
        share of the epoch (approximately: some batches of that epoch may be seen twice or not at all)."""
        it, saved = dict(ts["iterator"]), int(ts.get("world_size", self.trainer.info.world_size))
        now = self.trainer.info.world_size
        if saved == now:
            return it
        pos = int(it.get("iterations_in_epoch", 0))
        if pos == 0:
            logger.info("resuming a run saved on %d rank(s) on %d: epoch %s starts afresh on the new sharding",
                        saved, now, it["epoch"])
            return it
        if not self.trainer.cfg.checkpoint.reshard_on_resume:
            raise ResumeError(
                f"the checkpoint was saved on {saved} rank(s) in the middle of epoch {it['epoch']} ({pos} batches "
                f"per rank done) but this launch has {now}: relaunch on {saved} rank(s) for an exact resume, or set "
                "checkpoint.reshard_on_resume=true to continue at the same share of the epoch (not bitwise equal), "
                "or checkpoint.reset_dataloader=true to restart the data")
        it["iterations_in_epoch"] = pos * saved // now
        logger.warning("resharding epoch %s from %d to %d rank(s): continuing at batch %d of this rank's share "
                       "(the rest of this epoch is not the batches an uninterrupted run would see)", it["epoch"],
                       saved, now, it["iterations_in_epoch"])
        return it
