"""Aggregation of per-update statistics over a log interval, and the derived numbers fairseq reports.

Losses are summed token NLLs (nats); reported in base 2 as fairseq: loss = sum / ntokens / ln 2, ppl = 2**loss.
"""

from __future__ import annotations

import math
import resource
import time

import torch


def base2(loss_sum: float, ntokens: float) -> float:
    return loss_sum / max(ntokens, 1) / math.log(2)


def perplexity(loss_base2: float) -> float:
    try:
        return 2.0 ** loss_base2
    except OverflowError:
        return float("inf")


def memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class IntervalMeter:
    """Sums over the updates since the last `reset()`; `summary()` gives the logged metrics."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.ntokens = 0
        self.nsentences = 0
        self.updates = 0
        self.skipped = 0
        self.gnorm_sum = 0.0
        self.start = time.perf_counter()

    def add(self, update: dict) -> None:
        """One update's stats: {loss_sum, ntokens, nsentences, gnorm, skipped} (summed over ranks)."""
        if update["skipped"]:  # fairseq does not log stats of an update it threw away
            self.skipped += 1
            return
        self.loss_sum += update["loss_sum"]
        self.ntokens += update["ntokens"]
        self.nsentences += update["nsentences"]
        self.updates += 1
        self.gnorm_sum += update["gnorm"]

    def summary(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        loss = base2(self.loss_sum, self.ntokens) if self.updates else float("nan")
        return {
            "loss": loss,
            "ppl": perplexity(loss),
            "gnorm": self.gnorm_sum / self.updates if self.updates else float("nan"),
            "ntokens": self.ntokens,
            "nsentences": self.nsentences,
            "wps": self.ntokens / elapsed,  # target tokens / s over all ranks
            "ups": (self.updates + self.skipped) / elapsed,
            "skipped": self.skipped,
        }
