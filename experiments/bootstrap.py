"""Percentile bootstrap confidence intervals over test documents.

A scorer reports per-document "units" (see `biogpt_train.scoring` / results.json `units`):
  {"kind": "mean", "values": [...]}                       accuracy, per-document F1 averages
  {"kind": "micro_f1", "tp": [...], "fp": [...], "fn": [...]}  micro-F1 from summed counts
Resampling documents with replacement and recomputing the statistic gives the interval.
"""

from __future__ import annotations

import numpy as np

STATISTICS = {}


def _mean(units: dict, idx: np.ndarray) -> np.ndarray:
    values = np.asarray(units["values"], dtype=np.float64)
    return values[idx].mean(axis=-1) * units.get("scale", 100.0)


def _micro_f1(units: dict, idx: np.ndarray) -> np.ndarray:
    tp, fp, fn = (np.asarray(units[k], dtype=np.float64)[idx].sum(axis=-1) for k in ("tp", "fp", "fn"))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return f1 * units.get("scale", 100.0)


STATISTICS["mean"] = _mean
STATISTICS["micro_f1"] = _micro_f1


def num_units(units: dict) -> int:
    return len(units["values"] if units["kind"] == "mean" else units["tp"])


def point_estimate(units: dict) -> float:
    n = num_units(units)
    return float(STATISTICS[units["kind"]](units, np.arange(n)[None, :])[0])


def bootstrap_ci(units: dict, *, samples: int = 2000, alpha: float = 0.05, seed: int = 0,
                 chunk: int = 500) -> tuple[float, float]:
    """(low, high) percentile interval of the statistic over `samples` document resamples."""
    if units["kind"] not in STATISTICS:
        raise ValueError(f"unknown units kind {units['kind']!r}; expected one of {sorted(STATISTICS)}")
    n = num_units(units)
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of documents")
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, samples, chunk):  # chunks bound memory for large test sets
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        stats.append(STATISTICS[units["kind"]](units, idx))
    stats = np.concatenate(stats)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci_over_seeds(units_per_seed: list[dict], *, samples: int = 2000, alpha: float = 0.05,
                            seed: int = 0) -> tuple[float, float]:
    """Interval of the seed-averaged statistic, resampling the *same* test documents for every seed.

    Runs of different seeds score the same test set, so a document resample applies to all of them;
    this measures test-set sampling uncertainty of the number the table reports (the mean over seeds).
    """
    sizes = {num_units(u) for u in units_per_seed}
    if len(sizes) != 1:
        raise ValueError(f"seeds scored different numbers of test documents: {sorted(sizes)}")
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    stats = np.mean([STATISTICS[u["kind"]](u, idx) for u in units_per_seed], axis=0)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
