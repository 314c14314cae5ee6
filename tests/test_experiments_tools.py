"""Bootstrap intervals, contamination n-grams and the results table, on hand-made cases."""

import json

import pytest
from scipy.stats import binom

from experiments import bootstrap, contamination


def test_bootstrap_of_a_proportion_matches_the_binomial_quantiles():
    # Resampling n Bernoulli outcomes with p_hat = 0.3 makes the resampled mean exactly Binomial(n, 0.3) / n,
    # so the percentile interval must sit on the binomial quantiles.
    n = 100
    units = {"kind": "mean", "values": [1] * 30 + [0] * 70}
    low, high = bootstrap.bootstrap_ci(units, samples=20000, seed=1)
    assert low == pytest.approx(100 * binom.ppf(0.025, n, 0.3) / n, abs=1.0)
    assert high == pytest.approx(100 * binom.ppf(0.975, n, 0.3) / n, abs=1.0)
    assert bootstrap.point_estimate(units) == pytest.approx(30.0)


def test_micro_f1_units_sum_counts_before_dividing():
    units = {"kind": "micro_f1", "tp": [1, 0], "fp": [0, 2], "fn": [1, 0]}
    # TP=1, FP=2, FN=1 -> F1 = 2 / (2 + 2 + 1)
    assert bootstrap.point_estimate(units) == pytest.approx(40.0)
    perfect = {"kind": "micro_f1", "tp": [2, 3, 1], "fp": [0, 0, 0], "fn": [0, 0, 0]}
    assert bootstrap.bootstrap_ci(perfect, samples=200) == (100.0, 100.0)


def test_bootstrap_over_seeds_requires_the_same_documents():
    a = {"kind": "mean", "values": [1, 0, 1]}
    b = {"kind": "mean", "values": [1, 0]}
    with pytest.raises(ValueError, match="different numbers"):
        bootstrap.bootstrap_ci_over_seeds([a, b])
    # one seed repeated: exactly the single-seed interval (same resamples for the same seed)
    assert bootstrap.bootstrap_ci_over_seeds([a, a], samples=500, seed=3) == bootstrap.bootstrap_ci(
        a, samples=500, seed=3)


def test_bootstrap_over_seeds_resamples_the_same_documents_for_every_seed():
    # seed 2 is right exactly where seed 1 is wrong: every document averages to 50 %, so resampling documents
    # (shared across seeds) gives a zero-width interval; independent resamples per seed would not
    values = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0]
    a = {"kind": "mean", "values": values}
    b = {"kind": "mean", "values": [1 - v for v in values]}
    assert bootstrap.bootstrap_ci_over_seeds([a, b], samples=300) == pytest.approx((50.0, 50.0))
    assert bootstrap.bootstrap_ci(a, samples=300)[1] - bootstrap.bootstrap_ci(a, samples=300)[0] > 20


def test_contamination_finds_a_shared_13_gram(tmp_path):
    shared = "the quick brown fox jumps over the lazy dog near the river bank today"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        json.dumps({"id": "a", "title": "Unrelated", "abstract": "nothing in common here at all"}) + "\n"
        + json.dumps({"id": "b", "title": "Shared", "abstract": shared.upper() + " and more"}) + "\n",
        encoding="utf-8",
    )
    tests = {"toy": ["first test line has no overlap", "prefix " + shared + " suffix"]}
    report = contamination.find_overlaps([corpus], tests, n=13)
    toy = report["tasks"]["toy"]
    assert report["corpus_documents"] == 2
    assert toy["contaminated"] == 1
    assert [o["corpus_doc"] for o in toy["overlaps"]["1"]] == ["b"]
    # 12 shared words are not a 13-gram
    short = {"toy": [" ".join(shared.split()[:12])]}
    assert contamination.find_overlaps([corpus], short, n=13)["tasks"]["toy"]["contaminated"] == 0


def test_contamination_words_unescape_moses_and_lowercase():
    assert contamination.words("Tumor &amp; Node-3 &apos;s") == ["tumor", "node", "3", "s"]


def test_bootstrap_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown units kind"):
        bootstrap.bootstrap_ci({"kind": "median", "values": [1]})
    assert bootstrap.point_estimate({"kind": "mean", "values": [0.5, 0.25]}) == pytest.approx(37.5)
    assert bootstrap.point_estimate({"kind": "mean", "values": [0.5, 0.25], "scale": 1.0}) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="empty set"):
        bootstrap.bootstrap_ci({"kind": "mean", "values": []})
