"""Tokenizer parity with transformers.BioGptTokenizer (reference §2.4, §3.2) and Moses round trips.

Corpus-wide parity, made affordable and still exact:
  * Both tokenizers run the *same* sacremoses call (MosesTokenizer('en'), aggressive dash splits, escaping),
    then BPE each whitespace token independently (HF: ``_tokenize`` loops ``bpe(token)``; fastBPE: per word).
    So ids(text) = concat over Moses tokens w of ids(w), on both sides.
  * We run HF's Moses once per unique text and check ours gives the same tokens; we compare BPE pieces and
    ids on every *unique Moses token* of the whole corpus (HF ``bpe`` vs fastBPE); then our ``encode_batch``
    on every text must equal the concatenation of HF's per-token ids.
  * HF's wrapper also splits the text on its special tokens before Moses; we assert no text contains one, so
    the decomposition is exact for this corpus.
  * End to end, ``Tokenizer.encode_batch(text) == BioGptTokenizer.encode(text, add_special_tokens=False)``
    on a deterministic subset of every source (and on hand-picked tricky strings, not marked slow).
"""

import glob
import json
import pickle
import time
from pathlib import Path

import pytest

from biogpt_train.data.dictionary import Dictionary
from biogpt_train.data.tokenizer import Tokenizer, hf_vocab, read_bpecodes, write_hf_vocab
from conftest import SHARED_DATA, require_shared

VOCABS = ("BioGPT", "BioGPT-Large")
FULL_TEXT_EVERY = 10  # end-to-end HF comparison on every 10th unique text of each source
SPECIAL_STRINGS = ("<s>", "<pad>", "</s>", "<unk>")

TRICKY = [
    "",
    "   ",
    "Aspirin-induced asthma in 3 patients (p<0.05).",
    'He said "it\'s fine" & left | [sic] {x} <b>bold</b>',
    "anti-PD-1/PD-L1 mAb; IL-2-dependent T-cell (CD4+CD8-) responses.",
    "Dr. Smith et al. reported 5.2 +/- 0.3 mg/kg/day, i.e. 10% less.",
    "COVID-19 vs. SARS-CoV-2: what's new?",
    "β-blockers and α2-agonists reduce HbA1c by ~0.5%… ±2 °C",
    "Tabs\tand\nnewlines\r\nand  double  spaces",
    "The U.S. FDA approved it in Jan. 2020. The end.",
    "ÆØÅ naïve café Schrödinger 中文 𢈒",
    "...",
    "--",
    "It costs $5.00 (approx. €4).",
    "e.g. 1,000,000 cells/μL; 'quoted' and `backticks`",
    "learned1 learned2 the answer is yes",
]


# ---- corpus --------------------------------------------------------------------------------------------------
def _json_texts(path: Path, keys):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for rec in data.values():
        for k in keys:
            v = rec.get(k)
            if isinstance(v, list):
                yield from v
            elif isinstance(v, str):
                yield v


def collect_texts(root: Path) -> dict:
    """source name -> unique texts (first-seen order) from every text field in ../shared/data."""
    sources = {}
    qa = []
    for rel in ("PubMedQA/pqal_trainval.json", "PubMedQA/pqal_fold0/train_set.json",
                "PubMedQA/pqal_fold0/dev_set.json", "PubMedQA/test_set_inputs.json"):
        if (root / rel).exists():
            qa += list(_json_texts(root / rel, ("QUESTION", "CONTEXTS", "LONG_ANSWER")))
    sources["PubMedQA"] = qa
    for task in ("BC5CDR", "DDI", "KD-DTI"):
        texts = []
        for p in sorted(glob.glob(str(root / task / "raw" / "*.json"))):
            if p.endswith(".entities.json"):
                continue
            texts += list(_json_texts(Path(p), ("title", "abstract")))
        sources[task] = texts
    hoc = []
    if (root / "HoC/raw/train.tsv").exists():
        with open(root / "HoC/raw/train.tsv", encoding="utf-8") as f:
            hoc += [line.rstrip("\n").split("\t")[0] for line in f]
    if (root / "HoC/raw/test_inputs.txt").exists():
        with open(root / "HoC/raw/test_inputs.txt", encoding="utf-8") as f:
            hoc += [line.rstrip("\n") for line in f]
    sources["HoC"] = hoc
    oh = []
    if (root / "pretrain_corpus/ohsumed/ohsumed_abstracts.jsonl").exists():
        with open(root / "pretrain_corpus/ohsumed/ohsumed_abstracts.jsonl", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                oh += [rec.get("title") or "", rec.get("abstract") or ""]
    sources["ohsumed"] = oh
    wada = root / "pretrain_corpus/sy-wada/PubMedAbstract_1MB.dedup.txt"
    if wada.exists():
        with open(wada, encoding="utf-8") as f:
            sources["sy-wada"] = [line.rstrip("\n") for line in f]
    return {k: list(dict.fromkeys(v)) for k, v in sources.items() if v}


def _hf_tokenizer(vocab: str, out_dir: Path):
    transformers = pytest.importorskip("transformers")
    dict_txt = require_shared("tokenizer", vocab, "dict.txt")
    codes = require_shared("tokenizer", vocab, "bpecodes")
    vocab_json, merges = write_hf_vocab(Dictionary.load(dict_txt), codes, out_dir)
    hf = transformers.BioGptTokenizer(str(vocab_json), str(merges))
    return Tokenizer.from_files(dict_txt, codes), hf


def _hf_pieces(fastbpe_line: str):
    """fastBPE "hel@@ lo" -> HF pieces ["hel", "lo</w>"] (reference §2.4)."""
    return [p[:-2] if p.endswith("@@") else p + "</w>" for p in fastbpe_line.split()]


@pytest.fixture(scope="module")
def corpus():
    require_shared("tokenizer")
    sources = collect_texts(SHARED_DATA)
    if sum(map(len, sources.values())) < 1000:
        pytest.skip(f"too few texts under {SHARED_DATA}")
    return sources


@pytest.fixture(scope="module")
def moses(corpus, tmp_path_factory):
    """HF's own Moses step (stock sacremoses) once per unique text; Moses does not depend on the vocabulary."""
    t0 = time.perf_counter()
    _, hf = _hf_tokenizer("BioGPT", tmp_path_factory.mktemp("moses"))
    texts = list(dict.fromkeys(t for v in corpus.values() for t in v))
    token_lists = [hf.moses_tokenize(t, "en") for t in texts]
    words = sorted({w for toks in token_lists for w in toks})
    print(f"\n[moses] {len(texts)} unique texts, {len(words)} unique Moses tokens, {time.perf_counter() - t0:.1f}s")
    return texts, token_lists, words


@pytest.fixture(scope="module")
def our_lines(moses):
    """Our Moses step on the same texts (one pass, shared by both vocabularies)."""
    texts, _, _ = moses
    tok = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    return [tok.tokenize(t) for t in texts]


@pytest.fixture(scope="module", params=VOCABS)
def pair(request, tmp_path_factory):
    return request.param, *_hf_tokenizer(request.param, tmp_path_factory.mktemp(request.param))


# ---- small, fast checks ----------------------------------------------------------------------------------------
def test_tricky_strings_match_hf(pair):
    _, tok, hf = pair
    ours = tok.encode_batch(TRICKY)
    for text, ids in zip(TRICKY, ours):
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert ids == tok.encode(text)
    assert tok.encode("") == []


def test_known_ids():
    tok = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    assert tok.tokenize("anti-PD-1 <x> it's") == "anti @-@ PD @-@ 1 &lt; x &gt; it &apos;s"
    assert tok.apply_bpe(["hello world"]) == ["h@@ ell@@ o world"]
    assert tok.encode("...") == [11475]
    assert 2 not in tok.encode("A sentence. Another one.")  # no eos, no leading </s>
    assert tok.decode([2, 6, 2, 1]) == "the"


def test_hf_vocab_derivation(tmp_path):
    d = Dictionary.load(_write(tmp_path / "dict.txt", "hel@@ 5\nlo 4\n. 3\nhel 2\n"))
    v = hf_vocab(d)
    assert v == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "hel": 4, "lo</w>": 5, ".</w>": 6, "hel</w>": 7}
    codes = _write(tmp_path / "codes", "h e 10\nhe l 9\nl o</w> 8\n")
    vj, mt = write_hf_vocab(d, codes, tmp_path / "hf")
    assert json.loads(vj.read_text()) == v and mt.read_bytes() == codes.read_bytes()
    # HF drops the text after the last newline, so one is added if missing
    _write(tmp_path / "codes2", "h e 10\nhe l 9")
    _, mt2 = write_hf_vocab(d, tmp_path / "codes2", tmp_path / "hf2")
    assert mt2.read_text() == "h e 10\nhe l 9\n"
    # "ab" -> "ab</w>" and "ab</w>@@" -> "ab</w>": the converter would silently keep one id
    clash = Dictionary.load(_write(tmp_path / "d2", "ab 2\nab</w>@@ 1\n"))
    with pytest.raises(ValueError, match=r"'ab' \(id 4\) and 'ab</w>@@' \(id 5\) both map to HF vocab key 'ab</w>'"):
        hf_vocab(clash)


def test_bpecodes_validation(tmp_path):
    good = _write(tmp_path / "c", "t h 9\nth e</w> 8\n")
    assert read_bpecodes(good) == [("t", "h", 9), ("th", "e</w>", 8)]
    with pytest.raises(FileNotFoundError, match="BPE codes file not found"):
        read_bpecodes(tmp_path / "missing")
    for text, line in [("t h 9\nth\n", 2), ("t h x\n", 1), ("t h 9\n\nx y 1\n", 2), ("a b 1\na b 2\n", 2)]:
        with pytest.raises(ValueError, match=rf"c2:{line}: (malformed|duplicate) BPE"):
            read_bpecodes(_write(tmp_path / "c2", text))
    # fastBPE itself would exit() / segfault on these; we must raise instead
    d = _write(tmp_path / "dict.txt", "th 1\n")
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_files(d, tmp_path / "missing")
    with pytest.raises(ValueError):
        Tokenizer.from_files(d, tmp_path / "c2")


def test_tiny_tokenizer_and_pickle(tmp_path, capfd):
    d = _write(tmp_path / "dict.txt", "t@@ 6\nh 5\ne 4\nthe 3\n. 2\n")
    codes = _write(tmp_path / "codes", "t h 9\nth e</w> 8\n")
    tok = Tokenizer.from_files(d, codes)
    assert "Loading codes" not in capfd.readouterr().err  # fastBPE's stderr chatter is suppressed
    # "th" is t + h</w>: the merge "t h" needs a non-final h, so it stays split
    assert tok.apply_bpe(["the th e", ""]) == ["the t@@ h e", ""]
    assert tok.encode("the th e.") == [7, 4, 5, 6, 8]
    assert tok.encode_batch(["the", "x", ""]) == [[7], [3], []]
    assert tok.decode([0, 4, 5, 2, 1]) == "th"
    assert tok.detokenize_bpe("t@@ h ( x ) &amp; y @-@ z") == "th (x) & y-z"
    tok2 = pickle.loads(pickle.dumps(tok))
    assert tok2.encode("the th e.") == [7, 4, 5, 6, 8] and tok2.dictionary == tok.dictionary
    with pytest.raises(TypeError):
        tok.apply_bpe("the")


def test_unk_rate_and_mismatch_warning(tmp_path, caplog):
    import numpy as np

    d = _write(tmp_path / "dict.txt", "t@@ 6\nh 5\ne 4\nthe 3\n. 2\n")
    codes = _write(tmp_path / "codes", "t h 9\nth e</w> 8\n")
    tok = Tokenizer.from_files(d, codes)
    good = tok.encode_batch(["the the.", "the"])
    assert tok.unk_count(good) == (0, 4) and tok.unk_rate(good) == 0.0 and tok.unk_rate([]) == 0.0
    bad = tok.encode_batch(["dog cat the", "fish"])  # pieces absent from the dictionary -> <unk> (3)
    assert tok.unk_count(bad) == (9, 11) and tok.unk_rate(bad) == 9 / 11  # d@@ o@@ g c@@ a@@ t the f@@ i@@ s@@ h
    assert tok.unk_rate(np.array([3, 3, 7, 7])) == 0.5 and tok.unk_rate([3, 7]) == 0.5
    assert tok.unk_warning(5, 100, "x") is None  # 5% is tolerated, more is not
    msg = tok.unk_warning(6, 100, "train.x")
    assert msg.startswith("train.x: 6 of 100 tokens (6.0%) encode to <unk> with ") and str(d) in msg
    assert str(codes) in msg and "mismatched" in msg and "\n" not in msg
    with caplog.at_level("WARNING"):
        assert tok.check_unk(bad, "valid.json") == 9 / 11
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["valid.json"]
    assert pickle.loads(pickle.dumps(tok)).dict_path == d


def test_bpe_memo_equals_plain_fastbpe(monkeypatch):
    tok = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    lines = ["  hello   world ", "a\tb c", "x\ny", "", " ", "ab\u2028cd e\u00a0f", "hello", "antihypertensive"]
    assert tok.bpe_tokenized(lines) == tok.apply_bpe(lines)
    assert tok.bpe_tokenized(lines) == tok.apply_bpe(lines)  # warm memo
    monkeypatch.setattr(Tokenizer, "WORD_CACHE_SIZE", 3)  # forces the memo to be cleared mid-way
    tok2 = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    for i in range(len(lines)):
        assert tok2.bpe_tokenized(lines[i:]) == tok.apply_bpe(lines[i:])
    assert len(tok2._word_bpe) <= 8
    texts = TRICKY[2:8]
    assert tok2.encode_batch(texts) == [tok.encode(t) for t in texts] == tok.encode_tokenized(
        [tok.tokenize(t) for t in texts])


MOSES_EDGE_CASES = [
    "", " ", "\u00a0", "  Mr. Smith's cat isn't  here.\t\n", "No. 5 and No. x; Art. 3, pp. 12 pp. x", "U.S. a.b. e.g. Fig. 3",
    "'quoted' .'", "it's 1990's rock'n'roll", "a , b,c 5,300 ,", "x\x01 y\x1c z\u00a0w\u2003v\u2028u", "... etc. ..",
    "A-B -C D- E 5-6", "<&>|[]\"'", "Dr. who. Dr. Who .", "end.", "ends with a quote.'", "\ttabs\tand\nlines\n",
    "x.y.z. Z.", "1. 2. a.", "Eq. (1). i.e. ok",
]


def test_fast_moses_equals_stock_sacremoses():
    """The fast paths (frozen character sets, non-breaking prefixes without re.search, rules skipped for texts
    without their character, whitespace via str.split) give sacremoses' output exactly."""
    from sacremoses import MosesTokenizer

    from biogpt_train.data.tokenizer import moses_tokenizer

    stock, fast = MosesTokenizer("en"), moses_tokenizer("en")
    texts = MOSES_EDGE_CASES + TRICKY + [t for v in collect_texts(SHARED_DATA).values() for t in v[:30]]
    for escape in (True, False):
        for text in texts:
            kwargs = dict(aggressive_dash_splits=True, return_str=True, escape=escape)
            assert fast.tokenize(text, **kwargs) == stock.tokenize(text, **kwargs), repr(text)


def test_encode_tokenized_memo_follows_the_dictionary():
    tok = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    lines = ["  hello   world ", "a\tb c", "", " ", "ab\u2028cd e\u00a0f", "hello 𢈒x", "𢈒x"]
    expected = [tok._ids(line) for line in tok.bpe_tokenized(lines)]
    assert tok.encode_tokenized(lines) == expected
    assert tok.encode_tokenized(lines) == expected  # warm memo
    pieces = tok.bpe_tokenized(["𢈒x"])[0].split()
    unknown = [p for p in pieces if p not in tok.dictionary.indices]
    assert unknown  # a piece that was <unk> gets an id once the dictionary grows: the memo must not keep <unk>
    new_id = tok.dictionary.add_symbol(unknown[0])
    assert new_id in tok.encode_tokenized(["𢈒x"])[0]


def test_decode_encode_equals_moses_round_trip():
    from sacremoses import MosesDetokenizer, MosesTokenizer

    mt, md = MosesTokenizer("en"), MosesDetokenizer("en")
    tok = Tokenizer.from_files(*[require_shared("tokenizer", "BioGPT", f) for f in ("dict.txt", "bpecodes")])
    texts = [t for t in TRICKY if "中文" not in t and "𢈒" not in t]  # characters outside the vocab -> <unk>
    texts += [t for v in collect_texts(SHARED_DATA).values() for t in v[:40]]
    checked = 0
    for text in texts:
        ids = tok.encode(text)
        if tok.dictionary.unk() in ids:
            continue
        expected = md.detokenize(mt.tokenize(text, aggressive_dash_splits=True, return_str=True, escape=True).split())
        assert tok.decode(ids) == expected, text
        checked += 1
    assert checked >= 0.9 * len(texts)


# ---- corpus-wide parity (slow) -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.shared_data
def test_no_special_token_strings_in_corpus(moses):
    texts, _, _ = moses
    hits = [t[:80] for t in texts if any(s in t for s in SPECIAL_STRINGS)]
    assert not hits, f"texts containing special-token strings (HF splits on these before Moses): {hits[:5]}"


@pytest.mark.slow
@pytest.mark.shared_data
def test_our_moses_matches_hf_on_every_text(moses, our_lines):
    texts, token_lists, _ = moses
    for text, toks, line in zip(texts, token_lists, our_lines):
        assert line.split() == toks, text[:200]
        assert line == " ".join(toks)  # single spaces only: fastBPE splits on " "


@pytest.mark.slow
@pytest.mark.shared_data
def test_every_moses_token_matches_hf(pair, moses, our_lines):
    vocab, tok, hf = pair
    texts, token_lists, words = moses
    t0 = time.perf_counter()
    ours_bpe = tok.apply_bpe(words)  # one word per line: per-word segmentation
    ours_pieces = [_hf_pieces(b) for b in ours_bpe]
    hf_pieces = [hf.bpe(w).split(" ") for w in words]  # what HF's _tokenize does per Moses token
    bad = [(w, o, h) for w, o, h in zip(words, ours_pieces, hf_pieces) if o != h]
    assert not bad, f"{vocab}: {len(bad)} of {len(words)} Moses tokens segment differently, e.g. {bad[:5]}"
    # ids, through each side's own vocabulary (vocab.json vs dict.txt)
    ours_ids = [[tok.dictionary.index(p) for p in b.split()] for b in ours_bpe]
    hf_ids = [hf.convert_tokens_to_ids(p) for p in hf_pieces]
    bad = [(w, o, h) for w, o, h in zip(words, ours_ids, hf_ids) if o != h]
    assert not bad, f"{vocab}: {len(bad)} Moses tokens map to different ids, e.g. {bad[:5]}"
    t1 = time.perf_counter()
    # Every text through our batched BPE + ids (encode_batch minus the Moses step, which is checked against
    # HF on every text above), against HF's ids composed per Moses token.
    hf_word_ids = dict(zip(words, hf_ids))
    for text, toks, ids in zip(texts, token_lists, tok.encode_tokenized(our_lines)):
        assert ids == [i for w in toks for i in hf_word_ids[w]], f"{vocab}: {text[:200]!r}"
    print(f"\n[{vocab}] {len(words)} tokens vs HF in {t1 - t0:.1f}s; {len(texts)} texts checked in "
          f"{time.perf_counter() - t1:.1f}s")


@pytest.mark.slow
@pytest.mark.shared_data
def test_full_text_subset_matches_hf(pair, corpus):
    vocab, tok, hf = pair
    t0 = time.perf_counter()
    n = 0
    for source, texts in corpus.items():
        subset = texts[::FULL_TEXT_EVERY]
        ours = tok.encode_batch(subset)
        for text, ids in zip(subset, ours):
            assert ids == hf.encode(text, add_special_tokens=False), f"{vocab} {source}: {text[:200]!r}"
        n += len(subset)
    print(f"\n[{vocab}] end-to-end on {n} texts in {time.perf_counter() - t0:.1f}s")


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path
