"""Which checkpoint a relaunched run resumes from. checkpoint_last.pt is written atomically, but a disk that filled
up, a copy cut short or a bad sector can still leave it unreadable: then say so and fall back to the newest readable
training checkpoint in save_dir (epoch/update checkpoints), never stop on a raw torch/zipfile error."""

from __future__ import annotations

import logging
from pathlib import Path

from biogpt_train.checkpoint import training as ckpt

logger = logging.getLogger("biogpt_train")


class UnreadableCheckpointError(ValueError):
    pass


def read_training_checkpoint(path: Path) -> dict:
    """The training checkpoint at `path`; UnreadableCheckpointError (one line) for a truncated/corrupt file."""
    try:
        return ckpt.load_checkpoint_file(path)
    except ValueError as e:
        if "not a biogpt_train training checkpoint" in str(e):
            raise
        raise UnreadableCheckpointError(f"{path}: unreadable ({_reason(e)})") from None
    except Exception as e:  # truncated zip, unpickling errors, EOF, I/O errors
        raise UnreadableCheckpointError(f"{path}: unreadable ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _fallbacks(save_dir: Path, exclude: Path) -> list[Path]:
    """Other training checkpoints in save_dir, newest first (by modification time)."""
    found = [p for p in Path(save_dir).glob("checkpoint*.pt")
             if p != exclude and (ckpt.EPOCH_RE.search(p.name) or ckpt.UPDATE_RE.search(p.name)
                                  or p.name in ("checkpoint_last.pt", "checkpoint_best.pt"))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def load_resume(path: Path, save_dir: Path) -> tuple[dict, Path] | None:
    """(checkpoint, its path) to resume from, or None on a first launch (`path` absent)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read_training_checkpoint(path), path
    except UnreadableCheckpointError as e:
        problem = str(e)
    chosen = None
    for other in _fallbacks(save_dir, path):
        try:
            obj = read_training_checkpoint(other)
        except ValueError:
            continue
        if chosen is not None and obj["train_state"].get("num_updates") != chosen[0]["train_state"].get("num_updates"):
            break  # older than the one found: keep that one
        chosen = (obj, other)
        if "optimizer" in obj["train_state"]:  # a full one of the same update beats an epoch/best copy
            break
    if chosen is not None:
        logger.warning("%s; resuming from the newest readable checkpoint instead: %s (update %s)", problem,
                       chosen[1], chosen[0]["train_state"].get("num_updates"))
        return chosen
    raise UnreadableCheckpointError(f"{problem}, and {save_dir} holds no other readable training checkpoint; "
                                    f"delete {path} to start this run over (or use a new run_name)")
