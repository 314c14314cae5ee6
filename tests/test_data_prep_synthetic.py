"""data_prep dataset=synthetic: random ids over a real dictionary, shaped like a prepared LM corpus."""

import json

import pytest

from biogpt_train.data.indexed_dataset import MMapIndexedDataset
from data_prep import synthetic
from tests.helpers import write_dict


def test_synthetic_corpus_uses_the_dictionary_and_writes_a_manifest(tmp_path):
    (tmp_path / "vocab").mkdir()
    write_dict(tmp_path / "vocab" / "dict.txt", ["a", "b", "c"])
    out = tmp_path / "out"
    summary = synthetic.run(tmp_path / "vocab", out, train_tokens=40, valid_tokens=10, doc_tokens=4, seed=1)
    assert (out / "dict.txt").read_text() == (tmp_path / "vocab" / "dict.txt").read_text()
    train = MMapIndexedDataset(out / "train")
    assert len(train) == summary["train_docs"] == 8
    for i in range(len(train)):
        doc = train[i].tolist()
        assert len(doc) == 5 and doc[-1] == 2 and all(4 <= t < 7 for t in doc[:-1])  # no specials but </s>
    assert json.loads((out / "manifest.json").read_text())["dataset"] == "synthetic"
    again = tmp_path / "again"
    synthetic.run(tmp_path / "vocab", again, train_tokens=40, valid_tokens=10, doc_tokens=4, seed=1)
    assert (again / "train.bin").read_bytes() == (out / "train.bin").read_bytes()  # seeded


def test_missing_dictionary_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="raw_dir/dict.txt"):
        synthetic.run(tmp_path, tmp_path / "out")
