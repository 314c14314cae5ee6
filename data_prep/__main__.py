"""`python -m data_prep dataset=NAME raw_dir=PATH out_dir=PATH [workers=N] [...]` (conf/data_prep/config.yaml).

`main` is the Hydra shim; `run(cfg)` does the work and is what tests and the training pipeline call.
Datasets are dispatched through `DATASETS` (an explicit registry): `pubmed` -> data_prep.pubmed.run, the five
fine-tuning tasks -> `data_prep.tasks.BUILDERS[name](raw_dir, out_dir, tokenizer, workers=, options=)`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import hydra
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf" / "data_prep")
TASK_DATASETS = ("bc5cdr", "kd_dti", "ddi", "pubmedqa", "hoc")

log = logging.getLogger("data_prep")


def resolve_path(value: str, fallback_to_repo: bool = False) -> Path:
    """Relative paths are relative to the cwd (hydra.job.chdir is false); tokenizer_dir may also be repo-relative."""
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return p
    if fallback_to_repo and not p.exists() and (REPO / p).exists():
        return REPO / p
    return p.resolve()


def dataset_name(cfg: DictConfig) -> str:
    name = cfg.dataset.get("name") if isinstance(cfg.get("dataset"), DictConfig) else None
    if not name:
        try:
            from hydra.core.hydra_config import HydraConfig

            name = HydraConfig.get().runtime.choices.get("dataset")
        except ValueError:
            name = None
    if not name:
        raise ValueError("cannot tell the dataset: give dataset=NAME (" + ", ".join(DATASETS) + ")")
    return str(name)


def dataset_options(cfg: DictConfig) -> dict:
    opts = OmegaConf.to_container(cfg.dataset, resolve=True)
    opts.pop("name", None)
    return opts


def _run_pubmed(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    from data_prep import pubmed

    raw = str(cfg.raw_dir)
    raw_arg = raw if any(ch in raw for ch in "*?[") else raw_dir  # keep globs as globs
    return pubmed.run(
        raw_arg, out_dir,
        tokenizer_dir=resolve_path(cfg.tokenizer_dir, fallback_to_repo=True),
        workers=int(cfg.workers),
        bpe=OmegaConf.to_container(cfg.bpe, resolve=True),
        options=dataset_options(cfg),
        file_range=None if cfg.file_range is None else str(cfg.file_range),
        merge_only=bool(cfg.merge_only),
        progress=bool(cfg.progress),
        tokenizer=str(cfg.tokenizer),
        tokenizer_model=_tokenizer_model(cfg),
        spm=OmegaConf.to_container(cfg.spm, resolve=True),
    )


def _tokenizer_model(cfg: DictConfig):
    return None if cfg.tokenizer_model is None else resolve_path(cfg.tokenizer_model, fallback_to_repo=True)


def _run_task(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    from data_prep import pubmed
    from data_prep.tasks import BUILDERS
    from data_prep.tasks.common import format_summary

    from data_prep import spm

    name = dataset_name(cfg)
    if cfg.bpe.learn or cfg.spm.train:
        raise ValueError(f"bpe.learn / spm.train apply to dataset=pubmed; for {name}, set tokenizer_dir (BPE) or "
                         "tokenizer_model (SentencePiece) to the vocabulary of the model to fine-tune")
    if spm.check_kind(cfg.tokenizer) == "sentencepiece":  # sources/targets are halves of a sequence: no <s>
        tokenizer = spm.SpmTextEncoder(spm.model_file(_tokenizer_model(cfg)), bos=False)
    else:
        dict_path, codes_path = pubmed.tokenizer_files(resolve_path(cfg.tokenizer_dir, fallback_to_repo=True))
        tokenizer = pubmed.load_tokenizer(dict_path, codes_path)
    summary = BUILDERS[name](raw_dir, out_dir, tokenizer, workers=int(cfg.workers), options=dataset_options(cfg))
    print(format_summary(summary), flush=True)  # the full record is out_dir/manifest.json
    return summary


DATASETS: dict[str, Callable[[DictConfig, Path, Path], dict]] = {
    "pubmed": _run_pubmed,
    **{name: _run_task for name in TASK_DATASETS},
}


def run(cfg: DictConfig) -> dict[str, Any]:
    from data_prep.checks import check_writable_dir

    name = dataset_name(cfg)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    out_dir = check_writable_dir(resolve_path(cfg.out_dir), "out_dir")  # before any input is read
    return DATASETS[name](cfg, resolve_path(cfg.raw_dir), out_dir)


def _log_to_files(message: str) -> None:
    """Record an error in Hydra's out_dir/.hydra/data_prep.log only: the terminal gets it once, on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from data_prep.pubmed import DataPrepError
    from data_prep.pubmed_xml import InputError

    try:
        run(cfg)
    except (DataPrepError, InputError, ValueError) as err:
        # A clear one-line error (file and record named in the message), no traceback for bad input.
        _log_to_files(str(err))
        print(f"data_prep: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def out_dir_override(argv: list[str]) -> Optional[str]:
    """The plain ``out_dir=PATH`` of a command line (None for sweeps, interpolations or when absent)."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "out_dir":
            value = value.strip().strip("'\"")
            return None if not value or any(c in value for c in ",${}") else value
    return None


def main(argv: Optional[list[str]] = None) -> None:
    """Check that out_dir is writable before Hydra creates out_dir/.hydra in it (its traceback names no remedy)."""
    from data_prep.checks import OutputPathError, check_writable_dir

    out_dir = out_dir_override(sys.argv[1:] if argv is None else argv)
    if out_dir is not None:
        try:
            check_writable_dir(resolve_path(out_dir), "out_dir")
        except OutputPathError as err:
            print(f"data_prep: error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
    hydra_main()


if __name__ == "__main__":
    main()
