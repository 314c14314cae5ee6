"""`python -m data_prep dataset=NAME raw_dir=PATH out_dir=PATH [workers=N] [...]` (conf/data_prep/config.yaml).

`main` is the Hydra shim; `run(cfg)` does the work and is what tests and the training pipeline call.
Datasets are dispatched through `DATASETS` (an explicit registry): `pubmed` -> data_prep.pubmed.run, the five
fine-tuning tasks -> `data_prep.tasks.BUILDERS[name](raw_dir, out_dir, tokenizer, workers=, options=)`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

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
    )


def _run_task(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    from data_prep import pubmed
    from data_prep.tasks import BUILDERS

    name = dataset_name(cfg)
    if cfg.bpe.learn:
        raise ValueError(f"bpe.learn=true applies to dataset=pubmed; for {name}, set tokenizer_dir to the prepared "
                         "pretraining directory that holds the learned dict.txt + bpecodes")
    dict_path, codes_path = pubmed.tokenizer_files(resolve_path(cfg.tokenizer_dir, fallback_to_repo=True))
    tokenizer = pubmed.load_tokenizer(dict_path, codes_path)
    summary = BUILDERS[name](raw_dir, out_dir, tokenizer, workers=int(cfg.workers), options=dataset_options(cfg))
    print(json.dumps(summary, indent=1, default=str), flush=True)
    return summary


def _run_synthetic(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    from data_prep import synthetic

    return synthetic.run(raw_dir, out_dir, **dataset_options(cfg))


DATASETS: dict[str, Callable[[DictConfig, Path, Path], dict]] = {
    "pubmed": _run_pubmed,
    "synthetic": _run_synthetic,
    **{name: _run_task for name in TASK_DATASETS},
}


def run(cfg: DictConfig) -> dict[str, Any]:
    name = dataset_name(cfg)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](cfg, resolve_path(cfg.raw_dir), resolve_path(cfg.out_dir))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from data_prep.pubmed import DataPrepError
    from data_prep.pubmed_xml import InputError

    try:
        run(cfg)
    except (DataPrepError, InputError, ValueError) as err:
        # A clear one-line error (file and record named in the message), no traceback for bad input.
        log.error("%s", err)
        print(f"data_prep: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
