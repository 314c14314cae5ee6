"""WordPiece ids equal transformers' BertTokenizerFast; a vocab trained here on the shipped pretraining corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biogpt_train.data.wordpiece import VocabError, WordPieceTokenizer, read_vocab_txt, train_wordpiece
from tests.conftest import SHARED_DATA, require_shared

TRICKY = [
    "", "   ", "Hello, World!", "BRCA1-mutated p53(+/-) cells were 3.5-fold higher (P<0.05).",
    "naïve Ünïcode café résumé", "中文 mixed with English", "zero\u200bwidth and\u00a0nbsp\ttab\nnewline",
    "IL-6/STAT3 signalling in TNF-α–treated cells", "[MASK] stays whole, [cls] does not", "a" * 150 + " long",
    "control\x00chars\x07here", "emoji 🧬 and math ≥ ≤ ±",
]


def hf_tokenizer(vocab_dir: Path, lowercase=True):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(vocab_dir), do_lower_case=lowercase)


def corpus_texts():
    root = require_shared("pretrain_corpus")
    yield from (root / "sy-wada" / "PubMedAbstract_1MB.dedup.txt").read_text(encoding="utf-8").splitlines()
    with open(root / "ohsumed" / "ohsumed_abstracts.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            yield r["title"] + " " + r["abstract"]


@pytest.fixture(scope="module")
def trained_vocab(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece(corpus_texts(), out, vocab_size=8000)  # ~5 s on the 11 MB corpus
    return out


@pytest.fixture
def small_vocab(tmp_path) -> Path:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cell", "##s", "p", "##53", "brca", "##1", "-",
             "(", ")", ",", ".", "!", "hello", "world", "na", "##ive", "cafe", "中", "文", "a", "##a"]
    (tmp_path / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("lowercase", [True, False])
def test_small_vocab_matches_transformers(small_vocab, lowercase):
    ours, ref = WordPieceTokenizer(small_vocab / "vocab.txt", lowercase=lowercase), hf_tokenizer(small_vocab, lowercase)
    for text in TRICKY + ["The cells, p53 BRCA1 hello world!"]:
        assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 1, 2, 3, 4)
    assert ours.prefix_token_id == ours.cls_id and len(ours) == ours.vocab_size == 27


def test_offsets_and_decode(small_vocab):
    tok = WordPieceTokenizer(small_vocab / "vocab.txt")
    text = "The  cells (p53)."
    ids, offsets = tok.encode_with_offsets(text)
    assert [text[a:b] for a, b in offsets] == ["The", "cell", "s", "(", "p", "53", ")", "."]
    assert ids == tok.encode(text)
    assert tok.decode(ids) == "the cells ( p53 )."
    assert tok.decode([tok.cls_id] + ids + [tok.sep_id], skip_special_tokens=False).startswith("[CLS] the")


def test_bad_vocab_files(tmp_path):
    cases = {"empty.txt": "", "no_specials.txt": "the\ncell\n", "dup.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nthe\n",
             "blank_line.txt": "[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n"}
    messages = {"empty.txt": "empty file", "no_specials.txt": r"missing special tokens \['\[PAD\]', '\[UNK\]'",
                "dup.txt": "dup.txt:6: token 'the' repeats line 5", "blank_line.txt": "blank_line.txt:3: empty line"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(VocabError, match=messages[name]):
            read_vocab_txt(tmp_path / name)
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(VocabError, match="not valid UTF-8"):
        WordPieceTokenizer(tmp_path / "latin1.txt")
    with pytest.raises(FileNotFoundError, match="WordPiece vocab not found"):
        WordPieceTokenizer(tmp_path / "missing.txt")


def test_train_wordpiece_from_files(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("the cell cells cellular\n" * 50 + "p53 protein proteins\n" * 50, encoding="utf-8")
    vocab = train_wordpiece([src], tmp_path / "out", vocab_size=60, min_frequency=1)
    lines = vocab.read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(lines) <= 60
    tok = WordPieceTokenizer(vocab)
    assert tok.encode("cells p53") == hf_tokenizer(tmp_path / "out")("cells p53", add_special_tokens=False)["input_ids"]
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.shared_data
def test_trained_vocab_on_pretrain_corpus(trained_vocab):
    tok = WordPieceTokenizer(trained_vocab / "vocab.txt")
    assert 7000 < len(tok) <= 8000
    ref = hf_tokenizer(trained_vocab)
    for text in TRICKY:
        assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    assert tok.unk_id not in tok.encode("Tumor necrosis factor alpha induces apoptosis in hepatocytes.")


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def every_shared_text():
    """Every text in ../shared/data: JSON/JSONL string values (keys too), lines of every other text file."""
    texts = []
    for path in sorted(require_shared().rglob("*")):
        if not path.is_file() or path.name.endswith((".gz", ".tar", ".zip")):
            continue
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if path.suffix == ".json":
            texts.extend(_strings(json.loads(raw)))
        elif path.suffix == ".jsonl":
            for line in raw.splitlines():
                texts.extend(_strings(json.loads(line)) if line.strip() else [])
        else:
            texts.extend(raw.splitlines())
    return texts


FULL_TEXT_EVERY = 10  # whole-text comparison on every 10th unique text (all 393k take ~1.5 min on 2 cores)


def _compare(tok, ref, texts):
    ours = tok.encode_batch(texts)
    theirs = ref(texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, e.g. {bad[0][:200]!r}"


@pytest.mark.slow
@pytest.mark.shared_data
def test_every_shared_text_matches_transformers(trained_vocab):
    """Every word of every text in ../shared/data (unique words, 1000 per line: BERT's pre-tokenizer splits at
    whitespace anyway), then whole texts (normalizer + pre-tokenizer + WordPiece) on every 10th unique text."""
    texts = list(dict.fromkeys(every_shared_text()))
    assert len(texts) > 100_000
    words = sorted({w for t in texts for w in t.split()})
    tok, ref = WordPieceTokenizer(trained_vocab / "vocab.txt"), hf_tokenizer(trained_vocab)
    _compare(tok, ref, [" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000)])
    _compare(tok, ref, texts[::FULL_TEXT_EVERY])
    assert SHARED_DATA.exists()
