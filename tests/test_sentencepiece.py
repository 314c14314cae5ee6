"""SentencePieceTokenizer: ids equal transformers' LlamaTokenizer built from the same tokenizer.model, on every text
of the shared data; special ids, decoding, errors, training."""

from __future__ import annotations

import json
import pickle
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from biogpt_train.data.sentencepiece_tokenizer import (
    SentencePieceModelError, SentencePieceTokenizer, train_sentencepiece,
)
from tests.conftest import SHARED_DATA, require_shared

transformers = pytest.importorskip("transformers")

CORNER_CASES = [
    "", " ", "  two leading spaces", "a  b   c", "trailing ", "\n", "tab\there\nnew line", "▁already prefixed",
    "<s>abc</s> x <unk>y", "hello<s>", "</s>", "naïve café 10.5 µg ½ ﬁ ＡＢＣ", "日本語 😀", "\u00a0nbsp", "12345.678",
]


def corpus_texts():
    """Titles and abstracts of the shipped pretraining corpus (the SP training data)."""
    root = require_shared("pretrain_corpus")
    with open(root / "ohsumed" / "ohsumed_abstracts.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            yield r["title"]
            yield r["abstract"]
    with open(root / "sy-wada" / "PubMedAbstract_1MB.dedup.txt", encoding="utf-8") as f:
        yield from (line.rstrip("\n") for line in f)


def _json(rel):
    return json.loads((SHARED_DATA / rel).read_text(encoding="utf-8"))


def all_texts():
    """Every text of the shared data: the corpus, PubMed XML titles/abstracts (raw, whitespace kept), task texts."""
    yield from corpus_texts()
    for xml in sorted((SHARED_DATA / "pubmed_xml").rglob("*.xml")):
        for elem in ET.parse(xml).iter():
            if elem.tag in ("ArticleTitle", "AbstractText"):
                yield "".join(elem.itertext())
    for rel in ("PubMedQA/pqal_trainval.json", "PubMedQA/test_set_inputs.json"):
        for r in _json(rel).values():
            yield r["QUESTION"]
            yield from r["CONTEXTS"]
            if "LONG_ANSWER" in r:
                yield r["LONG_ANSWER"]
    for rel in ("BC5CDR/raw/train.json", "BC5CDR/raw/valid.json", "BC5CDR/raw/test_inputs.json",
                "KD-DTI/raw/valid.json", "KD-DTI/raw/test_inputs.json"):
        for r in _json(rel).values():
            yield r["title"]
            yield r["abstract"]
    for rel in ("DDI/raw/train.json", "DDI/raw/valid.json", "DDI/raw/test_inputs.json"):
        yield from (r["abstract"] for r in _json(rel).values())
    for line in (SHARED_DATA / "HoC/raw/train.tsv").read_text(encoding="utf-8").splitlines():
        yield line.split("\t")[0]
    yield from (SHARED_DATA / "HoC/raw/test_inputs.txt").read_text(encoding="utf-8").splitlines()
    for rel in ("BioASQ/BioASQ-train-factoid-7b.json", "BioASQ/BioASQ-test-factoid-7b.json"):
        for doc in _json(rel)["data"]:
            for para in doc["paragraphs"]:
                yield para["context"]
                yield from (qa["question"] for qa in para["qas"])


def hf_tokenizers(model_file: Path, tmp: Path):
    """transformers' Llama tokenizer from a bare tokenizer.model, directly and through AutoTokenizer with the
    tokenizer_config.json a Llama repository has."""
    a, b = tmp / "plain", tmp / "auto"
    for d in (a, b):
        d.mkdir()
        shutil.copyfile(model_file, d / "tokenizer.model")
    (b / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    return [transformers.LlamaTokenizer.from_pretrained(a), transformers.AutoTokenizer.from_pretrained(b)]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    require_shared("pretrain_corpus", "ohsumed", "ohsumed_abstracts.jsonl")
    require_shared("pretrain_corpus", "sy-wada", "PubMedAbstract_1MB.dedup.txt")
    out = tmp_path_factory.mktemp("sp")
    return train_sentencepiece(corpus_texts(), out / "bio", vocab_size=4000)


@pytest.fixture(scope="module")
def hf_pair(sp_model, tmp_path_factory):
    return hf_tokenizers(sp_model, tmp_path_factory.mktemp("hf"))


@pytest.mark.shared_data
def test_training_output_and_special_ids(sp_model):
    assert sp_model.name == "bio.model" and sp_model.with_suffix(".vocab").is_file()
    assert sorted(p.name for p in sp_model.parent.iterdir()) == ["bio.model", "bio.vocab"]  # no tmp left
    tok = SentencePieceTokenizer(sp_model)
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, tok.prefix_token_id) == (0, 1, 2, 0, 1)
    assert tok.vocab_size == len(tok) == 4000
    assert [tok.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert tok.id_to_piece(3) == "<0x00>"  # byte fallback pieces
    assert all(tok.id_to_piece(i) not in "0123456789" or len(tok.id_to_piece(i)) == 1 for i in range(len(tok)))
    assert [tok.id_to_piece(i) for i in tok.encode("2024")] == ["▁", "2", "0", "2", "4"]  # split_digits


@pytest.mark.shared_data
def test_corner_cases_match_transformers(sp_model, hf_pair):
    tok = SentencePieceTokenizer(sp_model)
    for text in CORNER_CASES:
        ids = tok.encode(text)
        for hf in hf_pair:
            assert ids == hf.encode(text, add_special_tokens=False), text
        assert tok.decode(ids) == hf_pair[0].decode(ids, skip_special_tokens=True), text
    assert tok.encode("</s>") == [tok.eos_id] and tok.encode("") == []


@pytest.mark.slow
@pytest.mark.shared_data
def test_every_shared_text_matches_transformers(sp_model, hf_pair):
    """~53k texts, 22 MB: about 40 s on a busy 2-core CPU (the AutoTokenizer route builds the same pipeline and is
    checked on the corner cases only)."""
    require_shared("pubmed_xml")
    texts = list(all_texts())
    assert len(texts) > 50_000
    tok = SentencePieceTokenizer(sp_model)
    ours = tok.encode_batch(texts)
    theirs = hf_pair[0](texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, e.g. {bad[0][:80]!r}"
    sample = ours[::10]
    assert [tok.decode(ids) for ids in sample] == hf_pair[0].batch_decode(sample, skip_special_tokens=True)


def test_nfkc_model_matches_transformers_too(tmp_path):
    """A model trained with SentencePiece's defaults (nmt_nfkc, whitespace collapsing): transformers' Llama
    tokenizer ignores the model's normaliser, and so do we."""
    texts = ["Serum ﬁbrinogen was ＡＢＣ   mg/dl in 12 patients.", "naïve  café", "µg of drug"] * 50
    model = train_sentencepiece(iter(texts), tmp_path / "nfkc", vocab_size=300, normalization_rule_name="nmt_nfkc",
                                remove_extra_whitespaces=True)
    tok = SentencePieceTokenizer(model)
    import sentencepiece as spm

    plain = spm.SentencePieceProcessor(model_file=str(model))
    assert plain.encode(texts[0]) != tok.encode(texts[0])  # the model's own normaliser would change the ids
    for hf in hf_tokenizers(model, tmp_path):
        for text in texts[:3] + CORNER_CASES:
            assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text


def test_train_from_files(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"protein {i} binds receptor kinase {i % 7}" for i in range(300)), encoding="utf-8")
    model = train_sentencepiece(corpus, tmp_path / "out" / "m", vocab_size=300)
    tok = SentencePieceTokenizer(model)
    assert tok.decode(tok.encode("protein 12 binds receptor")) == "protein 12 binds receptor"
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        train_sentencepiece([tmp_path / "missing.txt"], tmp_path / "x", vocab_size=300)


@pytest.mark.shared_data
def test_pickle_round_trip(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    copy = pickle.loads(pickle.dumps(tok))
    text = "Cisplatin-induced nephrotoxicity in 42 rats."
    assert copy.encode(text) == tok.encode(text) and copy.eos_id == 2


def test_bad_model_file(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_text("#version: 0.2\nt h\n", encoding="utf-8")
    with pytest.raises(SentencePieceModelError, match=r"tokenizer\.model is not a SentencePiece model"):
        SentencePieceTokenizer(bad)
    with pytest.raises(SentencePieceModelError, match="cannot read SentencePiece model"):
        SentencePieceTokenizer(tmp_path / "absent.model")
