"""Helpers shared by the trainer tests (no tests here): tiny prepared datasets, overrides, CLI runs, metrics.

The synthetic corpus has structure a tiny model learns in a few updates (documents walk a fixed cycle of
symbols), so "loss falls" checks are quick and deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers import write_dict

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _write_dict(path: Path, n_words: int, extra=()) -> None:
    write_dict(path, [f"w{i}" for i in range(n_words)] + list(extra))


def make_lm_data(out: Path, n_train: int = 120, n_valid: int = 16, n_words: int = 60, seed: int = 0) -> Path:
    """A prepared LM directory: dict.txt, {train,valid}.{bin,idx} (docs end in </s>=2), manifest.json."""
    from biogpt_train.data.indexed_dataset import write_dataset

    out.mkdir(parents=True, exist_ok=True)
    _write_dict(out / "dict.txt", n_words)
    rng = np.random.RandomState(seed)
    vocab = 4 + n_words

    def docs(n):
        items = []
        for _ in range(n):
            start, length = rng.randint(n_words), rng.randint(5, 40)
            items.append([4 + (start + 3 * k) % n_words for k in range(length)] + [2])
        return items

    write_dataset(out / "train", docs(n_train), vocab)
    write_dataset(out / "valid", docs(n_valid), vocab)
    (out / "manifest.json").write_text(json.dumps({"synthetic": True}), encoding="utf-8")
    return out


def make_pair_data(out: Path, n_train: int = 24, n_valid: int = 8, n_words: int = 60, seed: int = 0) -> Path:
    """A prepared fine-tuning directory: {split}.x-y.{x,y}.{bin,idx}, dict.txt (with '...'), manifest.json."""
    from biogpt_train.data.indexed_dataset import write_dataset

    out.mkdir(parents=True, exist_ok=True)
    _write_dict(out / "dict.txt", n_words, extra=["..."])
    rng = np.random.RandomState(seed)
    vocab = 4 + n_words + 1
    for split, n in (("train", n_train), ("valid", n_valid)):
        src = [list(4 + rng.randint(n_words, size=rng.randint(5, 30))) + [2] for _ in range(n)]
        tgt = [[4 + int(s[0] - 4 + 1) % n_words, 2] for s in src]
        write_dataset(out / f"{split}.x-y.x", src, vocab)
        write_dataset(out / f"{split}.x-y.y", tgt, vocab)
    (out / "manifest.json").write_text(json.dumps({"synthetic": True}), encoding="utf-8")
    return out


def tiny_overrides(data: Path, runs: Path, **extra) -> list[str]:
    """Overrides for a fast, deterministic CPU run on `data` (no prepare stage, dropout 0, tiny model)."""
    base = {
        "model": "tiny", "task.data": str(data), "task.tokens_per_sample": 32, "paths.runs": str(runs),
        "pipeline.stages": "[train]", "data.max_tokens": 128, "trainer.max_update": 8, "trainer.device": "cpu",
        "lr_scheduler.warmup_updates": 2, "optim.lr": 3e-3, "logging.log_interval": 1,
        "logging.tensorboard": "false", "model.dropout": 0.0, "model.attention_dropout": 0.0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_in_process(overrides: list[str], run_dir: Path) -> None:
    """`pipeline.run` on the composed config, single-threaded like the CLI runs (OMP_NUM_THREADS=1), so both
    use the same kernels and give the same bits."""
    import torch

    from biogpt_train import pipeline
    from biogpt_train.config import compose

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline.run(compose(overrides), run_dir)
    finally:
        torch.set_num_threads(n)


def run_cli(args: list[str], env_extra: dict | None = None, torchrun: int = 0, timeout: int = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    prefix = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [PY]
    proc = subprocess.run([*prefix, "-m", "biogpt_train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(run_dir: Path, split: str = "train") -> dict[int, dict]:
    """metrics.jsonl records of `split` by update (a relaunch re-logs some updates: the last record wins)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] == split:
            out[rec["update"]] = rec
    return out


def make_trainer(tmp_path: Path, data: Path, **overrides):
    """A Trainer on `data` with the tiny CPU settings (tests that drive its methods directly)."""
    from biogpt_train import distributed
    from biogpt_train.config import compose
    from biogpt_train.train.trainer import Trainer

    cfg = compose(tiny_overrides(data, tmp_path / "runs", **overrides))
    return Trainer(cfg, tmp_path / "run", distributed.init("cpu"))
