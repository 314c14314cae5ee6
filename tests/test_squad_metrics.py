"""SQuAD v1.1 / v2.0 EM and F1 (biogpt_train/scoring/squad.py) on hand-made cases worked out from the official
evaluate-v1.1.py / evaluate-v2.0.py definitions, and the score CLI for squad_v1 / squad_v2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from biogpt_train.scoring.squad import exact_score, f1_score, normalize_answer, squad_scores

REPO = Path(__file__).resolve().parents[1]


def dataset(*qas):
    """SQuAD JSON from (id, [gold texts]) pairs; an empty list is an unanswerable question."""
    return {"version": "x", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
        {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in golds]}
        for qid, golds in qas]}]}]}


def test_normalisation():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("an apple, a day; THE end.") == "apple day end"
    assert normalize_answer("theatre anatomy") == "theatre anatomy"  # articles only as whole words
    assert normalize_answer("x-ray (5')") == "xray 5"  # punctuation removed, not replaced by a space
    assert normalize_answer("A\tb\n c") == "b c"
    assert normalize_answer("the-cat") == "thecat"  # punctuation goes first, so "the" is no longer a word
    assert exact_score("The Eiffel Tower.", "eiffel tower") == 1
    assert f1_score("the quick brown fox", "quick fox jumps") == pytest.approx(2 / 3)  # P = R = 2/3
    assert f1_score("a b b", "b b b c") == pytest.approx(2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2))
    assert f1_score("", "", version=2) == 1.0 and f1_score("", "", version=1) == 0.0
    assert f1_score("the", "an", version=2) == 1.0  # both normalise to nothing


def test_v1_max_over_golds_and_missing_prediction_counts_zero():
    data = dataset(("q1", ["Denver Broncos", "the Broncos"]), ("q2", ["Santa Clara, California"]),
                   ("q3", ["gold"]))
    preds = {"q1": "Broncos", "q2": "Santa Clara"}  # q3 has no prediction
    out = squad_scores(data, preds, version=1)
    # q1: EM 1 against "the Broncos"; q2: EM 0, F1 2*(1)*(2/3)/(1+2/3) = 0.8; q3: 0
    assert out["exact"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0.8) / 3)
    assert (out["total"], out["missing"]) == (3, 1)


def test_v1_needs_gold_answers_and_string_predictions():
    with pytest.raises(ValueError, match="question 'q2' has no gold answer"):
        squad_scores(dataset(("q1", ["a"]), ("q2", [])), {"q1": "a", "q2": ""}, version=1)
    with pytest.raises(ValueError, match="the answer for 'q1' is list"):
        squad_scores(dataset(("q1", ["a"])), {"q1": ["a"]}, version=1)
    with pytest.raises(ValueError, match="na_probs applies to SQuAD v2 only"):
        squad_scores(dataset(("q1", ["a"])), {"q1": "a"}, version=1, na_probs={"q1": 0.0})
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        squad_scores(dataset(("q1", ["a"])), {"q1": "a"}, version=3)


V2 = dataset(("q1", ["Paris"]), ("q2", ["red apple"]), ("q3", []), ("q4", []))
V2_PREDS = {"q1": "Paris", "q2": "green apple", "q3": "", "q4": "London"}


def test_v2_splits_without_na_probs():
    out = squad_scores(V2, V2_PREDS, version=2)
    # EM: q1 1, q2 0, q3 1 (empty matches empty), q4 0;  F1: 1, 0.5, 1, 0
    assert out == pytest.approx({"exact": 50.0, "f1": 62.5, "total": 4,
                                 "HasAns_exact": 50.0, "HasAns_f1": 75.0, "HasAns_total": 2,
                                 "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})
    assert "best_exact" not in out


def test_v2_na_prob_threshold_and_best_threshold():
    na = {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.95}
    out = squad_scores(V2, V2_PREDS, version=2, na_probs=na, na_prob_thresh=0.5)
    # q2, q3, q4 are above 0.5: scored as "" -> q2 0, q3 1, q4 1
    assert (out["exact"], out["f1"]) == pytest.approx((75.0, 75.0))
    assert (out["NoAns_exact"], out["HasAns_f1"]) == pytest.approx((100.0, 50.0))
    # best threshold: start at 2 (both no-answer questions right), admit by ascending na_prob:
    # EM: q1 +1 -> 3 (best, 0.1), q2 +0, q3 +0, q4 -1;  F1: q1 -> 3, q2 +0.5 -> 3.5 (best, 0.6), q3, q4 -1
    assert (out["best_exact"], out["best_exact_thresh"]) == pytest.approx((75.0, 0.1))
    assert (out["best_f1"], out["best_f1_thresh"]) == pytest.approx((87.5, 0.6))
    # with the default na_prob_thresh 1.0 nothing is forced to "", but best_* are still computed
    out = squad_scores(V2, V2_PREDS, version=2, na_probs=na)
    assert (out["exact"], out["best_exact"]) == pytest.approx((50.0, 75.0))


def test_v2_best_threshold_all_abstain_is_the_start():
    data = dataset(("q1", ["x"]), ("q2", []), ("q3", []))
    out = squad_scores(data, {"q1": "wrong", "q2": "y", "q3": ""}, version=2,
                       na_probs={"q1": 0.2, "q2": 0.3, "q3": 0.4})
    assert (out["best_exact"], out["best_exact_thresh"]) == pytest.approx((200 / 3, 0.0))


def test_v2_gold_normalising_to_empty_counts_as_no_answer_but_has_ans():
    data = dataset(("q1", ["The", "  "]), ("q2", ["the", "Mars"]))
    out = squad_scores(data, {"q1": "", "q2": "Mars"}, version=2)
    assert out["exact"] == 100.0 and out["HasAns_total"] == 2 and "NoAns_total" not in out


def test_v2_missing_predictions_and_na_probs_are_errors():
    with pytest.raises(ValueError, match=r"1 of 4 questions have no prediction \(e.g. \['q4'\]\)"):
        squad_scores(V2, {k: v for k, v in V2_PREDS.items() if k != "q4"}, version=2)
    with pytest.raises(ValueError, match="na_probs: no probability for 1 predicted"):
        squad_scores(V2, V2_PREDS, version=2, na_probs={"q1": 0, "q2": 0, "q3": 0})
    with pytest.raises(ValueError, match="not a SQuAD JSON file"):
        squad_scores({"questions": []}, {}, version=2)


# --------------------------------------------------------------------------------------------------- CLI


def run(*args):
    return subprocess.run([sys.executable, "-m", "biogpt_train.score", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_cli_squad_v1_and_v2(tmp_path):
    gold = write(tmp_path / "dev.json", V2)
    pred = write(tmp_path / "pred.json", V2_PREDS)
    na = write(tmp_path / "na.json", {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.95})
    proc = run("task=squad_v2", f"pred={pred}", f"gold={gold}", f"na_probs={na}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert len(lines) > 1 and result["exact"] == 50.0 and result["HasAns_f1"] == 75.0
    assert result["best_f1"] == 87.5 and result["best_f1_thresh"] == 0.6

    gold1 = write(tmp_path / "dev1.json", dataset(("q1", ["Paris"]), ("q2", ["red apple"])))
    proc = run("task=squad_v1", f"pred={pred}", f"gold={gold1}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"exact": 50.0, "f1": 75.0, "total": 2,
                                                                 "missing": 0}


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    gold = write(tmp_path / "dev.json", V2)
    pred = write(tmp_path / "pred.json", {"q1": "Paris"})
    proc = run("task=squad_v2", f"pred={pred}", f"gold={gold}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {pred}: 3 of 4 questions have no prediction (e.g. ['q2', 'q3', 'q4']); SQuAD v2 needs one per "
        'question ("" for no answer)']
    proc = run("task=squad_v1", f"pred={pred}", f"gold={gold}", f"na_probs={pred}")
    assert proc.returncode == 2 and "na_probs= applies to squad_v2 only" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    proc = run("task=squad_v1", f"pred={bad}", f"gold={gold}")
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {bad}: not valid JSON")
    proc = run("task=squad_v1", f"pred={tmp_path / 'absent.json'}", f"gold={gold}")
    assert proc.returncode == 1 and "absent.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
