"""BioASQ factoid metrics and n-best merge (biogpt_train/scoring/bioasq.py), the BioASQ -> SQuAD converter and
reader (data_prep/tasks/bioasq.py) and the bioasq_factoid CLI. Expected values follow the official evaluator's
definitions (EvaluatorTask1b / QuestionAnswerEvaluator) and BioBERT's transform_nbset2bioasqform.py."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from biogpt_train.scoring.bioasq import (bioasq_answer_json, bioasq_factoid_batches, bioasq_factoid_scores,
                                         merge_nbest, question_id, read_predictions)
from data_prep.tasks.bioasq import (bioasq_to_squad, convert_file, golden_from_squad, read_bioasq_squad)
from data_prep.tasks.common import DataError
from tests.conftest import require_shared

REPO = Path(__file__).resolve().parents[1]


def golden(*questions):
    return {"questions": [{"id": qid, "type": qtype, "body": "?", "exact_answer": answer}
                          for qid, qtype, answer in questions]}


GOLD = golden(
    ("A", "factoid", [["BRCA1", "breast cancer 1"]]),   # list of lists
    ("B", "factoid", ["TP53", "p53"]),                   # flat synonym list
    ("C", "factoid", [["a"], ["b"]]),
    ("D", "factoid", [["z"]]),
    ("E", "list", [["brca1"]]),                          # not a factoid: never scored
    ("F", "factoid", [["unpredicted"]]),                 # no prediction: skipped, not counted
)
PREDS = {
    "A": ["brca1", "x"],                  # rank 1 (case-insensitive)
    "B": ["x", "P53"],                    # rank 2 (a synonym)
    "C": ["x", "y", "z", "w", "v", "b"],  # the 6th answer is not scored
    "D": [],
    "E": ["brca1"],
}


def test_strict_lenient_mrr_on_hand_cases():
    out = bioasq_factoid_scores(GOLD, PREDS)
    assert out == pytest.approx({"strict": 25.0, "lenient": 50.0, "mrr": 100 * (1 + 0.5) / 4, "n": 4,
                                 "missing": 1})


def test_matching_is_lowercase_equality_only():
    gold = golden(("q", "factoid", [["Bazex syndrome"]]))
    for pred, right in [("BAZEX SYNDROME", True), ("Bazex syndrome ", False), ("Bazex syndrome.", False),
                        ("the Bazex syndrome", False), ("Bazex  syndrome", False)]:
        assert bioasq_factoid_scores(gold, {"q": [pred]})["strict"] == (100.0 if right else 0.0), pred


def test_submission_lists_count_their_first_synonym_and_keep_their_rank():
    gold = golden(("q", "factoid", [["brca1"]]))
    assert bioasq_factoid_scores(gold, {"q": [["x", "brca1"], ["BRCA1"]]})["mrr"] == 50.0
    assert bioasq_factoid_scores(gold, {"q": [[], "brca1"]})["mrr"] == 50.0
    # a BioASQ submission file reads the same way
    sub = bioasq_answer_json({"q": ["x", "brca1"]})
    assert sub["questions"][0]["exact_answer"] == [["x"], ["brca1"]]
    assert bioasq_factoid_scores(gold, read_predictions(sub))["mrr"] == 50.0


def test_per_batch_mean_versus_concatenated():
    batch1 = golden(("a", "factoid", [["x"]]))
    batch2 = golden(("b", "factoid", [["x"]]), ("c", "factoid", [["x"]]), ("d", "factoid", [["x"]]))
    preds = {"a": ["x"], "b": ["y"], "c": ["y", "x"], "d": []}
    out = bioasq_factoid_batches([batch1, batch2], preds)
    assert [b["strict"] for b in out["per_batch"]] == [100.0, 0.0]
    assert (out["strict"], out["lenient"], out["mrr"]) == pytest.approx((50.0, (100 + 100 / 3) / 2,
                                                                         (100 + 50 / 3) / 2))
    assert out["n"] == 4
    assert out["concatenated"] == pytest.approx({"strict": 25.0, "lenient": 50.0, "mrr": 37.5, "n": 4,
                                                 "missing": 0})


def test_bad_inputs():
    with pytest.raises(ValueError, match="not a BioASQ file"):
        bioasq_factoid_scores({"data": []}, {})
    with pytest.raises(ValueError, match="no factoid question"):
        bioasq_factoid_scores(golden(("q", "list", [["x"]])), {"q": ["x"]})
    with pytest.raises(ValueError, match="none of the 1 gold factoid questions has a prediction"):
        bioasq_factoid_scores(golden(("q", "factoid", [["x"]])), {"other": ["x"]})
    with pytest.raises(ValueError, match="answers for 'q' are str"):
        bioasq_factoid_scores(golden(("q", "factoid", [["x"]])), {"q": "x"})
    with pytest.raises(ValueError, match="question 'q' exact_answer is str"):
        bioasq_factoid_scores(golden(("q", "factoid", "x")), {"q": ["x"]})


# --------------------------------------------------------------------------------------------------- n-best merge


def nb(text, p):
    return {"text": text, "probability": p, "start_logit": 0.0, "end_logit": 0.0}


def test_merge_nbest_sums_case_insensitive_duplicates_across_snippets():
    long = "x" * 101
    nbest = {
        "q1_001": [nb("BRCA1", 0.5), nb("p53", 0.3), nb("", 0.2)],
        "q2_001": [nb("X", 0.45), nb("y", 0.3)],
        "q1_002": [nb("brca1", 0.4), nb("P53", 0.35), nb("TP53", 0.25), nb(long, 0.9)],
        "q2_002": [nb("Y", 0.2)],
    }
    merged = merge_nbest(nbest)
    assert list(merged) == ["q1", "q2"]  # first appearance order
    # q1: brca1 0.9 (casing of its most probable form), p53 0.65 (P53 0.35 beats p53 0.3), TP53 0.25;
    # "" and the 101-character text are dropped
    assert merged["q1"] == ["BRCA1", "P53", "TP53"]
    # q2: y + Y = 0.5 overtakes X = 0.45 (summing, not max)
    assert merged["q2"] == ["y", "X"]


def test_merge_nbest_top5_ties_and_ids():
    merged = merge_nbest({"q_001": [nb(t, 0.1) for t in "abcdefg"]})
    assert merged["q"] == ["a", "b", "c", "d", "e"]  # equal probabilities keep file order
    assert question_id("56bc751eac7ad10019000013_001") == "56bc751eac7ad10019000013"
    for bad in ("noseparator", "q_", "q_x1", "_001"):
        with pytest.raises(ValueError, match="is not <question id>_<number>"):
            question_id(bad)
    with pytest.raises(ValueError, match="lacks a text or a probability"):
        merge_nbest({"q_001": [{"text": "a"}]})


# --------------------------------------------------------------------------------------------------- conversion


NATIVE = {"questions": [
    {"id": "f1", "type": "factoid", "body": "Which gene?", "exact_answer": [["BRCA1", "breast cancer 1"]],
     "snippets": [{"text": "Mutations in brca1 raise the risk."}, {"text": "Nothing here."},
                  {"text": "Breast Cancer 1 (BRCA1) is a gene."}]},
    {"id": "f2", "type": "factoid", "body": "Which protein?", "exact_answer": ["p53", "TP53"],
     "snippets": [{"text": "TP53 encodes p53."}, {"text": "Its TP53-like gene"}]},
    {"id": "f3", "type": "factoid", "body": "No snippets?", "exact_answer": [["x"]], "snippets": []},
    {"id": "y1", "type": "yesno", "body": "Is it?", "exact_answer": "yes", "snippets": [{"text": "yes"}]},
]}


def test_bioasq_to_squad(caplog):
    with caplog.at_level(logging.WARNING, logger="data_prep.tasks.bioasq"):
        squad = bioasq_to_squad(NATIVE, "native.json")
    assert "skipped 1 factoid questions without snippets (e.g. f3)" in caplog.text
    items = [(p["context"], qa) for p in squad["data"][0]["paragraphs"] for qa in p["qas"]]
    assert [qa["id"] for _, qa in items] == ["f1_001", "f1_002", "f1_003", "f2_001", "f2_002"]
    for context, qa in items:
        for a in qa["answers"]:
            assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
    answers = [[(a["text"], a["answer_start"]) for a in qa["answers"]] for _, qa in items]
    # synonyms in gold order, the first found wins, with the snippet's own casing; whole words first: "p53" is
    # not taken from inside "TP53"; "TP53" in "TP53-like" is a whole word ("-" is not a word character)
    assert answers == [[("brca1", 13)], [], [("BRCA1", 17)], [("p53", 13)], [("TP53", 4)]]
    assert [qa["is_impossible"] for _, qa in items] == [False, True, False, False, False]
    only = bioasq_to_squad(NATIVE, "native.json", answerable_only=True)
    assert [qa["id"] for p in only["data"][0]["paragraphs"] for qa in p["qas"]] == ["f1_001", "f1_003", "f2_001",
                                                                                    "f2_002"]
    with pytest.raises(DataError, match="yes.json: no factoid question \\(of 1 questions\\)"):
        bioasq_to_squad({"questions": [NATIVE["questions"][3]]}, "yes.json")


def test_convert_file_reads_back_as_squad(tmp_path):
    src = tmp_path / "native.json"
    src.write_text(json.dumps(NATIVE))
    counts = convert_file(src, tmp_path / "out" / "squad.json")
    assert counts == {"items": 5, "questions": 2, "answerable": 4, "unanswerable": 1}
    examples = read_bioasq_squad(tmp_path / "out" / "squad.json")
    assert [(e.id, e.is_impossible) for e in examples] == [("f1_001", False), ("f1_002", True), ("f1_003", False),
                                                           ("f2_001", False), ("f2_002", False)]
    gold = golden_from_squad(examples)
    assert gold["questions"] == [{"id": "f1", "type": "factoid", "exact_answer": [["brca1", "BRCA1"]]},
                                 {"id": "f2", "type": "factoid", "exact_answer": [["p53", "TP53"]]}]


def test_shipped_bioasq_7b_files_read_and_score():
    train = read_bioasq_squad(require_shared("BioASQ", "BioASQ-train-factoid-7b.json"))
    test = read_bioasq_squad(require_shared("BioASQ", "BioASQ-test-factoid-7b.json"))
    assert (len(train), len({question_id(e.id) for e in train})) == (4231, 530)
    assert (len(test), len({question_id(e.id) for e in test})) == (512, 162)
    assert all(len(e.answers) == 1 for e in train) and all(not e.answers for e in test)
    assert not {question_id(e.id) for e in train} & {question_id(e.id) for e in test}
    # an oracle n-best (each snippet's gold span) merged per question is right wherever the merge keeps it:
    # answers over 100 characters are dropped (BioBERT's rule); 17 questions have only such answers
    gold = golden_from_squad(train)
    nbest = {e.id: [nb(e.answers[0]["text"], 1.0)] for e in train}
    merged = merge_nbest(nbest)
    long_only = {q for q, answers in merged.items() if not answers}
    assert len(long_only) == 17
    assert all(len(e.answers[0]["text"]) > 100 for e in train if question_id(e.id) in long_only)
    out = bioasq_factoid_scores(gold, merged)
    assert (out["strict"], out["lenient"], out["mrr"], out["n"]) == (100 * 513 / 530,) * 3 + (530,)


# --------------------------------------------------------------------------------------------------- CLI


def run(*args):
    return subprocess.run([sys.executable, "-m", "biogpt_train.score", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_bioasq_factoid(tmp_path):
    g1 = tmp_path / "7B1_golden.json"
    g1.write_text(json.dumps(golden(("a", "factoid", [["x"]]))))
    g2 = tmp_path / "7B2_golden.json"
    g2.write_text(json.dumps(golden(("b", "factoid", [["x"]]), ("c", "factoid", [["x"]]))))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": ["X"], "b": ["y", "x"], "c": []}))
    proc = run("task=bioasq_factoid", f"pred={pred}", f"gold={g2}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"strict": 0.0, "lenient": 50.0, "mrr": 25.0,
                                                                "n": 2, "missing": 0}
    proc = run("task=bioasq_factoid", f"pred={pred}", f"gold={g1},{g2}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["strict"], result["lenient"], result["mrr"], result["n"]) == (50.0, 75.0, 62.5, 3)
    assert result["concatenated"]["strict"] == pytest.approx(100 / 3)

    yesno = tmp_path / "yesno_golden.json"
    yesno.write_text(json.dumps(golden(("a", "yesno", "yes"))))
    proc = run("task=bioasq_factoid", f"pred={pred}", f"gold={yesno}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {yesno}: no factoid question in this golden file"]
    proc = run("task=bioasq_factoid", f"pred={pred}", f"gold={g1}", "na_probs=x.json")
    assert proc.returncode == 2 and "na_probs= applies to squad_v2 only" in proc.stderr
