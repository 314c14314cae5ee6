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
        encoder=_encoder_options(cfg),
    )


def _tokenizer_model(cfg: DictConfig):
    return None if cfg.tokenizer_model is None else resolve_path(cfg.tokenizer_model, fallback_to_repo=True)


def _encoder_options(cfg: DictConfig):
    """tokenizer=wordpiece: the WordPiece vocab and ELECTRA block settings (data_prep/encoder_corpus.py)."""
    kind = str(cfg.get("tokenizer", "bpe"))
    if kind not in ("bpe", "sentencepiece", "wordpiece"):
        raise ValueError(f"tokenizer={kind!r}: expected bpe (BioGPT's Moses + fastBPE), sentencepiece (Llama) or "
                         "wordpiece (encoders)")
    if kind != "wordpiece":
        return None
    wp = OmegaConf.to_container(cfg.wordpiece, resolve=True)
    vocab = None if cfg.vocab is None else str(resolve_path(cfg.vocab, fallback_to_repo=True))
    return {**wp, "vocab": vocab, "blocks": OmegaConf.to_container(cfg.blocks, resolve=True)}


def _run_qa(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    """dataset=bioasq|squad (data_prep/qa_tasks.py): SQuAD-format splits + vocab.txt for the encoders."""
    from data_prep import encoder_corpus, qa_tasks

    name = dataset_name(cfg)
    enc = _encoder_options(cfg)
    if enc is None:
        raise ValueError(f"dataset={name} prepares encoder data: give tokenizer=wordpiece with vocab=VOCAB.txt "
                         "(e.g. the checkpoint's) or wordpiece.train=true")
    vocab = enc["vocab"]
    if enc.get("train"):
        out_dir.mkdir(parents=True, exist_ok=True)
        vocab = encoder_corpus.train_vocab(qa_tasks.task_texts(name, raw_dir), out_dir,
                                           vocab_size=int(enc["vocab_size"]), lowercase=bool(enc["lowercase"]),
                                           min_frequency=int(enc.get("min_frequency", 2)))
    if not vocab or not Path(vocab).is_file():
        raise ValueError(f"tokenizer=wordpiece: vocab={vocab} is not a file; give the checkpoint's vocab.txt")
    from biogpt_train.data.wordpiece import read_vocab_txt
    from biogpt_train.utils import sha256_file

    read_vocab_txt(vocab)  # a clear error for a file that is not a BERT vocab.txt
    settings = {"kind": "wordpiece", "vocab": str(vocab), "vocab_sha256": sha256_file(vocab),
                "lowercase": bool(enc["lowercase"])}
    return qa_tasks.build(name, raw_dir, out_dir, Path(vocab), dataset_options(cfg), settings)


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


def _run_synthetic(cfg: DictConfig, raw_dir: Path, out_dir: Path) -> dict:
    from data_prep import synthetic

    return synthetic.run(raw_dir, out_dir, **dataset_options(cfg))


DATASETS: dict[str, Callable[[DictConfig, Path, Path], dict]] = {
    "pubmed": _run_pubmed,
    "synthetic": _run_synthetic,
    **{name: _run_task for name in TASK_DATASETS},
    "bioasq": _run_qa,
    "squad": _run_qa,
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
