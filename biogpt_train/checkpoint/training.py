"""Training checkpoints: save / resume the whole training state, fairseq file names, pruning, averaging.

A training checkpoint is a native biogpt_train checkpoint (docs/ARCHITECTURE.md; readable by
`biogpt_train.checkpoint.io.read_checkpoint` / `load_pretrained`) plus `train_state`:
    {"format", "format_version", "model_config", "model" (decoder.* fp32 tensors), "dictionary" (symbols, learned
     prompt tokens included), "dictionary_counts", "cfg" (resolved config),
     "train_state": {"optimizer" (keyed by parameter names), "scaler", "lr_scheduler", "num_updates", "epoch",
                     "iterator", "rng", "best", "val_loss", "nonfinite_in_a_row", "skipped_updates", "elapsed",
                     "world_size", "lora" (LoRA adapter tensors, when model.lora is on; "model" holds them merged)}}
It is written once under a temporary name and renamed (then hard-linked/copied to the other names of the same
save), so a kill at any moment leaves either the old or the new file, never a truncated one.

Names (fairseq): checkpoint_last.pt (every save), checkpoint{epoch}.pt (epoch ends), checkpoint_{epoch}_{updates}.pt
(save_interval_updates), checkpoint_best.pt (validation improved), checkpoint_avg.pt (`average` stage).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from biogpt_train.checkpoint.io import EMBED, NATIVE_FORMAT, OUT, native_dict
from biogpt_train.train.lora import merged_state_dict
from biogpt_train.utils import atomic_path

EPOCH_RE = re.compile(r"checkpoint(\d+)\.pt$")
UPDATE_RE = re.compile(r"checkpoint_\d+_(\d+)\.pt$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


# --- RNG -----------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """All RNG states, as tensors and plain types (loadable with torch.load(weights_only=True))."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# --- save ----------------------------------------------------------------------------------------------------
def model_state_dict(model: torch.nn.Module) -> dict:
    """Full fp32 CPU state dict with fairseq names, from a plain, DDP or FSDP model (collective under FSDP)."""
    return _state_dicts(model)[0]


def _state_dicts(model: torch.nn.Module) -> tuple[dict, dict]:
    """(the plain state dict, LoRA adapter tensors): adapters are folded into their base weights (train/lora.py),
    so checkpoints hold the family's plain parameter names; the adapters themselves go to train_state (resume)."""
    sd, adapters = merged_state_dict(model, get_model_state_dict(model, options=_FULL))
    if EMBED in sd:
        sd[OUT] = sd[EMBED]  # the tied projection: one tensor in the file
    return sd, adapters


def build_checkpoint(model, optimizer, dictionary, cfg: dict | None, train_state: dict | None,
                     tokenizer_files: dict | None = None) -> dict:
    """The checkpoint dict (collective: every rank must call it; only rank 0's result is complete). The layout is
    checkpoint.io.native_dict's, the one writer of the native format, plus `train_state`."""
    sd, adapters = _state_dicts(model)
    obj = native_dict(model, sd, dictionary, cfg, tokenizer_files)
    if train_state is not None:
        train_state = dict(train_state)
        train_state["optimizer"] = get_optimizer_state_dict(model, optimizer, options=_FULL)
        if adapters:
            train_state["lora"] = adapters
        obj["train_state"] = train_state
    return obj


def write_checkpoint(obj: dict, save_dir: Path, names: Sequence[str]) -> list[Path]:
    """Write `obj` atomically as names[0], then link (or copy) it to the other names, each atomically."""
    save_dir.mkdir(parents=True, exist_ok=True)
    first = save_dir / names[0]
    with atomic_path(first) as tmp:
        torch.save(obj, tmp)
    paths = [first]
    for name in names[1:]:
        dst = save_dir / name
        with atomic_path(dst, fsync=False) as tmp:
            tmp.unlink()
            try:
                os.link(first, tmp)  # a hard link: no second copy of a multi-GB file
            except OSError:
                shutil.copyfile(first, tmp)
        paths.append(dst)
    return paths


def checkpoint_names(cfg, epoch: int, num_updates: int, end_of_epoch: bool, is_best: bool) -> list[str]:
    """fairseq's `save_checkpoint` name rules."""
    c = cfg.checkpoint
    names = []
    if end_of_epoch and not c.no_epoch_checkpoints and epoch % c.save_interval == 0:
        names.append(f"checkpoint{epoch}.pt")
    if not end_of_epoch and c.save_interval_updates > 0 and num_updates % c.save_interval_updates == 0:
        names.append(f"checkpoint_{epoch}_{num_updates}.pt")
    if is_best:
        names.append("checkpoint_best.pt")
    if not c.no_last_checkpoints:
        names.append("checkpoint_last.pt")
    return names


def prune_checkpoints(save_dir: Path, cfg) -> None:
    """keep_interval_updates / keep_last_epochs: remove the oldest numbered checkpoints."""
    c = cfg.checkpoint
    for pattern, keep in ((UPDATE_RE, c.keep_interval_updates), (EPOCH_RE, c.keep_last_epochs)):
        if keep < 0:
            continue
        for path in sorted_checkpoints(save_dir, pattern)[keep:]:
            path.unlink(missing_ok=True)


def sorted_checkpoints(save_dir: Path, pattern: re.Pattern = EPOCH_RE) -> list[Path]:
    """Checkpoints whose name matches `pattern`, newest (largest number) first."""
    found = [(int(m.group(1)), p) for p in Path(save_dir).glob("checkpoint*.pt") if (m := pattern.search(p.name))]
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


# --- load ----------------------------------------------------------------------------------------------------
def load_checkpoint_file(path: Path) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != NATIVE_FORMAT or "train_state" not in obj:
        raise ValueError(f"{path}: not a biogpt_train training checkpoint (no 'train_state'); to start from its "
                         "weights only, use checkpoint.finetune_from=" + str(path))
    return obj


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """Restore an optimizer state keyed by parameter names, into a plain, DDP or FSDP model's optimizer."""
    options = StateDictOptions(full_state_dict=True) if dist.is_initialized() else None
    set_optimizer_state_dict(model, optimizer, state, options=options)


# --- averaging -------------------------------------------------------------------------------------------------
def last_n_epoch_checkpoints(save_dir: Path, n: int) -> list[Path]:
    """fairseq `last_n_checkpoints(..., update_based=False)`: the n highest checkpoint{N}.pt, or an error."""
    found = sorted_checkpoints(save_dir, EPOCH_RE)
    if len(found) < n:
        raise FileNotFoundError(
            f"average: found {len(found)} epoch checkpoints (checkpoint<N>.pt) in {save_dir} but need at least {n}; "
            "train more epochs, keep more (checkpoint.keep_last_epochs) or lower checkpoint.average_last_epochs"
        )
    return found[:n]


def average_checkpoints(paths: Sequence[Path]) -> dict:
    """fairseq scripts/average_checkpoints.py: the returned dict is the last-read checkpoint with "model"
    replaced by the mean of every tensor over `paths` (half -> float first; integer tensors use floor division)
    and without "train_state"."""
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    sums: dict = {}
    new_state = None
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if new_state is None:
            new_state = state
        params = state["model"]
        if sums and set(params) != set(sums):
            raise KeyError(f"{path}: has parameters {sorted(set(params) ^ set(sums))[:5]} that the others do not")
        for k, p in params.items():
            if p.dtype in (torch.float16, torch.bfloat16):
                p = p.float()
            if k not in sums:
                sums[k] = p.clone()
            else:
                sums[k] += p
    for k, v in sums.items():
        if v.is_floating_point():
            v.div_(len(paths))
        else:
            v //= len(paths)
    if EMBED in sums:
        sums[OUT] = sums[EMBED]
    new_state["model"] = sums
    new_state.pop("train_state", None)
    new_state["averaged_from"] = [str(p) for p in paths]
    return new_state
