"""SQuAD-format reading, windowed QA features and post-processing (biogpt_train/data/squad.py), with a tiny
hand-written WordPiece vocabulary through ``tokenizers.BertWordPieceTokenizer``."""

import json
import logging

import pytest
import torch
from tokenizers import BertWordPieceTokenizer

from biogpt_train.data.squad import (Example, SquadDataError, collate, make_features, postprocess, read_squad,
                                     squad_examples)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"t{i}" for i in range(40)] + ["what", "is", "where", "brca", "##1", "gene", "the", ".", ",", "q"]


class WordPiece:
    """The tokenizer contract of make_features over a BertWordPieceTokenizer (word pieces only, char offsets)."""

    def __init__(self):
        self.tok = BertWordPieceTokenizer({t: i for i, t in enumerate(SPECIAL + WORDS)}, lowercase=True)
        self.cls_id, self.sep_id, self.pad_id = 2, 3, 0

    def encode_with_offsets(self, text):
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets


@pytest.fixture(scope="module")
def tok():
    return WordPiece()


def ids(tok, text):
    return tok.encode_with_offsets(text)[0]


def context_of(n):
    return " ".join(f"t{i}" for i in range(n))


def example(qid, question, context, answer=None, start=None):
    if answer is None:
        return Example(qid, question, context, [], True)
    start = context.index(answer) if start is None else start
    return Example(qid, question, context, [{"text": answer, "answer_start": start}])


# --------------------------------------------------------------------------------------------------- reading


def squad_file(tmp_path, qas, context="Paris is the capital of France."):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "x", "paragraphs": [
        {"context": context, "qas": qas}]}]}))
    return path


def test_read_squad_v2_impossible_and_plausible_answers_ignored(tmp_path):
    path = squad_file(tmp_path, [
        {"id": "a", "question": "capital?", "answers": [{"text": "Paris", "answer_start": 0},
                                                         {"text": "capital", "answer_start": 13}]},
        {"id": "b", "question": "king?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "France", "answer_start": 24}]},
    ])
    a, b = read_squad(path)
    assert (a.id, a.is_impossible, [x["text"] for x in a.answers]) == ("a", False, ["Paris", "capital"])
    assert (b.id, b.is_impossible, b.answers) == ("b", True, [])


def test_read_squad_skips_bad_answer_start_with_one_warning_and_a_count(tmp_path, caplog):
    path = squad_file(tmp_path, [
        {"id": "good", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "bad1", "question": "?", "answers": [{"text": "Paris", "answer_start": 1}]},
        {"id": "bad2", "question": "?", "answers": [{"text": "France", "answer_start": 0}]},
    ])
    with caplog.at_level(logging.WARNING, logger="biogpt_train.data.squad"):
        examples = read_squad(path)
    assert [e.id for e in examples] == ["good"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # the first bad id, then the summary
    assert "bad1" in messages[0] and "bad2" not in messages[0]
    assert "skipped 2 of 3" in messages[1] and "bad1, bad2" in messages[1]


def test_read_squad_errors_name_the_file(tmp_path):
    path = squad_file(tmp_path, [{"id": "bad", "question": "?", "answers": [{"text": "x", "answer_start": 0}]}])
    with pytest.raises(SquadDataError, match=r"squad\.json: no usable question \(1 skipped\)"):
        read_squad(path)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SquadDataError, match="broken.json: not valid JSON"):
        read_squad(broken)
    with pytest.raises(SquadDataError, match="not a SQuAD file"):
        squad_examples({"questions": []}, "mem")


# --------------------------------------------------------------------------------------------------- features


def test_features_layout_windows_and_max_context(tok):
    ctx = context_of(20)
    ex = example("x", "what q", ctx, "t5 t6 t7")
    feats = make_features([ex], tok, max_seq_length=12, doc_stride=3, max_query_length=64)
    # window = 12 - 2 question tokens - 3 specials = 7 tokens, starts 3 apart; the last one reaches the end
    assert [(f.doc_start, len(f.offsets)) for f in feats] == [(0, 7), (3, 7), (6, 7), (9, 7), (12, 7), (15, 5)]
    f = feats[1]
    assert f.input_ids == [2] + ids(tok, "what q") + [3] + ids(tok, "t3 t4 t5 t6 t7 t8 t9") + [3]
    assert f.context_start == 4
    assert f.token_type_ids == [0] * 4 + [1] * 8
    assert f.attention_mask == [1] * 12
    assert f.offset_mapping[:4] == [None] * 4 and f.offset_mapping[-1] is None
    assert [ctx[s:e] for s, e in f.offset_mapping[4:-1]] == [f"t{i}" for i in range(3, 10)]
    # max context: score = min(left, right) + 0.01 * length; t5 is best centred in window 1 (2 left, 4 right)
    owner = {}
    for w, feat in enumerate(feats):
        for k, is_max in enumerate(feat.max_context):
            if is_max:
                assert feat.doc_start + k not in owner
                owner[feat.doc_start + k] = w
    assert sorted(owner) == list(range(20))
    assert [owner[t] for t in range(20)] == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    # the answer (tokens 5..7) lies wholly inside window 1 (tokens 3..9) only; elsewhere the target is [CLS]
    assert [(q.start_position, q.end_position) for q in feats] == [(0, 0), (6, 8), (0, 0), (0, 0), (0, 0), (0, 0)]


def test_features_answer_in_two_windows_and_unanswerable(tok):
    ctx = context_of(12)
    feats = make_features([example("a", "q", ctx, "t6"), example("n", "q", ctx)], tok, max_seq_length=11,
                          doc_stride=4)
    # window = 11 - 1 - 3 = 7: spans (0, 7), (4, 7)+end -> (4, 7) ends at 11 < 12 -> (8, 4)
    a = [f for f in feats if f.example_id == "a"]
    assert [(f.doc_start, len(f.offsets)) for f in a] == [(0, 7), (4, 7), (8, 4)]
    assert [(f.start_position, f.end_position) for f in a] == [(3 + 6, 3 + 6), (3 + 2, 3 + 2), (0, 0)]
    assert all((f.start_position, f.end_position) == (0, 0) for f in feats if f.example_id == "n")
    with pytest.raises(SquadDataError, match="question z: no gold answer and not is_impossible"):
        make_features([Example("z", "q", ctx, [], False)], tok)
    # not training: no targets asked for, the unlabelled example is fine
    assert make_features([Example("z", "q", ctx, [], False)], tok, training=False)[0].start_position == 0


def test_answer_inside_a_word_maps_to_its_pieces(tok):
    ctx = "the brca1 gene ."
    feats = make_features([example("b", "what", ctx, "brca", start=4)], tok)
    f = feats[0]
    assert [ctx[s:e] for s, e in f.offsets] == ["the", "brca", "1", "gene", "."]
    assert (f.start_position, f.end_position) == (f.context_start + 1, f.context_start + 1)
    feats = make_features([example("b", "what", ctx, "brca1 gene")], tok)
    assert (feats[0].start_position, feats[0].end_position) == (feats[0].context_start + 1,
                                                                 feats[0].context_start + 3)


def test_long_question_is_cut_to_max_query_length_and_bad_sizes_error(tok):
    question = context_of(30)
    f = make_features([example("l", question, "t1 t2", "t2")], tok, max_seq_length=16, max_query_length=5)[0]
    assert f.input_ids[:7] == [2] + ids(tok, question)[:5] + [3]
    assert f.context_start == 7
    with pytest.raises(SquadDataError, match="question l: 5 question tokens .* no room .* max_seq_length 8"):
        make_features([example("l", question, "t1 t2", "t2")], tok, max_seq_length=8, max_query_length=5)


def test_collate_pads_and_masks(tok):
    feats = make_features([example("a", "q", "t1 t2", "t2"), example("b", "what is q", "t1 t2 t3", "t1")], tok)
    batch = collate(feats, tok.pad_id)
    assert batch["input_ids"].shape == (2, 9)
    assert batch["input_ids"][0].tolist() == feats[0].input_ids + [0, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0] * 3
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert batch["token_type_ids"][1].tolist() == feats[1].token_type_ids == [0] * 5 + [1] * 4
    assert batch["start_positions"].tolist() == [4, 5] and batch["end_positions"].tolist() == [4, 5]
    assert collate(feats, tok.pad_id, pad_to=10)["input_ids"].shape == (2, 10)
    with pytest.raises(SquadDataError, match="question b: feature of 9 tokens exceeds pad_to=8"):
        collate(feats, tok.pad_id, pad_to=8)


# --------------------------------------------------------------------------------------------------- post-processing


def logits_for(feats, spans, base=0.0):
    """start/end logit rows: ``base`` everywhere except ``spans[i] = {position: (start, end)}`` per feature."""
    starts, ends = [], []
    for f, marks in zip(feats, spans):
        s, e = [base] * len(f.input_ids), [base] * len(f.input_ids)
        for pos, (sv, ev) in marks.items():
            s[pos], e[pos] = sv, ev
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_oracle_logits_recover_every_answer_across_windows(tok):
    ctx = context_of(30)
    examples = [example(f"q{i}", "what", ctx, f"t{i} t{i + 1}") for i in range(0, 28, 3)]
    feats = make_features(examples, tok, max_seq_length=14, doc_stride=4)
    starts, ends = [], []
    for f in feats:
        s, e = [0.0] * len(f.input_ids), [0.0] * len(f.input_ids)
        s[f.start_position] += 8.0
        e[f.end_position] += 8.0
        starts.append(s)
        ends.append(e)
    preds, nbest, odds = postprocess(examples, feats, torch.tensor(starts), torch.tensor(ends))
    assert preds == {ex.id: ex.answers[0]["text"] for ex in examples}
    assert odds == {}
    for ex in examples:
        probs = [n["probability"] for n in nbest[ex.id]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)


def test_ties_keep_the_earlier_span_and_invalid_spans_are_skipped(tok):
    ctx = context_of(6)
    ex = example("t", "q", ctx, "t1")
    f = make_features([ex], tok)[0]
    c = f.context_start  # 3
    starts, ends = logits_for([f], [{c + 1: (5.0, 5.0), c + 3: (5.0, 5.0), 0: (9.0, 0.0), c - 1: (0.0, 9.0)}])
    # [CLS] and [SEP] positions have the largest logits but are not context tokens: never a span end
    preds, nbest, _ = postprocess([ex], [f], starts, ends, n_best_size=4)
    texts = [n["text"] for n in nbest["t"]]
    assert texts[:3] == ["t1", "t1 t2 t3", "t3"]  # equal totals 10: start order, then end order
    assert preds["t"] == "t1"
    assert nbest["t"][0]["probability"] == pytest.approx(nbest["t"][2]["probability"])
    # the best pair (t4, t2) ends before it starts: skipped; t0..t2 is longer than max_answer_length=2
    starts, ends = logits_for([f], [{c + 4: (5.0, -10.0), c + 2: (-10.0, 5.0), c: (4.0, 4.0)}], base=-10.0)
    assert postprocess([ex], [f], starts, ends)[0]["t"] == "t0 t1 t2"  # 4 + 5
    assert postprocess([ex], [f], starts, ends, max_answer_length=2)[0]["t"] == "t0"  # 4 + 4


def test_start_must_be_max_context_in_its_window(tok):
    ctx = context_of(12)
    ex = example("m", "q", ctx, "t5")
    feats = make_features([ex], tok, max_seq_length=11, doc_stride=4)  # windows (0,7) (4,7) (8,4)
    # t5 is max-context in window 1 (left 1, right 5 -> 1.07) vs window 0 (left 5, right 1 -> 1.07): tie, first wins
    assert feats[0].max_context[5] and not feats[1].max_context[1]
    marks = [{}, {3 + 1: (10.0, 10.0)}, {}]  # high logits for t5 only in window 1, where it is not max context
    starts, ends = logits_for(feats, marks)
    preds, nbest, _ = postprocess([ex], feats, starts, ends)
    assert preds["m"] != "t5" and all(n["start_logit"] < 10.0 for n in nbest["m"])
    marks = [{3 + 5: (10.0, 10.0)}, {}, {}]  # the same in window 0, its max-context window
    assert postprocess([ex], feats, *logits_for(feats, marks))[0]["m"] == "t5"


def test_version_2_null_answer_threshold_and_nonce(tok):
    ctx = context_of(4)
    ex = example("v", "q", ctx, "t2")
    f = make_features([ex], tok)[0]
    c = f.context_start
    starts, ends = logits_for([f], [{0: (3.0, 3.0), c + 2: (2.0, 2.5)}])
    preds, nbest, odds = postprocess([ex], [f], starts, ends, version_2=True)
    assert odds["v"] == pytest.approx(6.0 - 4.5)
    assert preds["v"] == ""  # 1.5 > threshold 0
    assert nbest["v"][0]["text"] == "" and nbest["v"][1]["text"] == "t2"
    preds, _, _ = postprocess([ex], [f], starts, ends, version_2=True, null_score_diff_threshold=2.0)
    assert preds["v"] == "t2"
    # only the null span survives (every span longer than max_answer_length=0): the legacy nonce "empty"
    preds, nbest, odds = postprocess([ex], [f], starts, ends, version_2=True, max_answer_length=0)
    assert [n["text"] for n in nbest["v"]] == ["empty", ""] and preds["v"] == ""
    preds, nbest, _ = postprocess([ex], [f], starts, ends, max_answer_length=0)
    assert preds["v"] == "empty" and len(nbest["v"]) == 1


def test_postprocess_checks_row_counts(tok):
    ex = example("r", "q", "t1 t2", "t1")
    f = make_features([ex], tok)[0]
    with pytest.raises(ValueError, match="1 logit rows for 2 features"):
        postprocess([ex], [f, f], [[0.0] * 6], [[0.0] * 6])
    with pytest.raises(ValueError, match="question r: 3 logits for 6 tokens"):
        postprocess([ex], [f], [[0.0] * 3], [[0.0] * 3])


def run_qa_targets(enc, start_char, end_char):
    """HF run_qa.py's training targets for one overflow window of a fast tokenizer (the reference)."""
    seq = enc.sequence_ids
    first, last = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
    if not (enc.offsets[first][0] <= start_char and enc.offsets[last][1] >= end_char):
        return 0, 0
    while first < len(seq) and seq[first] == 1 and enc.offsets[first][0] <= start_char:
        first += 1
    while seq[last] == 1 and enc.offsets[last][1] >= end_char:
        last -= 1
    return first - 1, last + 1


def test_windows_match_the_tokenizers_overflow_of_run_qa(tok):
    """run_qa passes doc_stride to the tokenizer as the overlap o; our doc_stride is the step = window - o."""
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    for n in (1, 9, 10, 11, 17, 23, 31):
        ctx = context_of(n)
        examples = [example(f"a{i}", "what q", ctx, f"t{i} t{i + 1}") for i in range(n - 1)] or \
            [example("a0", "what q", ctx, "t0")]
        for max_len, overlap in ((10, 0), (10, 3), (14, 2), (14, 6)):
            ref = BertWordPieceTokenizer(vocab, lowercase=True)
            ref.enable_truncation(max_len, stride=overlap, strategy="only_second")
            enc = ref.encode("what q", ctx)
            windows = [enc] + enc.overflowing
            feats = make_features(examples, tok, max_seq_length=max_len, doc_stride=max_len - 5 - overlap)
            by_example = {}
            for f in feats:
                by_example.setdefault(f.example_id, []).append(f)
            for ex in examples:
                mine = by_example[ex.id]
                assert [f.input_ids for f in mine] == [w.ids for w in windows], (n, max_len, overlap)
                assert [f.token_type_ids for f in mine] == [w.type_ids for w in windows]
                assert [f.offset_mapping for f in mine] == [
                    [o if s == 1 else None for o, s in zip(w.offsets, w.sequence_ids)] for w in windows]
                a = ex.answers[0]
                span = (a["answer_start"], a["answer_start"] + len(a["text"]))
                assert [(f.start_position, f.end_position) for f in mine] == [run_qa_targets(w, *span)
                                                                            for w in windows]
