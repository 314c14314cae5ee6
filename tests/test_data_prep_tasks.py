"""Fine-tuning task builders (data_prep/tasks): text exactly as BioGPT's rebuild_data.py scripts, counts on the real
files in ../shared/data, binarised pairs equal to tokenizer.encode(line) + [</s>], and clear errors on bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from data_prep.tasks import BUILDERS, SPLIT_BUILDERS, bc5cdr, ddi, hoc, kd_dti, pubmedqa
from data_prep.tasks.common import DataError, join_title_abstract
from tests.conftest import require_shared


def by_id(split):
    return {ex.id: ex for ex in split.examples}


# ------------------------------------------------------------------------------------------- common rules


def test_title_abstract_join_rule():
    assert join_title_abstract("A title.", "Abstract") == "A title. Abstract"
    assert join_title_abstract("A title)", "Abstract") == "A title) Abstract"
    assert join_title_abstract("A title", "Abstract") == "A title. Abstract"
    assert join_title_abstract("Title 2", "Abstract") == "Title 2. Abstract"


def test_longest_mention_ties_keep_first_seen():
    ent2id = {"ab": "D1", "cd": "D1", "abc": "D1", "xyz": "D1", "q": "D2"}
    assert bc5cdr.longest_mention_per_id(ent2id) == {"D1": "abc", "D2": "q"}


def test_relation_to_verb_rules():
    cases = {"inhibitor": "inhibits", "agonist": "agonists", "partial antagonist": "partial antagonists",
             "activator": "activates", "inducer": "induces", "intercalation": "intercalates",
             "binding": "binds", "ligand": "ligands", "product of": "is the product of",
             "other/unknown": "randomly works with"}
    assert {r: kd_dti.relation_to_verb(r) for r in cases} == cases


def test_triple_sort_is_stable_and_case_sensitive():
    text = "aspirin and warfarin interact; heparin too."
    triples = [{"drug": "warfarin"}, {"drug": "Heparin"}, {"drug": "aspirin"}, {"drug": "Zzz"}]
    # "Heparin"/"Zzz" are not found in the lowercased text (-1) and keep their relative order in front
    assert [t["drug"] for t in kd_dti.sort_by_drug_position(triples, text)] == ["Heparin", "Zzz", "aspirin",
                                                                               "warfarin"]


# ------------------------------------------------------------------------------------------------ BC5CDR


@pytest.fixture(scope="module")
def bc5cdr_splits():
    return bc5cdr.build_splits(require_shared("BC5CDR", "raw"))


def test_bc5cdr_counts_and_examples(bc5cdr_splits):
    counts = {s: (len(v.examples), v.dropped, v.has_targets) for s, v in bc5cdr_splits.items()}
    assert counts == {"train": (500, 0, True), "valid": (500, 0, True), "test": (500, 0, False)}
    train = by_id(bc5cdr_splits["train"])
    assert train["2951327"].target == ("the relation between nitroglycerin and hypotension exists; "
                                       "the relation between hydralazine and hypotension exists.")
    # title ends in "." -> joined with a single space; everything lowercased
    assert train["227508"].source.startswith("naloxone reverses the antihypertensive effect of clonidine. "
                                             "in unanesthetized, spontaneously hypertensive rats")
    assert train["227508"].target == "the relation between alpha-methyldopa and hypotensive exists."
    assert bc5cdr_splits["test"].source_file == "test_inputs.json"


def test_bc5cdr_invariants(bc5cdr_splits):
    raw_dir = require_shared("BC5CDR", "raw")
    for split in ("train", "valid"):
        raw = json.loads((raw_dir / f"{split}.json").read_text(encoding="utf-8"))
        examples = bc5cdr_splits[split].examples
        assert [ex.id for ex in examples] == list(raw)  # JSON order
        for ex in examples:
            rec = raw[ex.id]
            assert ex.target.count("the relation between ") == len(rec["relations"])
            assert ex.target.endswith(" exists.") and not ex.target.endswith("; .")
            assert ex.source == ex.source.lower() and ex.target == ex.target.lower()
            assert ex.source == join_title_abstract(rec["title"], rec["abstract"]).lower()
    assert sum(ex.target.count("the relation between ") for ex in bc5cdr_splits["train"].examples) == 1038
    assert sum(ex.target.count("the relation between ") for ex in bc5cdr_splits["valid"].examples) == 1009
    assert all(ex.source == ex.source.lower() for ex in bc5cdr_splits["test"].examples)


# ------------------------------------------------------------------------------------------------ KD-DTI


def test_kd_dti_valid(tmp_path):
    splits = kd_dti.build_splits(require_shared("KD-DTI", "raw"))
    assert {s: (len(v.examples), v.has_targets) for s, v in splits.items()} == {"valid": (1000, True),
                                                                             "test": (1159, False)}
    ex = by_id(splits["valid"])["12699746"]
    assert ex.target == ("the interaction between manumycin a and caax farnesyltransferase beta (fntb) is inhibitor; "
                         "the interaction between manumycin a and farnesyl protein transferase (ftase) is inhibitor.")
    assert ex.source.startswith("a novel metal-chelating inhibitor of protein farnesyltransferase. a novel metal")
    raw = json.loads(require_shared("KD-DTI", "raw", "valid.json").read_text(encoding="utf-8"))
    for ex in splits["valid"].examples:
        assert ex.target.count("the interaction between ") == len(raw[ex.id]["triples"])
        assert ex.source == ex.source.lower() and ex.target == ex.target.lower()
    assert sum(ex.target.count("the interaction between ") for ex in splits["valid"].examples) == 2269
    assert "864 of 2269 triples" in splits["valid"].notes[0]  # ../shared/data/SOURCES.md §4
    assert all(ex.source == ex.source.lower() for ex in splits["test"].examples)


@pytest.mark.parametrize("fmt, expected", [
    ("svo", "manumycin a inhibits caax farnesyltransferase beta (fntb); "
            "manumycin a inhibits farnesyl protein transferase (ftase)."),
    ("is-of", "manumycin a is the inhibitor of caax farnesyltransferase beta (fntb); "
              "manumycin a is the inhibitor of farnesyl protein transferase (ftase)."),
    ("htr", "<h> manumycin a <t> caax farnesyltransferase beta (fntb) <r> inhibitor "
            "<h> manumycin a <t> farnesyl protein transferase (ftase) <r> inhibitor."),
])
def test_kd_dti_alternative_formats(fmt, expected):
    raw = json.loads(require_shared("KD-DTI", "raw", "valid.json").read_text(encoding="utf-8"))
    assert kd_dti.format_target(raw["12699746"]["triples"], fmt) == expected


def test_kd_dti_drops_documents_without_triples(tmp_path):
    rec = {"title": "T", "abstract": "A.", "pmid": "1", "triples": []}
    (tmp_path / "valid.json").write_text(json.dumps({"1": rec, "2": {**rec, "triples": None},
                                                     "3": {**rec, "triples": [{"drug": "X", "target": "Y",
                                                                               "interaction": "Inhibitor"}]}}))
    split = kd_dti.build_splits(tmp_path)["valid"]
    assert (len(split.examples), split.dropped) == (1, 2)
    assert split.examples[0] == ("3", "t. a.", "the interaction between x and y is inhibitor.")


# --------------------------------------------------------------------------------------------------- DDI


@pytest.fixture(scope="module")
def ddi_splits():
    return ddi.build_splits(require_shared("DDI", "raw"))


def test_ddi_counts(ddi_splits):
    counts = {s: (len(v.examples), v.dropped, v.has_targets) for s, v in ddi_splits.items()}
    assert counts == {"train": (469, 195, True), "valid": (41, 9, True), "test": (191, 0, False)}


def test_ddi_text(ddi_splits):
    raw_dir = require_shared("DDI", "raw")
    ex = by_id(ddi_splits["valid"])["DDI-DrugBank.d108"]
    # every drug is capitalised in the JSON, so none is found in the lowercased text: JSON order is kept
    assert ex.target == ("the interaction between isocarboxazid and antabuse is advise; "
                         "the interaction between isocarboxazid and disulfiram is advise; "
                         "the interaction between mao inhibitor and disulfiram is effect; "
                         "the interaction between isocarboxazid and psychotropic agents is advise.")
    assert ex.source.startswith("isocarboxazid should be administered with caution to patients receiving antabuse")
    for split in ("train", "valid"):
        raw = json.loads((raw_dir / f"{split}.json").read_text(encoding="utf-8"))
        for ex in ddi_splits[split].examples:
            assert ex.source == raw[ex.id]["abstract"].strip().replace("\n", " ").lower()
            assert ex.target.count("the interaction between ") == len(raw[ex.id]["triples"])
    assert sum(ex.target.count("the interaction between ") for ex in ddi_splits["train"].examples) == 3572


def test_ddi_sort_on_raw_text_option(ddi_splits):
    raw_sorted = by_id(ddi.build_splits(require_shared("DDI", "raw"), {"sort_on": "raw"})["valid"])
    default = by_id(ddi_splits["valid"])
    assert default["DDI-MedLine.d130"].target.startswith("the interaction between sodium thiosulfate and cisplatin")
    assert raw_sorted["DDI-MedLine.d130"].target.startswith("the interaction between cisplatin and sodium thiosulfate")
    assert sum(default[k].target != raw_sorted[k].target for k in default) == 17


# ---------------------------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_splits_and_text():
    splits = pubmedqa.build_splits(require_shared("PubMedQA"))
    counts = {s: (len(v.examples), v.has_targets, v.source_file) for s, v in splits.items()}
    assert counts == {"train": (450, True, "pqal_fold0/train_set.json"), "valid": (50, True, "pqal_fold0/dev_set.json"),
                      "test": (500, False, "test_set_inputs.json")}
    ex = by_id(splits["valid"])["27491658"]
    assert ex.source == (
        "question: Can predilatation in transcatheter aortic valve implantation be omitted? context: The use of a "
        "balloon expandable stent valve includes balloon predilatation of the aortic stenosis before valve "
        "deployment. The aim of the study was to see whether or not balloon predilatation is necessary in "
        "transcatheter aortic valve replacement (TAVI). Sixty consecutive TAVI patients were randomized to the "
        "standard procedure or to a protocol where balloon predilatation was omitted. There were no significant "
        "differences between the groups regarding early hemodynamic results or complication rates. ")
    assert ex.target == "the answer to the question given the context is yes."
    labels = [ex.target.rsplit(" ", 1)[1] for ex in splits["train"].examples]
    assert {label: labels.count(label) for label in set(labels)} == {"yes.": 249, "no.": 152, "maybe.": 49}
    for ex in splits["train"].examples + splits["test"].examples:
        # the context's whitespace runs are collapsed; the question is only stripped (one has "retransplantation:  a")
        assert ex.source.startswith("question: ") and ex.source.endswith(" ")
        assert "  " not in ex.source.split(" context: ", 1)[1]
    assert "retransplantation:  a second" in by_id(splits["train"])["23222920"].source
    test_raw = json.loads(require_shared("PubMedQA", "test_set_inputs.json").read_text(encoding="utf-8"))
    assert [ex.id for ex in splits["test"].examples] == list(test_raw)


def _pqal_record(label=None, question="Q?"):
    rec = {"QUESTION": question, "CONTEXTS": [" First  sentence.\n", "Second\nsentence. "], "LABELS": ["A", "B"]}
    if label:
        rec["final_decision"] = label
    return rec


def test_pubmedqa_official_split_shape(tmp_path):
    # 552 yes / 338 no / 110 maybe, as ori_pqal.json: split_dataset.py gives 500 test and fold sizes 450 / 50
    labels = ["yes"] * 552 + ["no"] * 338 + ["maybe"] * 110
    random.Random(5).shuffle(labels)
    ori = {str(10000 + i): _pqal_record(label) for i, label in enumerate(labels)}
    parts = pubmedqa.official_split(ori, 0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 450, "valid": 50, "test": 500}
    assert set(parts["train"]).isdisjoint(parts["valid"]) and set(parts["test"]).isdisjoint(parts["train"])

    def label_counts(part):
        return {lab: sum(r["final_decision"] == lab for r in part.values()) for lab in ("yes", "no", "maybe")}
    assert label_counts(parts["test"]) == {"yes": 276, "no": 169, "maybe": 55}
    assert label_counts(parts["train"]) == {"yes": 249, "no": 152, "maybe": 49}
    assert label_counts(parts["valid"]) == {"yes": 27, "no": 17, "maybe": 6}
    assert pubmedqa.official_split(ori, 0) == parts  # deterministic
    assert set(pubmedqa.official_split(ori, 3)["valid"]) != set(parts["valid"])
    # a raw_dir holding only ori_pqal.json is split this way
    (tmp_path / "ori_pqal.json").write_text(json.dumps(ori))
    splits = pubmedqa.build_splits(tmp_path)
    assert [ex.id for ex in splits["valid"].examples] == list(parts["valid"])
    assert {s: (len(v.examples), v.has_targets) for s, v in splits.items()} == {
        "train": (450, True), "valid": (50, True), "test": (500, True)}
    assert "official split_dataset.py split of ori_pqal.json, fold 0" in splits["test"].notes


def test_pubmedqa_test_labels_from_ground_truth(tmp_path):
    (tmp_path / "test_set.json").write_text(json.dumps({"1": _pqal_record(), "2": _pqal_record(question=" Why? ")}))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"2": "no", "1": "maybe"}))
    split = pubmedqa.build_splits(tmp_path)["test"]
    assert [ex.id for ex in split.examples] == ["2", "1"]  # the ground truth (scorer) order
    assert split.examples[0].source == "question: Why? context: First sentence. Second sentence. "
    assert [ex.target for ex in split.examples] == ["the answer to the question given the context is no.",
                                                    "the answer to the question given the context is maybe."]
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"1": "maybe", "3": "no"}))
    with pytest.raises(DataError, match="test_set.json.*ground truth"):
        pubmedqa.build_splits(tmp_path)


# --------------------------------------------------------------------------------------------------- HoC


def test_hoc_splits_and_text():
    raw_dir = require_shared("HoC", "raw")
    # BioGPT (default): train on all 9972 train.tsv lines; no labelled test here, so valid is a logging-only copy
    biogpt = hoc.build_splits(raw_dir)
    counts = {s: (len(v.examples), v.has_targets) for s, v in biogpt.items()}
    assert counts == {"train": (9972, True), "valid": (997, True), "test": (4947, False)}
    assert set(by_id(biogpt["valid"])) < set(by_id(biogpt["train"])) and "still trained on" in biogpt["valid"].notes[0]
    # valid_from=train: the same seeded sample held out
    splits = hoc.build_splits(raw_dir, {"valid_from": "train"})
    counts = {s: (len(v.examples), v.has_targets) for s, v in splits.items()}
    assert counts == {"train": (8975, True), "valid": (997, True), "test": (4947, False)}
    assert "dev_seed 1" in splits["valid"].notes[0] and "test.tsv" in splits["valid"].notes[0]
    assert splits["valid"].examples == biogpt["valid"].examples
    train = by_id(splits["train"]) | by_id(splits["valid"])
    assert train["train.tsv:1"] == ("train.tsv:1", "Dendritic cells ( DCs ) and natural killer ( NK ) cells are "
                                    "central components of innate immunity for controlling tumor growth .",
                                    "the type of this document is empty.")
    # no final "." in the file -> one is appended; "|"-joined labels are kept as they are
    assert train["train.tsv:99"].source.endswith("(ABSTRACT TRUNCATED AT 250 WORDS ).")
    assert train["train.tsv:53"].target == ("the type of this document is resisting cell death|"
                                           "genomic instability and mutation.")
    assert all(ex.source.endswith(".") for ex in splits["test"].examples)
    assert splits["test"].examples[0].source.startswith("Ionizing radiation is a potent inducer of DNA damage")
    # the dev sample is a deterministic function of the seed; train + valid = every train.tsv line once
    ids = sorted(train, key=lambda k: int(k.split(":")[1]))
    assert len(ids) == 9972 and int(ids[-1].split(":")[1]) == 9972
    again = hoc.build_splits(raw_dir, {"valid_from": "train"})["valid"].examples
    other = hoc.build_splits(raw_dir, {"valid_from": "train", "dev_seed": 2})["valid"].examples
    assert again == splits["valid"].examples and other != again


def test_hoc_biogpt_valid_is_valid_tsv_else_the_labelled_test(tmp_path):
    """BioGPT's rebuild_data.py writes train/valid/test from train.tsv/valid.tsv/test.tsv, and valid.tsv is
    test.tsv: all of train is trained on; valid = valid.tsv, or (absent) the labelled test.tsv."""
    (tmp_path / "train.tsv").write_text("".join(f"Sentence {i} .\tempty\n" for i in range(20)))
    (tmp_path / "test.tsv").write_text("Test one .\tempty\n\nTest two\tgenomic instability and mutation\n")
    splits = hoc.build_splits(tmp_path)
    assert len(splits["train"].examples) == 20
    assert splits["valid"].examples == splits["test"].examples and splits["valid"].source_file == "test.tsv"
    (tmp_path / "valid.tsv").write_text("Valid one .\tempty\n")
    splits = hoc.build_splits(tmp_path)
    assert [e.source for e in splits["valid"].examples] == ["Valid one ."] and len(splits["train"].examples) == 20
    held_out = hoc.build_splits(tmp_path, {"valid_from": "train", "dev_fraction": 0.25})
    assert len(held_out["train"].examples) == 15 and len(held_out["valid"].examples) == 5
    with pytest.raises(DataError, match="valid_from must be 'biogpt'"):
        hoc.build_splits(tmp_path, {"valid_from": "test"})


def test_hoc_labelled_test_with_blank_lines(tmp_path):
    (tmp_path / "test.tsv").write_text("A sentence .\tempty\n\nAnother one\tgenomic instability and mutation\n\n")
    split = hoc.build_splits(tmp_path)["test"]
    assert [tuple(ex) for ex in split.examples] == [
        ("test.tsv:1", "A sentence .", "the type of this document is empty."),
        ("test.tsv:3", "Another one.", "the type of this document is genomic instability and mutation.")]


# ------------------------------------------------------------------------------------------------ errors


def _bc5cdr_record(**drop):
    rec = {"title": "T", "abstract": "A", "relations": [{"chemical": "C1", "disease": "D1"}],
           "chemical2id": {"aspirin": "C1"}, "disease2id": {"pain": "D1"}}
    return {k: v for k, v in rec.items() if k not in drop}


def test_missing_field_names_file_and_record(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"111": _bc5cdr_record(), "222": _bc5cdr_record(abstract=1)}))
    with pytest.raises(DataError, match=r"train\.json: record '222' has no field 'abstract'"):
        bc5cdr.build_splits(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps({"333": {**_bc5cdr_record(), "relations": [{"chemical": "C9",
                                                                                                "disease": "D1"}]}}))
    with pytest.raises(DataError, match=r"train\.json: record '333': chemical id 'C9'"):
        bc5cdr.build_splits(tmp_path)
    bad_triple = {"title": "T", "abstract": "A", "triples": [{"drug": "x"}]}
    (tmp_path / "train.json").write_text(json.dumps({"444": bad_triple}))
    with pytest.raises(DataError, match=r"train\.json: record '444/triples\[0\]' has no field 'target'"):
        kd_dti.build_splits(tmp_path)


def test_malformed_json_names_file(tmp_path):
    (tmp_path / "valid.json").write_text('{"1": {"abstract": "x", "triples": []},\n  "2": }')
    with pytest.raises(DataError, match=r"valid\.json: malformed JSON at line 2"):
        ddi.build_splits(tmp_path)


def test_invalid_utf8_names_file(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"Fine sentence .\tempty\nBad \xff byte .\tempty\n")
    with pytest.raises(DataError, match=r"train\.tsv: invalid UTF-8 at byte \d+ \(line 2\)"):
        hoc.build_splits(tmp_path)


def test_other_bad_inputs(tmp_path):
    (tmp_path / "train.tsv").write_text("A sentence without labels .\n")
    with pytest.raises(DataError, match=r"train\.tsv: line 1 has 1 tab-separated fields"):
        hoc.build_splits(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps({"1": {"abstract": "line one\rline two", "triples": [
        {"drug": "a", "target": "b", "interaction": "effect"}]}}))
    with pytest.raises(DataError, match=r"train\.json: record '1': the source text contains a line break"):
        ddi.build_splits(tmp_path)
    with pytest.raises(DataError, match="unknown option"):
        ddi.build_splits(tmp_path, {"sort_by": "raw"})
    with pytest.raises(DataError, match="no input file found"):
        pubmedqa.build_splits(tmp_path)


def test_registry_and_configs_agree():
    from omegaconf import OmegaConf

    assert set(BUILDERS) == set(SPLIT_BUILDERS) == {"bc5cdr", "kd_dti", "ddi", "pubmedqa", "hoc"}
    conf_dir = Path(__file__).resolve().parents[1] / "conf" / "data_prep" / "dataset"
    for name, module in [("bc5cdr", bc5cdr), ("kd_dti", kd_dti), ("ddi", ddi), ("pubmedqa", pubmedqa),
                         ("hoc", hoc)]:
        node = OmegaConf.to_container(OmegaConf.load(conf_dir / f"{name}.yaml"))
        assert node.pop("name") == name
        assert node == module.DEFAULTS, name


# -------------------------------------------------------------------------- written files and binarisation


@pytest.fixture(scope="module")
def tokenizer(biogpt_tokenizer_files):
    from biogpt_train.data.tokenizer import Tokenizer

    return Tokenizer.from_files(*biogpt_tokenizer_files)


@pytest.fixture(scope="module")
def ddi_out(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("ddi")
    summary = BUILDERS["ddi"](require_shared("DDI", "raw"), out, tokenizer, workers=2, options={"name": "ddi"})
    return out, summary


def _lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_written_text_files(ddi_out, ddi_splits):
    out, summary = ddi_out
    for split in ("train", "valid", "test"):
        examples = ddi_splits[split].examples
        assert _lines(out / f"{split}.x") == [ex.source for ex in examples]
        assert _lines(out / f"{split}.pmid") == [ex.id for ex in examples]
    assert _lines(out / "valid.y") == [ex.target for ex in ddi_splits["valid"].examples]
    assert not (out / "test.y").exists() and not (out / "test.x-y.y.bin").exists()  # test inputs only
    assert {s: v["examples"] for s, v in summary["splits"].items()} == {"train": 469, "valid": 41, "test": 191}
    assert summary["splits"]["train"]["dropped_without_labels"] == 195
    assert not list(out.glob("*.tmp"))


def test_binarized_pairs_equal_encode_plus_eos(ddi_out, tokenizer):
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset

    out, summary = ddi_out
    for split, sides in (("train", "xy"), ("valid", "xy"), ("test", "x")):
        for side in sides:
            lines = _lines(out / f"{split}.{side}")
            ds = MMapIndexedDataset(str(out / f"{split}.x-y.{side}"))
            assert len(ds) == len(lines)
            expected = tokenizer.encode_batch(lines)
            for i, ids in enumerate(expected):
                assert ds[i].tolist() == ids + [2], (split, side, i)
            assert summary["splits"][split]["binarized"][side]["tokens"] == sum(len(ids) + 1 for ids in expected)
    dict_bytes = require_shared("tokenizer", "BioGPT", "dict.txt").read_bytes()
    assert all((out / name).read_bytes() == dict_bytes for name in ("dict.txt", "dict.x.txt", "dict.y.txt"))


def test_manifest_lists_inputs_and_outputs(ddi_out):
    out, _ = ddi_out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(Path(i["path"]).name for i in manifest["inputs"]) == ["test_inputs.json", "train.json", "valid.json"]
    outputs = {o["path"] for o in manifest["outputs"]}
    assert {"train.x", "train.y", "train.pmid", "train.x-y.x.bin", "train.x-y.y.idx", "test.x-y.x.idx",
            "dict.x.txt"} <= outputs
    assert manifest["settings"]["sort_on"] == "lowercased"


def test_hf_datasets_view(ddi_out, tmp_path):
    pytest.importorskip("datasets")
    from data_prep.tasks.hf_datasets import load_prepared

    out, _ = ddi_out
    dd = load_prepared(out, cache_dir=str(tmp_path / "hf_cache"))
    assert {s: dd[s].num_rows for s in dd} == {"train": 469, "valid": 41, "test": 191}
    assert dd["valid"][0]["id"] == "DDI-DrugBank.d108" and dd["valid"][0]["target"].startswith("the interaction")
    assert "target" not in dd["test"].column_names


def test_bc5cdr_build_copies_entities_for_scoring(tmp_path):
    raw = require_shared("BC5CDR", "raw")
    summary = BUILDERS["bc5cdr"](raw, tmp_path, None, workers=1, options={})  # text only
    assert (tmp_path / "valid.entities.json").read_bytes() == (raw / "valid.entities.json").read_bytes()
    assert not (tmp_path / "test.entities.json").exists()  # the raw dir has no test labels / entities
    assert _lines(tmp_path / "test.pmid")[:1] == ["8701013"] and not (tmp_path / "test.y").exists()
    assert summary["splits"]["train"]["examples"] == 500


def test_rebuild_removes_files_of_a_split_no_longer_made(tmp_path):
    raw = require_shared("HoC", "raw")
    BUILDERS["hoc"](raw, tmp_path, None, workers=1, options={"dev_fraction": 0.05, "valid_from": "train"})
    assert len(_lines(tmp_path / "valid.x")) == 499 and len(_lines(tmp_path / "train.y")) == 9473
    summary = BUILDERS["hoc"](raw, tmp_path, None, workers=1, options={"dev_fraction": 0})
    assert not (tmp_path / "valid.x").exists() and not (tmp_path / "valid.pmid").exists()
    assert len(_lines(tmp_path / "train.y")) == 9972 and set(summary["splits"]) == {"train", "test"}
