"""The `prepare` stage: run data_prep for task.data when it is missing or incomplete."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from biogpt_train import distributed

logger = logging.getLogger("biogpt_train")


def missing_data(cfg: DictConfig) -> list[str]:
    """Files the trainer needs that are not in task.data (empty = prepared). manifest.json is data_prep's
    last write, so its presence means the directory is complete."""
    from biogpt_train.data.indexed_dataset import dataset_exists

    t = cfg.task
    missing = []
    for root in (Path(p) for p in str(t.data).split(":") if p):
        if not (root / "dict.txt").exists() and not (root / "tokenizer.model").exists():  # BPE or SentencePiece
            missing.append(str(root / "dict.txt"))
        if not (root / "manifest.json").exists():
            missing.append(str(root / "manifest.json"))
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
