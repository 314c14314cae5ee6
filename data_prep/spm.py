"""SentencePiece tokenization for data_prep (`tokenizer=sentencepiece`): Llama-family prepared directories.

`SpmTextEncoder(model_file, bos=...)` is what `data_prep.binarize.Encoder` needs from a tokenizer
(`encode_batch`, `dictionary` with `eos()`, `unk()`, `len`), with ids from `SentencePieceTokenizer` (equal to
transformers' LlamaTokenizer). `binarize.encode_texts` appends `</s>` (id 2) to every item, as fairseq does for
BioGPT; with `bos=True` (pretraining documents) each item also starts with `<s>` (id 1), so a document is
`<s> text </s>`, the way Llama reads a text (biogpt_train/data/vocab.py explains the choice). Task sources and
targets are halves of one sequence: no `<s>` (the prompt dataset starts the sequence with it).

A prepared directory holds a copy of the model as `tokenizer.model` (instead of dict.txt + bpecodes); the `.bin`
dtype follows the vocabulary size (`best_fitting_int_dtype`: uint16 up to 65,499 pieces, else uint32 — fairseq
0.12's rule; the `.idx` header records the dtype code, so readers need nothing else).

`learn_sentencepiece` (`spm.train=true`) trains a model on the kept documents of the input corpus first, into
out_dir/tokenizer.model, reused when out_dir/spm_train.json matches the inputs and settings (like bpe.learn). Its
settings are Llama's (`train_sentencepiece`), plus "..." as one piece (Llama-2's vocabulary has it): the
fine-tuning datasets mark truncation with that id.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

from biogpt_train.data.vocab import TOKENIZER_FILE, TokenizerVocab

log = logging.getLogger("data_prep.spm")

KINDS = ("bpe", "sentencepiece")


class SpmTextEncoder:
    """SentencePiece ids of texts, optionally after `<s>`; picklable for worker processes."""

    def __init__(self, model_file, bos: bool = False):
        self.model_file = Path(model_file)
        self.bos = bool(bos)
        self.dictionary = TokenizerVocab.load(self.model_file)

    def encode_batch(self, texts: Iterable[str]) -> List[List[int]]:
        tok = self.dictionary.tokenizer
        head = [tok.bos_id] if self.bos else []
        return [head + tok.encode(t) for t in texts]

    def __len__(self) -> int:
        return len(self.dictionary)

    def unk_warning(self, unk: int, total: int, where: str, threshold: float = 0.05) -> Optional[str]:
        """A log line when more than `threshold` of `total` tokens are <unk> (else None): a model without byte
        fallback that does not cover the corpus' characters."""
        if total <= 0 or unk / total <= threshold:
            return None
        return (f"{where}: {unk} of {total} tokens ({100.0 * unk / total:.1f}%) encode to <unk> with "
                f"{self.model_file}: the SentencePiece model does not cover this text (no byte fallback?)")


@dataclass
class SpmOptions:
    """`spm.*` of conf/data_prep/config.yaml."""

    train: bool = False
    vocab_size: int = 32000
    model_type: str = "bpe"
    character_coverage: float = 0.99995
    max_docs: Optional[int] = None
    train_only: bool = False

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "SpmOptions":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown spm option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def check_kind(kind: str) -> str:
    kind = str(kind)
    if kind not in KINDS:
        raise ValueError(f"tokenizer={kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def model_file(path) -> Path:
    """`tokenizer_model=PATH`: a tokenizer.model file, or a directory holding one (an HF Llama directory)."""
    from data_prep.pubmed import DataPrepError

    if path is None or str(path) in ("", "None"):
        raise DataPrepError("tokenizer=sentencepiece needs tokenizer_model=PATH (a tokenizer.model, e.g. Llama-2's) "
                            "or spm.train=true to train one on the input corpus")
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_FILE
    if not p.is_file():
        raise DataPrepError(f"tokenizer_model {path}: no such SentencePiece model file")
    return p


def tokenizer_entry(model: Path) -> dict:
    """The manifest's record of the tokenizer the ids refer to."""
    from biogpt_train.utils import sha256_file

    vocab = TokenizerVocab.load(model)
    return {"kind": "sentencepiece", "path": str(Path(model).resolve()), "sha256": sha256_file(model),
            "vocab_size": len(vocab), "bos": vocab.bos(), "eos": vocab.eos(), "pad": vocab.pad(), "unk": vocab.unk()}


def learn_sentencepiece(inputs: list[Path], out_dir: Path, opts, spm: SpmOptions, progress: bool = False) -> Path:
    """spm.train=true: train out_dir/tokenizer.model on the kept documents (Llama-style settings,
    `train_sentencepiece`); reused when out_dir/spm_train.json matches the inputs and settings."""
    from biogpt_train.data.sentencepiece_tokenizer import train_sentencepiece
    from biogpt_train.utils import atomic_write
    from data_prep.pubmed import DataPrepError, _input_stat, iter_documents

    model, meta_path = out_dir / TOKENIZER_FILE, out_dir / "spm_train.json"
    settings = {k: v for k, v in asdict(spm).items() if k != "train_only"}
    fingerprint = {"inputs": [{k: v for k, v in _input_stat(p).items() if k != "path"} for p in inputs],
                   "text": opts.text_settings(), "spm": settings}
    if meta_path.exists() and model.exists():
        if json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
            log.info("reusing the trained SentencePiece model in %s", out_dir)
            return model
    meta_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    counts: Counter = Counter()
    docs = (text for p in inputs for _, text in iter_documents(p, opts, counts, []))
    if spm.max_docs:
        docs = itertools.islice(docs, int(spm.max_docs))
    first = next(docs, None)
    if first is None:
        raise DataPrepError(f"spm.train: no documents to learn from in {len(inputs)} input file(s)")
    try:
        # "..." as one piece: the fine-tuning datasets mark a truncated source/target with it (vocab.py's index)
        train_sentencepiece(itertools.chain([first], docs), out_dir / "tokenizer", spm.vocab_size,
                            model_type=spm.model_type, character_coverage=spm.character_coverage,
                            user_defined_symbols=["..."])
    except RuntimeError as err:  # e.g. "Vocabulary size is too high" for a small corpus
        raise DataPrepError(f"spm.train: SentencePiece training failed: {str(err).strip().splitlines()[-1]}") from None
    (out_dir / "tokenizer.vocab").unlink(missing_ok=True)  # the .model holds everything
    meta = {"fingerprint": fingerprint, "docs": int(counts["kept"]), "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
    log.info("trained a %d-piece SentencePiece model on %d documents in %.1fs", spm.vocab_size, meta["docs"],
             meta["seconds"])
    return model
