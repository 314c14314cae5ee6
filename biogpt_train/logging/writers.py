"""Where metrics go: a concise console line, TensorBoard scalars and `metrics.jsonl` (rank 0 only).

Every record is `(split, num_updates, {name: value})`; splits are `train` (per log interval), `train_epoch`
and `valid`. TensorBoard tags are `<split>/<name>`; jsonl lines are `{"split", "update", "epoch", ...metrics}`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import timedelta
from pathlib import Path

logger = logging.getLogger("biogpt_train")

# console columns, in order, with their format
CONSOLE = {
    "loss": "{:.3f}", "ppl": "{:.2f}", "lr": "{:.3e}", "gnorm": "{:.3f}", "loss_scale": "{:g}",
    "wps": "{:.0f}", "ups": "{:.2f}", "mem_gb": "{:.1f}", "skipped": "{:d}", "best_loss": "{:.3f}",
}


def _fmt(name, value) -> str:
    try:
        return CONSOLE[name].format(value)
    except (ValueError, TypeError):
        return str(value)


class MetricWriter:
    def __init__(self, run_dir: Path, cfg, enabled: bool, max_update: int = 0):
        self.enabled = enabled
        self.max_update = max_update
        self.start = time.perf_counter()
        self.tb = None
        self.jsonl = None
        if not enabled:
            return
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / cfg.tensorboard_dir))
        if cfg.jsonl:
            self.jsonl = open(Path(run_dir) / cfg.jsonl, "a", encoding="utf-8")

    def progress(self, num_updates: int, epoch: int, epoch_pos: tuple[int, int] | None) -> str:
        parts = [f"epoch {epoch:03d}"]
        if epoch_pos is not None:
            parts.append(f"{epoch_pos[0]}/{epoch_pos[1]} batches")
        if self.max_update:
            frac = num_updates / self.max_update
            elapsed = time.perf_counter() - self.start
            eta = f" eta {timedelta(seconds=round(elapsed / frac - elapsed))}" if 0 < frac < 1 else ""
            parts.append(f"update {num_updates}/{self.max_update} ({100 * frac:.0f}%){eta}")
        else:
            parts.append(f"update {num_updates}")
        return " | ".join(parts)

    def log(self, split: str, num_updates: int, epoch: int, metrics: dict, epoch_pos=None) -> None:
        if not self.enabled:
            return
        shown = " | ".join(f"{k} {_fmt(k, v)}" for k, v in metrics.items() if k in CONSOLE)
        logger.info("%s | %s | %s", split, self.progress(num_updates, epoch, epoch_pos), shown)
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, num_updates)
        if self.jsonl is not None:
            record = {"split": split, "update": num_updates, "epoch": epoch}
            # JSON has no NaN/inf: those become null
            record.update({k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()})
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
