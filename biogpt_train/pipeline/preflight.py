"""Checks run before any stage: every stage's inputs and outputs, so that a run fails in its first second with one
line naming the path and the remedy, not after the prepare stage or minutes of training.

check(cfg, run_dir) raises PreflightError (a ValueError) for what cannot work and logs a warning for what will work
differently than asked (e.g. averaging fewer epoch checkpoints than `checkpoint.average_last_epochs` because the
budget is smaller). It also resolves a hub id in `checkpoint.finetune_from` (``microsoft/biogpt``) to a local
snapshot, so the trainer only ever sees a path.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig

logger = logging.getLogger("biogpt_train")

DOWNLOAD_HINT = ("download it with `python -m data_prep.download {name} --dest {dest}` (`python -m "
                 "data_prep.download --help` lists the names: Pre-trained-BioGPT, Pre-trained-BioGPT-Large, "
                 "QA-PubMedQA-BioGPT, ...)")
# owner/name as the Hugging Face hub spells it (no path separators beyond the one, no file suffix)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PreflightError(ValueError):
    """A run that cannot succeed, found before any stage ran (one line: the path and the remedy)."""


# --- checkpoint.finetune_from --------------------------------------------------------------------------------------
def looks_like_hub_id(src: str) -> bool:
    return bool(_HUB_ID.match(src)) and not src.endswith((".pt", ".bin", ".safetensors")) and not Path(src).exists()


def resolve_hub_id(repo_id: str) -> Path:
    """A local snapshot directory of the hub model `repo_id` (huggingface_hub's cache: no second download).
    Offline, uninstalled or unknown: PreflightError with one line."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PreflightError(f"checkpoint.finetune_from={repo_id} looks like a Hugging Face hub id, but "
                             "huggingface_hub is not installed: `pip install huggingface_hub`, or download the "
                             "model and give its directory") from None
    patterns = ["*.json", "*.txt", "*.safetensors", "*.bin", "*.model", "bpecodes"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline (LocalEntryNotFoundError), unknown repo, HTTP errors: all one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PreflightError(f"checkpoint.finetune_from={repo_id}: could not fetch it from the Hugging Face hub "
                             f"({type(e).__name__}: {first}); offline, give a local checkpoint.pt or HF directory "
                             f"(`python -m data_prep.download {repo_id} --dest DIR` where there is a network)") from None


def resolve_finetune_from(src: str, pretrained_dir: str | None = None) -> Path:
    """checkpoint.finetune_from as a local path: an existing file or directory, or a hub id's snapshot."""
    path = Path(src).expanduser()
    if path.exists():
        return path
    if looks_like_hub_id(src):
        return resolve_hub_id(src)
    name = path.parent.name if path.name == "checkpoint.pt" and path.parent.name else "NAME"
    dest = path.parent.parent if name != "NAME" else (pretrained_dir or "DIR")
    raise PreflightError(f"checkpoint.finetune_from={path} does not exist: " + DOWNLOAD_HINT.format(name=name, dest=dest)
                         + ", or set checkpoint.finetune_from=<checkpoint.pt | HF directory | hub id such as "
                         "microsoft/biogpt>, or checkpoint.finetune_from=null to train from scratch")


# --- the checks ------------------------------------------------------------------------------------------------
def _resume_file(cfg, run_dir: Path) -> Path:
    p = Path(cfg.checkpoint.restore_file)
    return p if p.is_absolute() else run_dir / cfg.checkpoint.save_dir / p


def _check_writable(path: Path, what: str) -> None:
    """`path` is a directory we can create files in (or can be created): one line otherwise."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise PreflightError(f"{what} {path}: {probe} is a file, not a directory; choose another location")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PreflightError(f"{what} {path} is not writable ({probe} does not allow it); choose another "
                             "location (paths.runs=DIR) or fix the permissions")


def epochs_to_average(cfg) -> int:
    """How many epoch checkpoints the `average` stage will use: average_last_epochs, but no more than the run
    makes (trainer.max_epoch) or keeps (checkpoint.keep_last_epochs)."""
    n = int(cfg.checkpoint.average_last_epochs)
    if int(cfg.trainer.max_epoch) > 0:
        n = min(n, int(cfg.trainer.max_epoch) // max(int(cfg.checkpoint.save_interval), 1))
    if int(cfg.checkpoint.keep_last_epochs) >= 0:
        n = min(n, int(cfg.checkpoint.keep_last_epochs))
    return n


def check(cfg: DictConfig, run_dir: Path) -> None:
    """Fail now for what would fail later (module docstring). May rewrite checkpoint.finetune_from (hub id)."""
    run_dir = Path(run_dir)
    stages = list(cfg.pipeline.stages)
    c = cfg.checkpoint
    _check_writable(run_dir, "run directory")
    save_dir = run_dir / c.save_dir
    if "train" in stages or "average" in stages:
        _check_writable(save_dir, "checkpoint directory (checkpoint.save_dir)")

    if "train" in stages and c.finetune_from and not _resume_file(cfg, run_dir).exists():
        local = resolve_finetune_from(str(c.finetune_from), cfg.get("paths", {}).get("pretrained"))
        if str(local) != str(c.finetune_from):
            logger.info("checkpoint.finetune_from=%s -> %s", c.finetune_from, local)
            cfg.checkpoint.finetune_from = str(local)

    avg_out = save_dir / c.average_output
    if "average" in stages and "train" in stages:
        if c.no_epoch_checkpoints:
            raise PreflightError("the average stage needs epoch checkpoints but checkpoint.no_epoch_checkpoints=true;"
                                 " drop `average` from pipeline.stages or set checkpoint.no_epoch_checkpoints=false")
        n = epochs_to_average(cfg)
        if n < 1:
            raise PreflightError(f"the average stage would find no epoch checkpoint (trainer.max_epoch="
                                 f"{cfg.trainer.max_epoch}, checkpoint.keep_last_epochs={c.keep_last_epochs}); keep "
                                 "at least one or drop `average` from pipeline.stages")
        if n < int(c.average_last_epochs):
            logger.warning("average: this run makes or keeps only %d epoch checkpoint(s), fewer than "
                           "checkpoint.average_last_epochs=%d; the last %d will be averaged", n,
                           c.average_last_epochs, n)
    if "generate" in stages:
        gen = Path(str(cfg.generation.checkpoint))
        target = gen if gen.is_absolute() else save_dir / gen
        made_here = ("average" in stages and target == avg_out) or ("train" in stages and target != avg_out
                                                                     and not gen.is_absolute())
        if not made_here and not target.exists():
            raise PreflightError(f"generate: generation.checkpoint={target} does not exist and no stage of this run "
                                 f"writes it (pipeline.stages={stages}); add `train`/`average` to the stages or give"
                                 " generation.checkpoint=<an existing checkpoint>")
    from biogpt_train.data.encoder_data import QA_TASKS

    if ("score" in stages or "generate" in stages) and str(cfg.task.name) not in QA_TASKS:
        _check_evaluation_inputs(cfg, stages)  # extractive QA reads its SQuAD JSON splits (pipeline/qa_eval.py)


def _check_evaluation_inputs(cfg, stages: list) -> None:
    """The split to decode and its gold file exist (or the prepare stage of this run will write them)."""
    from biogpt_train.pipeline.evaluate import _spec, data_dir, resolve_gold

    spec = _spec(cfg)  # language_modeling has no evaluation split: its own clear error
    split = str(cfg.generation.subset)
    prepared = (data_dir(cfg) / "manifest.json").exists()
    if not prepared and "prepare" in stages:
        return  # the split and its targets appear with the prepare stage; the raw inputs are checked there
    prefix = data_dir(cfg) / f"{split}.{cfg.task.source_lang}-{cfg.task.target_lang}.{cfg.task.source_lang}"
    if "generate" in stages and not Path(f"{prefix}.idx").exists():
        raise PreflightError(f"generate: {prefix}.bin/.idx not found: split {split!r} of {spec.name} is not "
                             f"prepared in {data_dir(cfg)} (generation.subset={split}); prepare it or set "
                             "generation.subset=valid")
    if "score" in stages:
        try:
            resolve_gold(cfg, spec, split, [], Path("."), False, dry=True)
        except FileNotFoundError as e:
            raise PreflightError(str(e)) from None
