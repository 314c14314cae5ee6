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


def _by_task(name: str) -> Stage:
    """Evaluation stages: extractive QA tasks (encoders) have their own (pipeline/qa_eval.py)."""

    def stage(cfg: DictConfig, run_dir: Path):
        from biogpt_train.data.encoder_data import QA_TASKS

        module = "biogpt_train.pipeline.qa_eval" if str(cfg.task.name) in QA_TASKS else "biogpt_train.pipeline.evaluate"
        return getattr(importlib.import_module(module), name)(cfg, run_dir)

    stage.__qualname__ = f"evaluation.{name}"
    return stage


STAGES: dict[str, Stage] = {
    "prepare": _lazy("biogpt_train.pipeline.prepare", "prepare"),
    "train": _lazy("biogpt_train.train.trainer", "train"),
    "average": _lazy("biogpt_train.pipeline.average", "average"),
    "generate": _by_task("generate"),
    "score": _by_task("score"),
}


def run(cfg: DictConfig, run_dir: Path):
    """Run the configured stages; returns results[pipeline.objective] (or None)."""
    run_dir = Path(run_dir)
    rank = distributed.info().rank
    logger.setLevel(str(cfg.logging.level) if rank == 0 else logging.WARNING)
    unknown = [s for s in cfg.pipeline.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {unknown}; known: {', '.join(STAGES)}")
    from biogpt_train.pipeline import preflight

    preflight.check(cfg, run_dir)  # every stage's inputs/outputs now, not after minutes of training
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
    logger.info("run directory %s: stages %s done", run_dir, list(cfg.pipeline.stages))
    objective = cfg.pipeline.objective
    if objective:
        if objective not in results:
            raise KeyError(f"pipeline.objective={objective!r} is not among the results {sorted(results)}")
        return float(results[objective])
    return None
