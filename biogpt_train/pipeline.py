"""`python -m biogpt_train` runs `cfg.pipeline.stages` in order, e.g. [prepare, train, average, generate, score].

A stage is a plain function `fn(cfg, run_dir) -> dict | None` registered in STAGES below (an explicit dict, no
import-time registration). `cfg` is the composed Hydra config, `run_dir` the run directory (Hydra's output dir:
deterministic and the same on every rank). The returned dicts are merged into the run's results; with
`pipeline.objective=<key>`, that value is what `@hydra.main` returns (for the Optuna sweeper). Every stage is
idempotent, so `pipeline.stages=[average]` can be rerun on its own; a stage's import happens only when it runs.

To add a stage: write `def generate(cfg, run_dir): ...` in its module and add `"generate": _lazy("module", "fn")`
to STAGES.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from biogpt_train import distributed
from biogpt_train.utils import atomic_write

logger = logging.getLogger("biogpt_train")

Stage = Callable[[DictConfig, Path], "dict | None"]


def _lazy(module: str, name: str) -> Stage:
    """A stage imported only when it runs (so `prepare` does not import torch's training stack, etc.)."""

    def stage(cfg: DictConfig, run_dir: Path):
        return getattr(importlib.import_module(module), name)(cfg, run_dir)

    stage.__qualname__ = f"{module}.{name}"
    return stage


# --- prepare ---------------------------------------------------------------------------------------------------
def missing_data(cfg: DictConfig) -> list[str]:
    """Files the trainer needs that are not in task.data (empty = prepared). manifest.json is data_prep's
    last write, so its presence means the directory is complete."""
    from biogpt_train.data.indexed_dataset import dataset_exists

    t = cfg.task
    missing = []
    for root in (Path(p) for p in str(t.data).split(":") if p):
        for name in ("dict.txt", "manifest.json"):
            if not (root / name).exists():
                missing.append(str(root / name))
        for split in [t.train_subset, *str(t.valid_subset).split(",")]:
            if str(t.name) == "language_modeling":
                prefixes = [root / split]
            else:
                pair = f"{split}.{t.source_lang}-{t.target_lang}"
                prefixes = [root / f"{pair}.{t.source_lang}", root / f"{pair}.{t.target_lang}"]
            missing += [f"{p}.idx/.bin" for p in prefixes if not dataset_exists(p)]
    return missing


def absent_splits(data) -> str:
    """"; no SPLIT split: WHY" for each split data_prep recorded as not made (e.g. KD-DTI has no public train)."""
    import json

    try:
        counts = json.loads((Path(str(data)) / "manifest.json").read_text(encoding="utf-8")).get("counts") or {}
    except (OSError, ValueError):
        return ""
    return "".join(f"; no {split} split: {why}" for split, why in (counts.get("absent_splits") or {}).items())


def prepare(cfg: DictConfig, run_dir: Path) -> dict:
    """Run data_prep for task.data when it is missing or incomplete (rank 0; the other ranks wait for it)."""
    missing = missing_data(cfg)
    if not missing:
        logger.info("prepare: %s is ready", cfg.task.data)
        return {}
    p = cfg.pipeline.prepare
    if not p.dataset or ":" in str(cfg.task.data):
        raise FileNotFoundError(
            f"task.data={cfg.task.data} is not prepared (missing: {', '.join(missing[:4])}) and "
            f"{'pipeline.prepare.dataset is not set' if not p.dataset else 'several shards cannot be prepared at once'}"
            "; run `python -m data_prep ...` first or set pipeline.prepare")
    if distributed.info().rank != 0:
        while missing_data(cfg):  # rank 0 is preparing; torchrun/srun end this process if rank 0 fails
            time.sleep(5)
        return {}
    cmd = [sys.executable, "-m", "data_prep", f"dataset={p.dataset}", f"out_dir={cfg.task.data}"]
    if p.raw_dir:
        cmd.append(f"raw_dir={p.raw_dir}")
    cmd += list(p.args)
    logger.info("prepare: %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare: `{' '.join(cmd)}` failed with exit code {proc.returncode} (its output is above)")
    still = missing_data(cfg)
    if still:
        raise RuntimeError(f"prepare: data_prep finished but {', '.join(still[:4])} are still missing"
                           + absent_splits(cfg.task.data))
    logger.info("prepare: done in %.0f s", time.perf_counter() - t0)
    return {}


# --- average ---------------------------------------------------------------------------------------------------
def average(cfg: DictConfig, run_dir: Path) -> dict:
    """fairseq average_checkpoints over the last `checkpoint.average_last_epochs` epoch checkpoints."""
    import torch

    from biogpt_train.train_checkpoint import average_checkpoints, last_n_epoch_checkpoints
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


STAGES: dict[str, Stage] = {
    "prepare": prepare,
    "train": _lazy("biogpt_train.trainer", "train"),
    "average": average,
    "generate": _lazy("biogpt_train.evaluate", "generate"),
    "score": _lazy("biogpt_train.evaluate", "score"),
}


def run(cfg: DictConfig, run_dir: Path):
    """Run the configured stages; returns results[pipeline.objective] (or None)."""
    run_dir = Path(run_dir)
    rank = distributed.info().rank
    logger.setLevel(str(cfg.logging.level) if rank == 0 else logging.WARNING)
    unknown = [s for s in cfg.pipeline.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {unknown}; known: {', '.join(STAGES)}")
    if rank == 0:  # the resolved config, next to Hydra's unresolved .hydra/config.yaml
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    logger.info("run directory %s; stages %s", run_dir, list(cfg.pipeline.stages))
    results: dict = {}
    try:
        for name in cfg.pipeline.stages:
            t0 = time.perf_counter()
            results.update(STAGES[name](cfg, run_dir) or {})
            logger.info("stage %s done (%.0f s)", name, time.perf_counter() - t0)
    except distributed.Preempted as e:  # not an error: the job is requeued / relaunched and resumes
        logger.warning("%s", e)
        return None
    finally:
        distributed.destroy()
    objective = cfg.pipeline.objective
    if objective:
        if objective not in results:
            raise KeyError(f"pipeline.objective={objective!r} is not among the results {sorted(results)}")
        return float(results[objective])
    return None
