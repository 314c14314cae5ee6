"""Training metrics: interval meters (fairseq's base-2 loss, ppl, wps) and the rank-0 writers."""

from biogpt_train.logging.meters import IntervalMeter, base2, memory_gb, perplexity
from biogpt_train.logging.writers import MetricWriter

__all__ = ["IntervalMeter", "MetricWriter", "base2", "memory_gb", "perplexity"]
