"""The prepared ``{split}.x/.y/.pmid`` files as a ``datasets.DatasetDict`` (columns id, source, target).

``load_prepared(out_dir)`` reads local files only (the "text" builder splits on \\n, \\r\\n and \\r, which the
writers guarantee never occur inside an example). Input-only splits have no ``target`` column.

``HUB_NAMES`` lists where the same corpora live on the Hugging Face Hub, for users with internet access. Those are
the corpora's own formats (BigBIO schemas, PubMedQA's fields), not BioGPT's source/target text: feed them to the
builders only after converting them to the raw layouts the builders read.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.tasks.common import SPLITS, DataError

HUB_NAMES = {
    # task: (hub dataset id, config name or None)
    "bc5cdr": ("bigbio/bc5cdr", "bc5cdr_source"),
    "ddi": ("bigbio/ddi_corpus", "ddi_corpus_source"),
    "hoc": ("bigbio/hallmarks_of_cancer", "hallmarks_of_cancer_source"),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled"),
    # KD-DTI: no hub copy known (see ../shared/data/SOURCES.md §4)
}


def _column(path: Path, split: str, cache_dir) -> list[str]:
    from datasets import load_dataset

    ds = load_dataset("text", data_files={split: str(path)}, split=split, keep_linebreaks=False, cache_dir=cache_dir)
    return ds["text"]


def load_prepared(out_dir, splits=SPLITS, cache_dir=None):
    """DatasetDict {split: Dataset(id, source[, target])} from a prepared task directory.

    ``cache_dir`` is passed to ``load_dataset`` (default: the datasets library's cache)."""
    from datasets import Dataset, DatasetDict

    out_dir = Path(out_dir)
    result = {}
    for split in splits:
        x_path = out_dir / f"{split}.x"
        if not x_path.is_file():
            continue
        columns = {"id": _column(out_dir / f"{split}.pmid", split, cache_dir),
                   "source": _column(x_path, split, cache_dir)}
        if (out_dir / f"{split}.y").is_file():
            columns["target"] = _column(out_dir / f"{split}.y", split, cache_dir)
        lengths = {name: len(col) for name, col in columns.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{out_dir}: {split} files have different line counts {lengths}")
        result[split] = Dataset.from_dict(columns)
    if not result:
        raise DataError(f"{out_dir}: no prepared split ({', '.join(f'{s}.x' for s in splits)}) found")
    return DatasetDict(result)


def load_hub(task: str, **kwargs):
    """The corpus from the Hugging Face Hub (needs internet); see HUB_NAMES for what comes back."""
    from datasets import load_dataset

    if task not in HUB_NAMES:
        raise DataError(f"no hub copy known for {task!r}; known: {sorted(HUB_NAMES)}")
    name, config = HUB_NAMES[task]
    return load_dataset(name, config, **kwargs)
