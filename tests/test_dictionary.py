"""fairseq Dictionary semantics (framework-notes §2.2, reference §2.3)."""

import io
import pickle

import pytest

from biogpt_train.data.dictionary import Dictionary, count_words, post_process, tokenize_line
from conftest import require_shared

SMALL = "the 10\nof 5\nhel@@ 3\nhas space 2\n"


def _write(tmp_path, text, name="dict.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_specials_and_ids(tmp_path):
    d = Dictionary.load(_write(tmp_path, SMALL))
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.nspecial == 4 and len(d) == 8
    assert d.index("the") == 4 and d.index("of") == 5 and d.index("hel@@") == 6
    assert d.index("has space") == 7  # split on the LAST space
    assert d.count[4:] == [10, 5, 3, 2]
    assert d.index("nope") == 3 and "nope" not in d and "the" in d
    assert d[4] == "the" and d[999] == "<unk>"  # out of range -> unk word (fairseq)


def test_save_round_trip_small(tmp_path):
    p = _write(tmp_path, SMALL)
    d = Dictionary.load(p)
    out = tmp_path / "out.txt"
    d.save(out)
    assert out.read_bytes() == p.read_bytes()
    buf = io.StringIO()
    d.save(buf)
    assert buf.getvalue() == SMALL


def test_duplicate_names_file_and_line(tmp_path):
    p = _write(tmp_path, "a 3\nb 2\na 1\n")
    with pytest.raises(ValueError, match=r"dict\.txt:3: duplicate symbol 'a' \(first at id 4\)"):
        Dictionary.load(p)


def test_overwrite_flag(tmp_path):
    p = _write(tmp_path, "a 3\nb 2\na 1 #fairseq:overwrite\n")
    d = Dictionary.load(p)
    assert len(d) == 7 and d.index("a") == 6 and d.symbols[4] == "a" and d.count[6] == 1
    out = tmp_path / "o.txt"
    d.save(out)  # keeps the flag so the file loads back (fairseq would drop it)
    assert out.read_text() == "a 3\nb 2\na 1 #fairseq:overwrite\n"
    assert Dictionary.load(out) == d


@pytest.mark.parametrize("bad,line", [("a 3\nb\n", 2), ("a 3\nb x\n", 2), ("a 3\n\n", 2), ("x 1\ny 2 #fairseq:overwrite x\n", 2)])
def test_malformed_line_names_file_and_line(tmp_path, bad, line):
    p = _write(tmp_path, bad)
    with pytest.raises(ValueError, match=rf"dict\.txt:{line}: malformed dictionary line"):
        Dictionary.load(p)


def test_not_utf8(tmp_path):
    p = tmp_path / "dict.txt"
    p.write_bytes(b"\xff\xfe 1\n")
    with pytest.raises(ValueError, match=r"dict\.txt: not valid UTF-8"):
        Dictionary.load(p)


def test_add_symbol_and_encode_line(tmp_path):
    d = Dictionary.load(_write(tmp_path, SMALL))
    assert d.encode_line("the  of\tzzz\n") == [4, 5, 3, 2]
    assert d.encode_line("the of", append_eos=False) == [4, 5]
    assert d.encode_line("") == [2]  # an empty line is the document separator [2]
    assert len(d) == 8
    # BioGPT learned prompts: encode_line(..., append_eos=False, add_if_not_exist=True) appends symbols
    assert d.encode_line("learned1 learned2 ", append_eos=False, add_if_not_exist=True) == [8, 9]
    assert d.add_symbol("learned1") == 8 and d.count[8] == 2
    assert d.add_symbol("new", n=0) == 10


def test_string(tmp_path):
    d = Dictionary.load(_write(tmp_path, SMALL))
    assert d.string([0, 6, 4, 5, 2, 1, 1]) == "hel@@ the of"
    assert d.string([6, 4, 2], bpe_symbol="@@ ") == "helthe"
    assert d.string([6, 2], bpe_symbol="@@ ") == "hel"  # trailing "@@" removed too
    assert d.string([4, 3, 2], include_eos=True) == "the <unk> </s>"
    assert d.string([4, 3], escape_unk=True) == "the <<unk>>"
    assert d.string([4, 3], unk_string="UNK") == "the UNK"
    np = pytest.importorskip("numpy")
    assert d.string(np.array([[4, 5, 2], [5, 4, 1]])) == "the of\nof the"


def test_post_process():
    assert post_process("a@@ b c@@", "@@ ") == "ab c"
    assert post_process("a@@ b", "subword_nmt") == "ab"
    assert post_process("a@@ b", None) == "a@@ b"
    assert post_process("\u2581a b\u2581c", "sentencepiece") == "ab c"
    with pytest.raises(ValueError, match="unknown bpe_symbol"):
        post_process("x", "gpt2x")


def test_tokenize_line_unicode_whitespace():
    assert tokenize_line(" a\u00a0b \u2028c\t\n") == ["a", "b", "c"]


def test_finalize_sort_threshold_nwords_padding():
    d = Dictionary()
    for w, c in [("b", 5), ("a", 5), ("c", 9), ("z", 1), ("y", 2)]:
        d.add_symbol(w, c)
    d.finalize(padding_factor=8)
    # descending count, ties by symbol; padded to a multiple of 8
    assert d.symbols == ["<s>", "<pad>", "</s>", "<unk>", "c", "a", "b", "y", "z"] + [
        f"madeupword{i:04d}" for i in range(7)
    ]
    assert d.count[4:9] == [9, 5, 5, 2, 1] and d.count[9:] == [0] * 7
    assert d.index("a") == 5 and d.index("madeupword0006") == 15

    d = Dictionary()
    for w, c in [("b", 5), ("a", 5), ("c", 9), ("z", 1), ("y", 2)]:
        d.add_symbol(w, c)
    d.finalize(threshold=3, padding_factor=1)
    assert d.symbols[4:] == ["c", "a", "b"]

    d = Dictionary()
    for w, c in [("b", 5), ("a", 5), ("c", 9), ("z", 1), ("y", 2)]:
        d.add_symbol(w, c)
    d.finalize(nwords=6, padding_factor=4)  # nwords counts the specials
    assert d.symbols[4:] == ["c", "a", "madeupword0000", "madeupword0001"]


def test_build_from_corpus_like_fairseq_preprocess(tmp_path):
    lines = ["b a a", "", "c b a\n"]
    counts = count_words(lines)
    assert counts == {"a": 3, "b": 2, "c": 1, "</s>": 3}
    d = Dictionary.build(lines, padding_factor=8)
    assert d.symbols[4:7] == ["a", "b", "c"] and d.count[2] == 4  # </s> counted once per line (+1 initial)
    assert len(d) % 8 == 0
    out = tmp_path / "dict.txt"
    d.save(out)
    assert out.read_text().splitlines()[:4] == ["a 3", "b 2", "c 1", "madeupword0000 0"]
    corpus = _write(tmp_path, "\n".join(lines), "corpus.txt")
    assert Dictionary.build_from_files([corpus]) == d


def test_pickle(tmp_path):
    d = Dictionary.load(_write(tmp_path, SMALL))
    assert pickle.loads(pickle.dumps(d)) == d


@pytest.mark.parametrize(
    "vocab,size,lines,last",
    [("BioGPT", 42384, 42380, "madeupword0006"), ("BioGPT-Large", 57717, 57713, None)],
)
def test_biogpt_dicts_round_trip_byte_identical(tmp_path, vocab, size, lines, last):
    path = require_shared("tokenizer", vocab, "dict.txt")
    d = Dictionary.load(path)
    assert len(d) == size and len(d.symbols) - d.nspecial == lines
    assert d.index(".") == 4
    if last:
        assert d[size - 1] == last and d.index("madeupword0000") == 42377
    out = tmp_path / "dict.txt"
    d.save(out)
    assert out.read_bytes() == path.read_bytes()


def test_biogpt_base_dict_facts():
    d = Dictionary.load(require_shared("tokenizer", "BioGPT", "dict.txt"))
    assert d.index("...") == 11475
    assert d.symbols[4:12] == [".", "of", "the", ",", "and", "@-@", "in", ")"]
    assert d.index("The") != d.index("the")
    assert "learned" in d and "learned1" not in d
    assert sum(d.count[4:]) == 3929406433
    assert sum(s.endswith("@@") for s in d.symbols) == 11100
    # learned prompts get the ids the reference documents
    ids = d.encode_line(" ".join(f"learned{i}" for i in range(1, 10)) + " ", append_eos=False, add_if_not_exist=True)
    assert ids == list(range(42384, 42393))


def test_biogpt_large_dict_facts():
    d = Dictionary.load(require_shared("tokenizer", "BioGPT-Large", "dict.txt"))
    assert sum(d.count[4:]) == 10181887200
    assert len(d) % 8 != 0  # not padded; must not be padded further
    assert "FREETEXT" in d and "&lt;" in d


def test_save_is_atomic(tmp_path, monkeypatch):
    # A failure at the final rename must leave the old file intact and no temporary file behind.
    import biogpt_train.utils as utils

    p = _write(tmp_path, SMALL)
    d = Dictionary.load(p)
    d.add_symbol("new", 1)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        d.save(p)
    assert p.read_text() == SMALL
    assert [x.name for x in tmp_path.iterdir()] == ["dict.txt"]
    monkeypatch.undo()
    d.save(p)
    assert p.read_text() == SMALL + "new 1\n"
    assert p.stat().st_mode & 0o777 == 0o666 & ~utils._UMASK  # not mkstemp's private 0600


def test_golden_dict(tmp_path):
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "dict.txt"
    assert golden.read_bytes() == (
        b". 100\nthe 50\nhel@@ 7\na b 3\n\xc3\xa9 1\nthe 9 #fairseq:overwrite\nmadeupword0000 0\n"
    )
    d = Dictionary.load(golden)
    assert d.symbols == ["<s>", "<pad>", "</s>", "<unk>", ".", "the", "hel@@", "a b", "é", "the", "madeupword0000"]
    assert d.count == [1, 1, 1, 1, 100, 50, 7, 3, 1, 9, 0]
    assert d.index("the") == 9 and d.index("a b") == 7 and d.index("é") == 8
    assert d.encode_line("the hel@@ é zzz .") == [9, 6, 8, 3, 4, 2]
    assert d.string([9, 6, 8, 4, 2], bpe_symbol="@@ ") == "the helé ."
    out = tmp_path / "dict.txt"
    d.save(out)
    assert out.read_bytes() == golden.read_bytes()
