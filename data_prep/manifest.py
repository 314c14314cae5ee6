"""`manifest.json`: what a prepared directory was made from and what it holds (written last, atomically).

    write_manifest(out_dir, summary, outputs, *, inputs=(), settings=None, dictionary=None, tokenizer=None) -> Path

- `summary`: the builder's counts (any JSON-able dict);
- `outputs`: files written (paths; recorded relative to out_dir with size and sha256);
- `inputs`: raw files (paths, or dicts already holding "path"/"bytes"/"sha256" so big inputs are not hashed twice).
  When empty, `summary["raw_dir"]` + `summary["splits"][*]["source_file"]` (the task builders' summary) are used;
- `settings`: the options that shaped the output (config values);
- `dictionary`: the dict.txt the ids refer to (path + sha256 + size); defaults to out_dir/dict.txt when present;
- `tokenizer`: what kind of tokenizer made the ids (`{"kind": "bpe"}`, or data_prep.spm.tokenizer_entry's
  `{"kind": "sentencepiece", "path", "sha256", "vocab_size", ...}`, which has no dict.txt).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from biogpt_train.utils import atomic_write, sha256_file

FORMAT = "biogpt_train.data_prep.manifest/1"


def file_entry(path: Union[str, Path], root: Optional[Path] = None) -> dict[str, Any]:
    path = Path(path)
    shown = path
    if root is not None:
        try:
            shown = path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            shown = path.resolve()
    return {"path": str(shown), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def dictionary_entry(path: Union[str, Path]) -> dict[str, Any]:
    path = Path(path)
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)
    # fairseq adds 4 specials (<s> <pad> </s> <unk>) in front of dict.txt's lines
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "lines": lines, "vocab_size": lines + 4}


def _task_inputs(summary: Mapping[str, Any]) -> list[Path]:
    raw = summary.get("raw_dir")
    splits = summary.get("splits")
    if not raw or not isinstance(splits, Mapping):
        return []
    found = []
    for info in splits.values():
        name = info.get("source_file") if isinstance(info, Mapping) else None
        if name and (Path(raw) / name).is_file():
            found.append(Path(raw) / name)
    return sorted(set(found))


def _software() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "sacremoses", "hydra", "omegaconf"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            versions[mod] = m.__version__
    return versions


def write_manifest(out_dir: Union[str, Path], summary: Mapping[str, Any], outputs: Iterable = (), *,
                   inputs: Iterable = (), settings: Optional[Mapping[str, Any]] = None,
                   dictionary: Union[str, Path, None] = None, tokenizer: Optional[Mapping[str, Any]] = None) -> Path:
    out_dir = Path(out_dir)
    inputs = list(inputs) or _task_inputs(summary)
    input_entries = [dict(i) if isinstance(i, Mapping) else file_entry(i) for i in inputs]
    sentencepiece = tokenizer is not None and tokenizer.get("kind") == "sentencepiece"
    if dictionary is None and not sentencepiece and (out_dir / "dict.txt").is_file():
        dictionary = out_dir / "dict.txt"
    manifest = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": summary.get("dataset") or summary.get("task"),
        "inputs": input_entries,
        "settings": dict(settings) if settings is not None else summary.get("options", {}),
        "counts": dict(summary),
        "dictionary": dictionary_entry(dictionary) if dictionary is not None else None,
        "tokenizer": dict(tokenizer) if tokenizer is not None else ({"kind": "bpe"} if dictionary else None),
        "outputs": [file_entry(p, out_dir) for p in sorted({Path(p) for p in outputs})],
        "software": _software(),
    }
    path = out_dir / "manifest.json"
    atomic_write(path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def read_manifest(out_dir: Union[str, Path]) -> dict[str, Any]:
    path = Path(out_dir) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {out_dir} was not (completely) prepared") from None
