"""Extractive QA task preparation for the encoders: `python -m data_prep dataset=bioasq|squad raw_dir=DIR
out_dir=DIR tokenizer=wordpiece vocab=VOCAB.txt` (or `wordpiece.train=true` to learn a vocabulary on the task text).

out_dir gets ``{train,valid,test}.json`` in SQuAD format (the files the trainer and the QA evaluation read; features
are made from them at load time, biogpt_train/data/encoder_data.py), ``vocab.txt`` and ``manifest.json`` (last,
with ``settings.tokenizer`` = {kind: wordpiece, ...}).

- bioasq (conf/data_prep/dataset/bioasq.yaml): BioBERT's SQuAD-format BioASQ files (../shared/data/BioASQ).
  train.json = the training file minus a held-out valid.json: ``dev_fraction`` of the *questions* (all snippets of
  a question stay on one side; seeded by ``dev_seed``), because the shipped test file has no answers; test.json =
  the test file as is (inputs only: score it with evaluation.gold=<BioASQ golden files>). A raw file in BioASQ's
  own JSON (``{"questions": [...]}``) is converted with data_prep/tasks/bioasq.bioasq_to_squad first.
- squad: ``train-v2.0.json`` / ``dev-v2.0.json`` (or v1.1) -> train.json / valid.json.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from biogpt_train.utils import atomic_write

FILES = {
    "bioasq": {"train": ["BioASQ-train-factoid-7b.json", "train.json"],
               "test": ["BioASQ-test-factoid-7b.json", "test.json"]},
    "squad": {"train": ["train-v2.0.json", "train-v1.1.json", "train.json"],
              "valid": ["dev-v2.0.json", "dev-v1.1.json", "dev.json", "valid.json"]},
}


def _pick(raw_dir: Path, names) -> Optional[Path]:
    return next((raw_dir / n for n in names if (raw_dir / n).is_file()), None)


def _load_squad(path: Path) -> dict:
    from data_prep.tasks.bioasq import bioasq_to_squad
    from data_prep.tasks.common import read_json

    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("questions"), list):  # BioASQ's own format
        return bioasq_to_squad(data, path)
    return data


def split_by_question(data: dict, fraction: float, seed: int, key=lambda qid: qid.rpartition("_")[0] or qid):
    """(train, held-out) SQuAD dicts; a question's snippets (ids ``<question>_<k>``) stay together."""
    qids = sorted({key(qa["id"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]})
    held = set(random.Random(seed).sample(qids, int(round(fraction * len(qids))))) if fraction > 0 else set()

    def part(keep_held: bool) -> dict:
        paragraphs = []
        for a in data["data"]:
            for p in a["paragraphs"]:
                qas = [qa for qa in p["qas"] if (key(qa["id"]) in held) == keep_held]
                if qas:
                    paragraphs.append({**p, "qas": qas})
        return {"version": data.get("version", ""), "data": [{"title": "split", "paragraphs": paragraphs}]}

    return part(False), part(True), len(held), len(qids)


def _count(data: dict) -> dict:
    qas = [qa for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    return {"items": len(qas), "answered": sum(1 for qa in qas if qa.get("answers"))}


def build(name: str, raw_dir: Path, out_dir: Path, vocab_txt: Path, options: Mapping[str, Any],
          tokenizer_settings: Mapping[str, Any]) -> dict:
    from data_prep.manifest import write_manifest

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {split: _pick(raw_dir, names) for split, names in FILES[name].items()}
    if files["train"] is None:
        raise FileNotFoundError(f"{raw_dir}: no training file (looked for {FILES[name]['train']})")
    splits = {"train": _load_squad(files["train"])}
    summary: dict[str, Any] = {"dataset": name, "raw_dir": str(raw_dir), "out_dir": str(out_dir), "splits": {}}
    if name == "bioasq":
        frac, seed = float(options.get("dev_fraction", 0.1)), int(options.get("dev_seed", 1))
        splits["train"], splits["valid"], n_held, n_q = split_by_question(splits["train"], frac, seed)
        summary["valid_questions"], summary["train_questions"] = n_held, n_q - n_held
        if files.get("test") is not None:
            splits["test"] = _load_squad(files["test"])
    elif files.get("valid") is not None:
        splits["valid"] = _load_squad(files["valid"])
    outputs = []
    for split, data in splits.items():
        path = out_dir / f"{split}.json"
        atomic_write(path, json.dumps(data, ensure_ascii=False) + "\n")
        outputs.append(path)
        src = files.get(split) or files["train"]
        summary["splits"][split] = {**_count(data), "source_file": src.name}
    if Path(vocab_txt).resolve() != (out_dir / "vocab.txt").resolve():
        shutil.copyfile(vocab_txt, out_dir / "vocab.txt")
    outputs.append(out_dir / "vocab.txt")
    write_manifest(out_dir, summary, outputs, settings={"options": dict(options), "tokenizer": dict(tokenizer_settings)})
    print(json.dumps(summary, indent=1), flush=True)
    return summary


def task_texts(name: str, raw_dir: Path):
    """Questions and contexts of the training file (to learn a WordPiece vocabulary on)."""
    path = _pick(Path(raw_dir), FILES[name]["train"])
    if path is None:
        raise FileNotFoundError(f"{raw_dir}: no training file (looked for {FILES[name]['train']})")
    for a in _load_squad(path)["data"]:
        for p in a["paragraphs"]:
            yield p["context"]
            for qa in p["qas"]:
                yield qa["question"]
