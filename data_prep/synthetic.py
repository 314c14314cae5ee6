"""A synthetic LM corpus for throughput runs: uniformly random ids over a real dictionary's symbols.

`python -m data_prep dataset=synthetic raw_dir=DIR_WITH_DICT_TXT out_dir=OUT` writes OUT/dict.txt (a copy of
raw_dir/dict.txt, e.g. BioGPT's 42,384-entry one), train/valid .bin/.idx of documents of `doc_tokens` random
non-special ids plus </s>, and manifest.json, so the trainer sees exactly the shapes of a real prepared corpus
(same vocabulary, same blocks) without any tokenisation. The numbers it trains to are meaningless; the speed is not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from biogpt_train.data.dictionary import Dictionary
from biogpt_train.data.indexed_dataset import write_dataset
from data_prep.manifest import write_manifest


def run(raw_dir: Path, out_dir: Path, *, train_tokens: int = 1 << 20, valid_tokens: int = 1 << 14,
        doc_tokens: int = 1023, seed: int = 0) -> dict:
    src = Path(raw_dir) / "dict.txt"
    if not src.is_file():
        raise ValueError(f"dataset=synthetic takes its vocabulary from raw_dir/dict.txt: {src} not found; set "
                         "raw_dir to a tokenizer directory (e.g. ../shared/data/tokenizer/BioGPT)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / "dict.txt")
    d = Dictionary.load(out_dir / "dict.txt")
    first = d.nspecial  # ids below are <s>, <pad>, </s>, <unk>
    rng = np.random.default_rng(seed)
    counts = {}
    for split, total in (("train", train_tokens), ("valid", valid_tokens)):
        ndocs = max(1, total // (doc_tokens + 1))
        docs = [rng.integers(first, len(d), size=doc_tokens).tolist() + [d.eos()] for _ in range(ndocs)]
        write_dataset(out_dir / split, docs, len(d))
        counts[f"{split}_docs"], counts[f"{split}_tokens"] = ndocs, ndocs * (doc_tokens + 1)
    summary = {"dataset": "synthetic", **counts,
               "options": {"train_tokens": train_tokens, "valid_tokens": valid_tokens, "doc_tokens": doc_tokens,
                           "seed": seed}}
    outputs = [out_dir / f"{s}.{ext}" for s in ("train", "valid") for ext in ("bin", "idx")]
    write_manifest(out_dir, summary, outputs, inputs=[src])
    return summary
