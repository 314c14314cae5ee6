"""What a person watching a training run sees (rank 0): a progress line from the first update on, with an ETA that
knows every budget (max_update, max_epoch, stop_time_hours), and a summary at the end that says where everything
is and what to run next. metrics.jsonl / TensorBoard keep the numbers; this is only for the console."""

from __future__ import annotations

import logging
import math
import shlex
import time
from pathlib import Path

logger = logging.getLogger("biogpt_train")


def format_seconds(s: float) -> str:
    s = int(round(max(s, 0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Logs `update N/TOTAL (P%) | epoch E | loss L | S s/update | ETA H:MM:SS` at the first update and then at most
    every `every_s` seconds (and at the last update), so a log file stays short and a terminal never looks stuck."""

    def __init__(self, *, max_update: int, max_epoch: int, stop_time_hours: float, start_update: int,
                 elapsed_before: float, enabled: bool = True, every_s: float = 10.0):
        self.max_update, self.max_epoch, self.stop_time_s = max_update, max_epoch, stop_time_hours * 3600
        self.start_update, self.elapsed_before = start_update, elapsed_before
        self.enabled, self.every_s = enabled, every_s
        self.t0 = time.perf_counter()
        self.last_print = None

    def remaining_updates(self, num_updates: int, epoch: int, pos: int, updates_per_epoch: int) -> float:
        """Updates left under max_update and max_epoch (inf when neither bounds the run)."""
        left = math.inf
        if self.max_update > 0:
            left = self.max_update - num_updates
        if self.max_epoch > 0 and updates_per_epoch > 0:
            left = min(left, (self.max_epoch - epoch) * updates_per_epoch + max(updates_per_epoch - pos, 0))
        return max(left, 0)

    def eta(self, num_updates: int, epoch: int, pos: int, updates_per_epoch: int) -> float | None:
        done = num_updates - self.start_update
        spent = time.perf_counter() - self.t0
        candidates = []
        left = self.remaining_updates(num_updates, epoch, pos, updates_per_epoch)
        if done > 0 and math.isfinite(left):
            candidates.append(left * spent / done)
        if self.stop_time_s > 0:
            candidates.append(self.stop_time_s - self.elapsed_before - spent)
        return max(min(candidates), 0.0) if candidates else None

    def step(self, num_updates: int, epoch: int, pos: int, updates_per_epoch: int, loss: float | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        left = self.remaining_updates(num_updates, epoch, pos, updates_per_epoch)
        if self.last_print is not None and now - self.last_print < self.every_s and left > 0:
            return
        self.last_print = now
        total = num_updates + left
        done = num_updates - self.start_update
        parts = [f"update {num_updates}/{int(total)} ({100 * num_updates / total:.0f}%)" if math.isfinite(total)
                 else f"update {num_updates}"]
        parts.append(f"epoch {epoch}" + (f"/{self.max_epoch}" if self.max_epoch > 0 else ""))
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.3f}")
        if done > 0:
            parts.append(f"{(now - self.t0) / done:.2f} s/update")
        eta = self.eta(num_updates, epoch, pos, updates_per_epoch)
        parts.append(f"ETA {format_seconds(eta)}" if eta is not None else "no budget set (trainer.max_update/"
                     "max_epoch/stop_time_hours)")
        logger.info("progress: %s", " | ".join(parts))


# --- the end of a run ------------------------------------------------------------------------------------------
def _command_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not under @hydra.main (tests, direct calls)
        return []


def next_commands(cfg, save_dir: Path) -> list[str]:
    """What to run after training, given the stages this run still has to do."""
    stages = list(cfg.pipeline.stages)
    after = stages[stages.index("train") + 1:] if "train" in stages else []
    if after:
        return [f"(this run goes on with the stages {after})"]
    best = save_dir / ("checkpoint_best.pt" if (save_dir / "checkpoint_best.pt").exists() else "checkpoint_last.pt")
    if str(cfg.task.name) == "language_modeling":
        bpe = Path(str(cfg.task.data).split(":")[0]) / "bpecodes"
        return [f"python -m biogpt_train.generate text --checkpoint {best} --bpecodes "
                f"{bpe if bpe.exists() else 'BPECODES'} --prompt 'COVID-19 is'",
                f"python -m biogpt_train.convert {best} OUT_DIR --to hf   # export a Hugging Face directory"]
    overrides = [o for o in _command_overrides() if not o.startswith("pipeline.stages=")]
    return ["python -m biogpt_train " + " ".join(shlex.quote(o) for o in overrides)
            + " 'pipeline.stages=[average,generate,score]'   # decode and score this run"]


def summary(cfg, run_dir: Path, save_dir: Path, result: dict, elapsed: float, why: str) -> str:
    """The lines logged when training ends (rank 0)."""
    names = sorted(p.name for p in save_dir.glob("checkpoint*.pt")) if save_dir.is_dir() else []
    best = result.get("best_loss")
    lines = [f"training finished ({why}): {result['num_updates']} updates, {format_seconds(elapsed)} of training"
             + (f", best valid loss {best:.3f}" if isinstance(best, float) else ""),
             f"  checkpoints: {save_dir}: {', '.join(names) if names else 'none (checkpoint.no_save)'}",
             f"  run directory: {run_dir}"]
    lines += [f"  next: {c}" for c in next_commands(cfg, save_dir)]
    return "\n".join(lines)


def stop_reason(cfg, num_updates: int, next_epoch: int, stop_time: bool) -> str:
    tc = cfg.trainer
    if tc.max_update > 0 and num_updates >= tc.max_update:
        return f"trainer.max_update={tc.max_update} reached"
    if stop_time:
        return f"trainer.stop_time_hours={tc.stop_time_hours} reached"
    if tc.max_epoch > 0 and next_epoch > tc.max_epoch:
        return f"trainer.max_epoch={tc.max_epoch} reached"
    return "stopped"


def already_complete(cfg, num_updates: int, next_epoch: int) -> str | None:
    """Why a resumed run has nothing left to train (None: it has)."""
    tc = cfg.trainer
    if tc.max_update > 0 and num_updates >= tc.max_update:
        return f"update {num_updates} reached trainer.max_update={tc.max_update}"
    if tc.max_epoch > 0 and next_epoch > tc.max_epoch:
        return f"epoch {next_epoch - 1} reached trainer.max_epoch={tc.max_epoch}"
    return None
