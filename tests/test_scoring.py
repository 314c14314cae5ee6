"""Scoring: hand-computed cases for every edge case of reference §7 / §7.6 (no shared data needed)."""

import json

import pytest

from biogpt_train.scoring import SCORERS, score
from biogpt_train.scoring.bc5cdr import normalize_id, parse_relations, read_pubtator
from biogpt_train.scoring.formats import parse_triples, render_target
from biogpt_train.scoring.hard_match import evaluate, normalize_name, only_abbr, without_abbr
from biogpt_train.scoring.hoc import extract_labels
from biogpt_train.scoring.prefix import PREFIXES, answer_text, clean_line, strip_prefix
from biogpt_train.scoring.pubmedqa import extract_answer

P9 = " ".join(f"learned{i}" for i in range(1, 10))


def write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def test_registry_has_the_five_tasks():
    assert set(SCORERS) == {"bc5cdr", "kd_dti", "ddi", "pubmedqa", "hoc"}


# ------------------------------------------------------------------------------------------------ prefix


def test_clean_line_drops_one_final_dot():
    assert clean_line("  yes..\n") == "yes."
    assert clean_line("yes") == "yes"
    assert clean_line("   ") == ""


def test_learned_prefix_cut_at_last_occurrence():
    assert answer_text("src learned1 learned2 the answer.", "kd_dti") == "the answer"
    # the first pattern that occurs wins, and the line is cut after its *last* occurrence
    assert answer_text("a learned1 b learned1 learned2 c", "hoc") == "c"
    # no space after the last prompt token: the pattern stops one token early (as the original)
    assert answer_text(f"src {P9}", "kd_dti") == "learned9"


def test_prefix_pattern_order_differs_per_task():
    line = "we have that a in conclusion , b"
    assert answer_text(line, "bc5cdr") == "b"  # bc5cdr lists "in conclusion ," before "we have that"
    assert answer_text(line, "kd_dti") == "a in conclusion , b"


def test_manual_prompt_in_conclusion_tokenised_vs_detokenised():
    assert "in conclusion ," in PREFIXES["bc5cdr"] and "in conclusion," not in PREFIXES["bc5cdr"]
    detok = "src in conclusion, the relation between aspirin and pain exists."
    tok = "src in conclusion , the relation between aspirin and pain exists."
    assert parse_relations(answer_text(detok, "bc5cdr")) == []  # not stripped -> re.match fails at "src"
    assert parse_relations(answer_text(tok, "bc5cdr")) == [("aspirin", "pain")]
    assert parse_triples(answer_text("src in conclusion, the interaction between a and b is c.", "kd_dti")) == [
        ("a", "b", "c")]
    assert strip_prefix("nothing here", PREFIXES["ddi"]) == "nothing here"


# ------------------------------------------------------------------------------------------------ bc5cdr

GOLD_PUBTATOR = """100|t|Title one.
100|a|Abstract one.
100\t0\t7\taspirin\tChemical\tD001241
100\tCID\tD001241\tD006973
100\tCID\tD001241\tD007022

200|t|Title two
200|a|Abstract two
200\tCID\tMESH:D002\tD003

300|t|No relations here
300|a|x
"""

ENTITIES = {
    "chemical2id": {"aspirin": "D001241", "x and y": "D009", "lc": "d002"},
    "disease2id": {"hypertension": "D006973", "hypotension": "D007022", "pain": "D003"},
}

BC5CDR_LINES = [
    # TP (duplicate collapses); foo/bar are unmapped -> (None, D003) twice -> ONE FP; foo+nausea -> (None, None) FP
    f"src {P9} the relation between aspirin and hypertension exists; the relation between aspirin and "
    "hypertension exists; the relation between foo and pain exists; the relation between bar and pain exists; "
    "the relation between foo and nausea exists.",
    # ids are case-sensitive: "d002" -> MESH:d002 != MESH:D002 -> FP
    f"src {P9} the relation between lc and pain exists.",
    # greedy split at the last " and ": chemical "x and y", disease "pain" -> FP (doc has no gold relation)
    f"src {P9} the relation between x and y and pain exists.",
]


def test_bc5cdr_hand_computed(tmp_path):
    gold = write(tmp_path / "gold.PubTator", GOLD_PUBTATOR)
    r = score("bc5cdr", BC5CDR_LINES, gold, pmids=["100", "200", "300"], entities=ENTITIES)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 4, 2)
    assert r["precision"] == pytest.approx(20.0)
    assert r["recall"] == pytest.approx(100 / 3)
    assert r["f1"] == pytest.approx(25.0)
    assert r["unmapped_pairs"] == 2 and r["unpredicted_docs"] == 0 and r["failed_lines"] == 0
    # a line for a document absent from the gold file: the original drops it silently; here it is an error
    extra = BC5CDR_LINES + [f"src {P9} the relation between aspirin and hypotension exists."]
    with pytest.raises(ValueError, match=r"1 of the 4 ids in pmids=<list> are not documents of .*gold\.PubTator"):
        score("bc5cdr", extra, gold, pmids=["100", "200", "300", "999"], entities=ENTITIES)


def test_bc5cdr_split_on_semicolon_and_greedy_and():
    assert parse_relations("the relation between a and b exists;the relation between c and d exists") == [
        ("a", "b"), ("c", "d")]
    assert parse_relations("the relation between a and b and c exists") == [("a and b", "c")]
    assert parse_relations("nothing") == []


def test_bc5cdr_id_normalisation():
    assert normalize_id("-1") is None and normalize_id("") is None
    assert normalize_id("D001") == "MESH:D001" and normalize_id("MESH:D001") == "MESH:D001"
    assert normalize_id("CHEBI:1") == "CHEBI:1"


def test_bc5cdr_nan_rules_and_empty_lines(tmp_path):
    gold = write(tmp_path / "gold.PubTator", GOLD_PUBTATOR)
    # empty / whitespace lines: the original crashes (IndexError); we count them as failed lines
    r = score("bc5cdr", ["", "   ", f"src {P9} no relation."], gold, pmids=["100", "200", "300"], entities=ENTITIES)
    assert r["failed_lines"] == 3 and (r["tp"], r["fp"], r["fn"]) == (0, 0, 3)
    assert r["precision"] is None and r["recall"] == 0 and r["f1"] is None  # Java: NaN, 0, NaN
    # TP = 0, FP > 0: precision 0, F NaN
    r = score("bc5cdr", [f"src {P9} the relation between lc and pain exists."], gold, pmids=["200"],
              entities=ENTITIES, allow_missing=True)  # document 100 unpredicted: its 2 relations are FN
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 3) and r["precision"] == 0 and r["f1"] is None
    assert json.loads(json.dumps(r))["f1"] is None


def test_bc5cdr_more_lines_than_pmids_is_an_error(tmp_path):
    gold = write(tmp_path / "gold.PubTator", GOLD_PUBTATOR)
    with pytest.raises(ValueError, match="2 prediction lines in pred=<list> but 1 ids in pmids=<list>"):
        score("bc5cdr", ["a", "b"], gold, pmids=["100"], entities=ENTITIES)
    with pytest.raises(ValueError, match="needs pmids"):
        score("bc5cdr", ["a"], gold, entities=ENTITIES)


def test_pubtator_reader_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.PubTator", "1|t|x\n1|a|y\nthis is not pubtator\n")
    with pytest.raises(ValueError, match=r"bad\.PubTator:3: not a PubTator line"):
        read_pubtator(bad)


def test_bc5cdr_crlf_equals_lf(tmp_path):
    lf = write(tmp_path / "lf.PubTator", GOLD_PUBTATOR)
    crlf = write(tmp_path / "crlf.PubTator", GOLD_PUBTATOR, "\r\n")
    pred_lf = write(tmp_path / "pred_lf.txt", "\n".join(BC5CDR_LINES) + "\n")
    pred_crlf = write(tmp_path / "pred_crlf.txt", "\n".join(BC5CDR_LINES) + "\n", "\r\n")
    pmids = write(tmp_path / "p.pmid", "100\n200\n300\n", "\r\n")
    assert read_pubtator(lf) == read_pubtator(crlf)
    a = score("bc5cdr", str(pred_lf), lf, pmids=str(pmids), entities=ENTITIES)
    b = score("bc5cdr", str(pred_crlf), crlf, pmids=str(pmids), entities=ENTITIES)
    assert a == b and a["tp"] == 1


# -------------------------------------------------------------------------------------- KD-DTI / DDI

HM_GOLD = {
    "d1": {"triples": [{"drug": "Aspirin", "target": "COX-1 (PTGS1)", "interaction": "inhibitor"},
                       {"drug": "aspirin", "target": "cox 2", "interaction": "Inhibitor"}]},
    "d2": {"triples": [{"drug": "x", "target": "y", "interaction": "agonist"}]},
    "d3": {"triples": []},
}


def relis(*triples):
    return "; ".join(f"the interaction between {d} and {t} is {r}" for d, t, r in triples)


def test_hard_match_hand_computed(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(HM_GOLD))
    lines = [
        # abbr variant: P 2/3, R 1; body variant: P 1/3, R 1/2 -> P 2/3, R 1, F 0.8
        f"src {P9} " + relis(("aspirin", "ptgs1", "inhibitor"), ("aspirin", "cox 2", "inhibitor"),
                             ("aspirin", "cox 3", "inhibitor")) + ".",
        f"src {P9} garbage.",  # failed: P 0, R 0, F 0
        f"src {P9} nothing either.",  # d3: empty pred and empty gold: P = R = int(set() == set()) = 1
    ]
    r = score("kd_dti", lines, gold, pmids=["d1", "d2", "d3"])
    assert r["docs"] == 3 and r["unpredicted_docs"] == 0 and r["failed_lines"] == 2
    assert r["precision"] == pytest.approx(100 * 5 / 9)
    assert r["recall"] == pytest.approx(100 * 2 / 3)
    assert r["f1"] == pytest.approx(60.0)  # mean of per-document F1 (0.8, 0, 1), below both P and R
    assert r["macro_f1"] == pytest.approx(100 * 20 / 33)  # get_f1(avg P, avg R)
    # corpus ("Ontology"): union of sets; abbr variant P = R = 2/3
    assert r["corpus"]["precision"] == pytest.approx(200 / 3)
    assert r["corpus"]["recall"] == pytest.approx(200 / 3)
    assert r["corpus"]["f1"] == pytest.approx(200 / 3)


def test_hard_match_default_pmids_follow_rebuild_data(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(HM_GOLD))
    # default order: JSON order without documents that have no triples -> d1, d2
    r = score("ddi", [relis(("aspirin", "cox 2", "inhibitor")), relis(("x", "y", "agonist"))], gold)
    assert r["docs"] == 2 and r["recall"] == pytest.approx(75.0) and r["precision"] == pytest.approx(100.0)


def test_hard_match_no_aligned_document_is_an_error(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(HM_GOLD))
    with pytest.raises(ValueError, match=r"1 of the 1 ids in pmids=<list> are not documents of .*gold\.json"):
        score("kd_dti", ["x"], gold, pmids=["nope"])
    with pytest.raises(ValueError, match="no prediction line lines up"):  # the evaluator itself still refuses
        evaluate([[]], ["nope"], HM_GOLD)


@pytest.mark.parametrize("task", ["kd_dti", "ddi"])
def test_hard_match_fewer_lines_than_gold_documents_is_refused(task, tmp_path):
    """A truncated prediction file used to score 100 on the decoded subset with rc 0 (zip)."""
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(HM_GOLD))
    pred = tmp_path / "pred.detok"
    pred.write_text(f"src {P9} " + relis(("aspirin", "cox-1 (ptgs1)", "inhibitor"), ("aspirin", "cox 2", "inhibitor"))
                    + ".\n")
    # without ids: line i is the i-th gold document with triples (d1, d2)
    with pytest.raises(ValueError, match=rf"{task}: 1 prediction lines in .*pred\.detok but 2 gold documents in "
                                         r".*gold\.json; 1 have no prediction \(e\.g\. \['d2'\]\).*allow_missing=true"):
        score(task, pred, gold)
    with pytest.raises(ValueError, match="1 have no prediction"):  # with ids too
        score(task, pred, gold, pmids=["d1"])
    r = score(task, pred, gold, allow_missing=True)  # d2 scored as an empty prediction
    assert r["unpredicted_docs"] == 1 and r["docs"] == 2
    assert r["precision"] == pytest.approx(50.0) and r["recall"] == pytest.approx(50.0)
    assert r["units"]["values"] == [1.0, 0]
    # extra lines are always an error, allow_missing or not
    with pytest.raises(ValueError, match=r"3 prediction lines in pred=<list> but 2 gold documents"):
        score(task, ["a", "b", "c"], gold, allow_missing=True)
    with pytest.raises(ValueError, match=r"2 prediction lines in pred=<list> but 1 ids"):
        score(task, ["a", "b"], gold, pmids=["d1"], allow_missing=True)
    with pytest.raises(ValueError, match=r"appear more than once in pmids=<list>"):
        score(task, ["a", "b"], gold, pmids=["d1", "d1"], allow_missing=True)


def test_bc5cdr_fewer_lines_than_gold_documents_is_refused(tmp_path):
    gold = write(tmp_path / "gold.PubTator", GOLD_PUBTATOR)
    pmids = write(tmp_path / "test.pmid", "100\n")
    line = f"src {P9} the relation between aspirin and hypertension exists; the relation between aspirin and " \
           "hypotension exists."
    # document 300 has no CID relation: it need not be predicted; 200 has one
    with pytest.raises(ValueError, match=r"bc5cdr: 1 prediction lines in pred=<list> but 2 gold documents "
                                         r"in .*gold\.PubTator; 1 have no prediction \(e\.g\. \['200'\]\)"):
        score("bc5cdr", [line], gold, pmids=str(pmids), entities=ENTITIES)
    r = score("bc5cdr", [line], gold, pmids=str(pmids), entities=ENTITIES, allow_missing=True)
    assert (r["tp"], r["fp"], r["fn"], r["unpredicted_docs"]) == (2, 0, 1, 1)
    assert r["recall"] == pytest.approx(200 / 3)
    r = score("bc5cdr", [line, "x"], gold, pmids=["100", "200"], entities=ENTITIES)
    assert r["unpredicted_docs"] == 0 and r["recall"] == pytest.approx(200 / 3)


def test_allow_missing_is_refused_where_every_answer_is_needed(tmp_path):
    gold = tmp_path / "truth.json"
    gold.write_text(json.dumps({"1": "yes"}))
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['allow_missing'\]"):
        score("pubmedqa", ["x"], gold, allow_missing=True)


def test_precision_and_recall_take_their_max_over_variants_separately():
    gold = {"d": {"triples": [{"drug": "alpha (zz)", "target": "t1", "interaction": "inhibitor"},
                              {"drug": "omega (zz)", "target": "t1", "interaction": "inhibitor"}]}}
    pred = [[("alpha (xx)", "t1", "inhibitor"), ("alpha (zz)", "t1", "inhibitor")]]
    # abbr variant: P 1/2, R 1; body variant: P 1, R 1/2 -> P 1, R 1
    r = evaluate(pred, ["d"], gold)
    assert r["precision"] == 1 and r["recall"] == 1 and r["f1"] == 1


def test_failed_first_triple_discards_the_line():
    gold = {"d": {"triples": [{"drug": "x", "target": "y", "interaction": "agonist"}]}}
    first = parse_triples(relis(("failed", "y", "agonist"), ("x", "y", "agonist")))
    later = parse_triples(relis(("x", "y", "agonist"), ("failed", "y", "agonist")))
    assert evaluate([first], ["d"], gold)["precision"] == 0  # the whole line is dropped
    r = evaluate([later], ["d"], gold)
    assert r["precision"] == 0.5 and r["recall"] == 1  # a later "failed" triple is an ordinary triple


def test_empty_prediction_set_rules():
    gold = {"g": {"triples": [{"drug": "x", "target": "y", "interaction": "z"}]}, "e": {"triples": []}}
    r = evaluate([[], [("a", "b", "c")]], ["g", "e"], gold)
    # g: empty pred vs non-empty gold -> P = R = 0; e: pred vs empty gold -> P 0, R = int(pred == gold) = 0
    assert r["precision"] == 0 and r["recall"] == 0 and r["f1"] == 0
    assert evaluate([[]], ["e"], gold)["f1"] == 1


def test_relis_split_on_semicolon_space_only_and_greedy_and():
    # ";" without a space does not separate: one piece, greedy groups
    assert parse_triples("the interaction between x and y is agonist;the interaction between c and d is inhibitor") == [
        ("x and y is agonist;the interaction between c", "d", "inhibitor")]
    assert parse_triples("the interaction between a and b and c is inhibitor") == [("a and b", "c", "inhibitor")]


def test_normalize_name_roman_numerals_and_type():
    assert normalize_name("type2") == "typeII"
    assert normalize_name("typeii") == "typeii"  # so "type 2" never equals "type ii"
    assert normalize_name("type-2") == "typeII"
    assert normalize_name("ab12") == "ab12" and normalize_name("a1") == "a1"
    assert normalize_name("t-typechannel") == "tchannel"
    assert normalize_name("cox-1") == "coxI"
    assert without_abbr("cox-1(ptgs1)") == "coxI" and only_abbr("cox-1(ptgs1)") == "ptgsI"
    assert without_abbr("plain") == only_abbr("plain") == "plain"


def test_roman_normalisation_in_evaluation():
    gold = {"d": {"triples": [{"drug": "x", "target": "receptor type 2", "interaction": "agonist"}]}}
    assert evaluate([[("x", "receptor type-2", "agonist")]], ["d"], gold)["f1"] == 1
    assert evaluate([[("x", "receptor type ii", "agonist")]], ["d"], gold)["f1"] == 0


def test_target_formats_round_trip_and_aliases():
    triples = [("Manumycin A", "CAAX farnesyltransferase beta (FNTB)", "Inhibitor"),
               ("x", "y and z", "product of"), ("d2", "t2", "positive allosteric modulator")]
    lowered = [tuple(s.lower() for s in t) for t in triples]
    for fmt in ("rel-is", "relis", "svo", "is-of", "isof", "htr"):
        text = clean_line(render_target(triples, fmt))
        got = parse_triples(text, fmt)
        if fmt in ("rel-is", "relis"):
            assert got[1] == ("x and y", "z", "product of")  # the greedy " and " split of the original
        else:
            assert got == lowered, fmt
    assert render_target(triples[:1], "htr") == (
        "<h> manumycin a <t> caax farnesyltransferase beta (fntb) <r> inhibitor.")
    assert render_target(triples[:1], "svo") == "manumycin a inhibits caax farnesyltransferase beta (fntb)."
    # Moses detokenisation may leave "< h >"
    assert parse_triples("< h > a < t > b < r > agonist", "htr") == [("a", "b", "agonist")]
    with pytest.raises(ValueError, match="unknown target format"):
        parse_triples("x", "bogus")


# --------------------------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_answer_extraction():
    assert extract_answer(f"q {P9} the answer to the question given the context is yes, because x.") == "yes, because x"
    assert extract_answer(f"q {P9} the answer to the question given the context is yes..") == "yes."
    assert extract_answer(f"q {P9} The answer to the question given the context is yes.") == "failed"
    assert extract_answer("") == "failed"


def test_pubmedqa_accuracy_and_macro_f1_with_failed_class(tmp_path):
    gold = tmp_path / "test_ground_truth.json"
    gold.write_text(json.dumps({"1": "yes", "2": "yes", "3": "no", "4": "maybe"}))
    stem = f"q {P9} the answer to the question given the context is"
    lines = [f"{stem} yes.", f"q {P9} The answer to the question given the context is yes.", f"{stem} no.",
             f"{stem} no."]
    r = score("pubmedqa", lines, gold)
    assert r["accuracy"] == pytest.approx(50.0) and r["failed"] == 1
    # classes yes, no, maybe, failed: F1 2/3, 2/3, 0, 0 -> 1/3 (4/9 if "failed" were not a class)
    assert r["macro_f1"] == pytest.approx(100 / 3)
    # aligned by id when pmids are given
    r2 = score("pubmedqa", [lines[2], lines[0], lines[3], lines[1]], gold, pmids=["3", "1", "4", "2"])
    assert r2 == r
    with pytest.raises(ValueError, match="all and only"):
        score("pubmedqa", lines, gold, pmids=["1", "2", "3", "5"])
    with pytest.raises(ValueError, match="3 prediction lines but 4 gold"):
        score("pubmedqa", lines[:3], gold)


# -------------------------------------------------------------------------------------------------- HoC

HOC_GOLD = ("s1 .\tempty\n\ns2 .\tresisting cell death|genomic instability and mutation\n\n"
            "s3 .\tempty\n")


def test_hoc_micro_f1_ignores_unknown_labels(tmp_path):
    gold = write(tmp_path / "test.tsv", HOC_GOLD)
    lines = ["s1 . learned1 the type of this document is empty.",
             "s2 . learned1 the type of this document is resisting cell death | Empty.",  # "Empty" is ignored
             "s3 . learned1 no answer"]  # "failed" is ignored
    r = score("hoc", lines, gold)
    # TP 2 (empty, resisting cell death), FP 0, FN 2 -> 2TP / (2TP + FP + FN) = 4/6
    assert r["micro_f1"] == pytest.approx(200 / 3)
    assert r["failed"] == 1 and r["lines_with_unknown_labels"] == 2
    assert extract_labels("x learned1 the type of this document is a|b.") == "a|b"


def test_hoc_counts_must_match_and_crlf(tmp_path):
    gold = write(tmp_path / "test.tsv", HOC_GOLD)
    with pytest.raises(ValueError, match="2 prediction lines but 3 non-blank gold lines"):
        score("hoc", ["a", "b"], gold)
    lines = "x learned1 the type of this document is empty.\n" * 3
    lf = score("hoc", str(write(tmp_path / "lf.txt", lines)), gold)
    crlf = score("hoc", str(write(tmp_path / "crlf.txt", lines, "\r\n")), write(tmp_path / "g.tsv", HOC_GOLD, "\r\n"))
    # all "empty": TP 2, FP 1, FN 2 -> 4/7
    assert lf == crlf and lf["micro_f1"] == pytest.approx(400 / 7)


def test_score_rejects_unknown_task_and_stray_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        score("nope", [], tmp_path / "x")
    with pytest.raises(ValueError, match="only used by bc5cdr"):
        score("hoc", [], tmp_path / "x", entities={})
    with pytest.raises(ValueError, match="takes no option"):
        score("hoc", [], tmp_path / "x", target_format="svo")


# ------------------------------------------------------------------------------ units and paper numbers


def _micro(units):
    tp, fp, fn = (sum(units[k]) for k in ("tp", "fp", "fn"))
    return 100 * 2 * tp / (2 * tp + fp + fn)


def test_units_recompute_the_headline_metric(tmp_path):
    gold = write(tmp_path / "gold.PubTator", GOLD_PUBTATOR)
    r = score("bc5cdr", BC5CDR_LINES, gold, pmids=["100", "200", "300"], entities=ENTITIES)
    assert r["units"]["kind"] == "micro_f1" and len(r["units"]["tp"]) == 3  # one entry per gold document
    assert (sum(r["units"]["tp"]), sum(r["units"]["fp"]), sum(r["units"]["fn"])) == (1, 4, 2)
    assert _micro(r["units"]) == pytest.approx(r["f1"])

    hm = tmp_path / "hm.json"
    hm.write_text(json.dumps(HM_GOLD))
    r = score("kd_dti", [relis(("aspirin", "cox 2", "inhibitor")), "x"], hm)
    assert r["units"] == {"kind": "mean", "values": [pytest.approx(2 / 3), 0]}
    assert 100 * sum(r["units"]["values"]) / 2 == pytest.approx(r["f1"])

    hoc = write(tmp_path / "test.tsv", HOC_GOLD)
    r = score("hoc", ["x learned1 the type of this document is empty."] * 3, hoc)
    assert r["units"] == {"kind": "micro_f1", "tp": [1, 0, 1], "fp": [0, 1, 0], "fn": [0, 2, 0]}
    assert _micro(r["units"]) == pytest.approx(r["micro_f1"])

    qa = tmp_path / "gt.json"
    qa.write_text(json.dumps({"1": "yes", "2": "no"}))
    stem = "q learned1 the answer to the question given the context is"
    r = score("pubmedqa", [f"{stem} yes.", f"{stem} yes."], qa)
    assert r["units"] == {"kind": "mean", "values": [1, 0]}


def test_paper_results_lookup():
    from biogpt_train.tasks.paper_results import KD_DTI_TARGET_FORMAT, MAIN_RESULTS, lookup

    assert lookup("bc5cdr") == 44.98 and lookup("bc5cdr", metric="precision") == 49.44
    assert lookup("kd_dti") == 38.42 and lookup("ddi") == 40.76
    assert lookup("pubmedqa") == 78.2 and lookup("hoc") == 85.12
    assert lookup("pubmedqa", "biogpt_large") == 81.0 and lookup("hoc", "biogpt_large") == 84.40
    assert lookup("kd_dti", "biogpt_large", "precision") is None and lookup("nope") is None
    assert KD_DTI_TARGET_FORMAT["rel-is"]["f1"] == 38.38 and KD_DTI_TARGET_FORMAT["htr"]["f1"] == 37.32
    assert all("source" in row for rows in MAIN_RESULTS.values() for row in rows.values())
