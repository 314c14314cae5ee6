"""First use and bad input in data_prep: nothing is silently wrong (issue #10).

Tiny synthetic tokenizers (no shared data): a "covering" one whose dictionary holds every letter piece, and a
"mismatched" one whose dictionary holds almost nothing (what a dict.txt with another vocabulary's bpecodes does).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from data_prep import pubmed
from data_prep.checks import OutputPathError, check_writable_dir, fold_repeats, parse_iso_date
from data_prep.tasks import BUILDERS, pubmedqa
from data_prep.tasks.common import DataError, format_summary

SAMPLE = REPO / "data_prep" / "samples" / "pubmed_sample.xml"


def _tokenizer_dir(path: Path, covering: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_letters + string.digits + ".,;:()-'&#@"
    symbols = [f"{c}@@" for c in chars] + list(chars) if covering else ["zz"]
    (path / "dict.txt").write_text("".join(f"{s} 1\n" for s in symbols), encoding="utf-8")
    (path / "bpecodes").write_text("q z 1\n", encoding="utf-8")  # a merge that never applies: letters stay split
    return path


def _tokenizer(path: Path, covering: bool = True):
    d = _tokenizer_dir(path, covering)
    return pubmed.load_tokenizer(d / "dict.txt", d / "bpecodes")


def article_xml(pmid, abstract="Some abstract text.", revised=(2019, 5, 1)):
    rev = "" if revised is None else (f"<DateRevised><Year>{revised[0]}</Year><Month>{revised[1]:02d}</Month>"
                                      f"<Day>{revised[2]:02d}</Day></DateRevised>")
    return (f'<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID>{rev}<Article><ArticleTitle>A title.'
            f"</ArticleTitle><Abstract><AbstractText>{abstract}</AbstractText></Abstract></Article></MedlineCitation>"
            "</PubmedArticle>\n")


def xml_file(path: Path, body: str) -> Path:
    path.write_text(f'<?xml version="1.0"?>\n<PubmedArticleSet>\n{body}</PubmedArticleSet>\n', encoding="utf-8")
    return path


def run_prep(raw, out, tok_dir, **kw):
    kw.setdefault("progress", False)
    return pubmed.run(raw, out, tokenizer_dir=tok_dir, **kw)


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------------------------------ revised_before


@pytest.mark.parametrize("spelling", ["01-01-2021", "2021/01/01", "2021-1-1", "20210101", "2021-02-30", "2021"])
def test_revised_before_accepts_only_iso_dates(spelling):
    with pytest.raises(ValueError, match=r"dataset\.revised_before=.*(YYYY-MM-DD)"):
        pubmed.Options.from_dict({"revised_before": spelling})


def test_revised_before_iso_forms():
    assert pubmed.Options.from_dict({"revised_before": " 2021-01-01"}).revised_before == "2021-01-01"
    assert pubmed.Options.from_dict({"revised_before": datetime.date(2021, 1, 1)}).revised_before == "2021-01-01"
    assert pubmed.Options.from_dict({}).revised_before is None
    assert parse_iso_date(None, "x") is None


def test_cli_rejects_a_non_iso_date_with_one_line(tmp_path):
    """01-01-2021 used to keep 0 of 50 records and write a 0-byte train.bin with rc 0."""
    tok = _tokenizer_dir(tmp_path / "tok")
    out = tmp_path / "out"
    r = cli("dataset=pubmed", f"raw_dir={SAMPLE}", f"out_dir={out}", f"tokenizer_dir={tok}", "progress=false",
            "dataset.revised_before=01-01-2021")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "dataset.revised_before='01-01-2021'" in err[0] and "YYYY-MM-DD" in err[0]
    assert "01-01-2021" not in r.stdout  # the error is shown once (it used to be logged to stdout as well)
    assert not (out / "train.bin").exists() and not (out / "manifest.json").exists()
    assert "01-01-2021" in (out / ".hydra" / "data_prep.log").read_text()  # ... and kept in the run's log


# ----------------------------------------------------------------------------------- 0 documents kept


def test_zero_documents_kept_is_an_error_naming_inputs_and_filter(tmp_path):
    tok = _tokenizer_dir(tmp_path / "tok")
    out = tmp_path / "out"
    with pytest.raises(pubmed.DataPrepError, match=r"0 documents kept from 1 input file\(s\) in .*pubmed_sample\.xml "
                                                   r"\(pubmed_sample\.xml\): 52 records read, removed by "
                                                   r"dataset\.revised_before=1990-01-01: 50, no abstract"):
        run_prep(SAMPLE, out, tok, options={"revised_before": "1990-01-01"})
    assert not any((out / n).exists() for n in ("train.bin", "train.idx", "valid.idx", "manifest.json"))
    # empty input
    empty = xml_file(tmp_path / "empty.xml", "")
    with pytest.raises(pubmed.DataPrepError, match=r"0 documents kept .*empty\.xml.*no records \(empty input\)"):
        run_prep(empty, tmp_path / "out2", tok)
    # everything deleted by a later update file
    raw = tmp_path / "raw"
    raw.mkdir()
    xml_file(raw / "a.xml", article_xml(11))
    xml_file(raw / "b.xml", "<DeleteCitation><PMID Version=\"1\">11</PMID></DeleteCitation>\n")
    with pytest.raises(pubmed.DataPrepError, match=r"no documents left to write .*DeleteCitation \(1\)"):
        run_prep(raw, tmp_path / "out3", tok)
    assert not (tmp_path / "out3" / "train.idx").exists() and not (tmp_path / "out3" / "manifest.json").exists()


def test_task_with_zero_examples_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rec = {"title": "T", "abstract": "A.", "triples": []}
    (raw / "valid.json").write_text(json.dumps({"1": rec, "2": {**rec, "triples": None}}))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"kd_dti: 0 valid examples kept from .*valid\.json \(all 2 record\(s\) "
                                        r"dropped: 2 documents without triples dropped\)"):
        BUILDERS["kd_dti"](raw, out, None, workers=1, options={})
    assert not out.exists() or not any(out.iterdir())
    (raw / "valid.json").write_text("{}")
    with pytest.raises(DataError, match=r"0 valid examples kept .*the file holds no records"):
        BUILDERS["ddi"](raw, out, None, workers=1, options={})


def test_failed_task_rebuild_leaves_no_manifest(tmp_path, monkeypatch):
    from data_prep.tasks import common

    raw = tmp_path / "raw"
    raw.mkdir()
    triple = [{"drug": "a", "target": "b", "interaction": "agonist"}]
    (raw / "valid.json").write_text(json.dumps({"1": {"abstract": "Text.", "triples": triple}}))
    out = tmp_path / "out"
    BUILDERS["ddi"](raw, out, None, workers=1, options={})
    assert (out / "manifest.json").exists()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(common, "write_split_text", boom)
    with pytest.raises(OSError):
        BUILDERS["ddi"](raw, out, None, workers=1, options={})
    assert not (out / "manifest.json").exists()  # the half-rewritten directory does not look complete


# ------------------------------------------------------------------------------------------------ PubMedQA


def _pqa(label=None):
    rec = {"QUESTION": "Why?", "CONTEXTS": ["A sentence."]}
    return rec if label is None else {**rec, "final_decision": label}


def test_pubmedqa_label_outside_yes_no_maybe_is_rejected(tmp_path):
    (tmp_path / "train_set.json").write_text(json.dumps({"1": _pqa("yes"), "2": _pqa("Yes")}))
    with pytest.raises(DataError, match=r"train_set\.json: record '2' has label 'Yes'; PubMedQA labels are "
                                        r"yes/no/maybe"):
        pubmedqa.build_splits(tmp_path)
    (tmp_path / "train_set.json").unlink()
    (tmp_path / "test_set.json").write_text(json.dumps({"7": _pqa()}))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"7": "unsure"}))
    with pytest.raises(DataError, match=r"test_ground_truth\.json: record '7' has label 'unsure'"):
        pubmedqa.build_splits(tmp_path)


# ---------------------------------------------------------------------------------------------- KD-DTI


def test_kd_dti_without_train_says_why(tmp_path):
    from biogpt_train.pipeline.prepare import absent_splits

    raw = tmp_path / "raw"
    raw.mkdir()
    triple = [{"drug": "a", "target": "b", "interaction": "inhibitor"}]
    (raw / "valid.json").write_text(json.dumps({"1": {"title": "T", "abstract": "A.", "triples": triple}}))
    out = tmp_path / "out"
    summary = BUILDERS["kd_dti"](raw, out, None, workers=1, options={})
    why = summary["absent_splits"]["train"]
    assert f"{raw / 'train.json'} is absent" in why and "public KD-DTI release has no train split" in why
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["absent_splits"] == {"train": why}
    # what the pipeline's prepare stage adds to "train.x-y.x.idx/.bin are still missing"
    assert absent_splits(out) == f"; no train split: {why}"
    assert absent_splits(tmp_path / "nowhere") == ""
    text = format_summary(summary)
    assert text.count("public KD-DTI release") == 1 and "train not made: " + why in text


# ----------------------------------------------------------------------------------------- summary output


def test_task_cli_prints_a_short_summary_not_json(tmp_path):
    tok = _tokenizer_dir(tmp_path / "tok")
    raw = tmp_path / "raw"
    raw.mkdir()
    triple = [{"drug": "a", "target": "b", "interaction": "agonist"}]
    (raw / "train.json").write_text(json.dumps({str(i): {"abstract": f"Text {i}.", "triples": triple}
                                                for i in range(3)}))
    (raw / "valid.json").write_text(json.dumps({"9": {"abstract": "Other.", "triples": triple},
                                                "10": {"abstract": "None.", "triples": []}}))
    out = tmp_path / "out"
    r = cli("dataset=ddi", f"raw_dir={raw}", f"out_dir={out}", f"tokenizer_dir={tok}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert not any(line.lstrip().startswith(("{", "}", '"')) for line in lines)  # the manifest JSON is not echoed
    assert lines[0] == f"data_prep ddi: 2 split(s) -> {out}"
    assert any(line.split()[:3] == ["train", "3", "examples"] for line in lines)
    assert any("1 dropped without labels" in line for line in lines)
    assert lines[-1] == f"  manifest: {out / 'manifest.json'}" and (out / "manifest.json").is_file()


def test_summary_folds_repeated_notes():
    assert fold_repeats(["a", "b", "a", "a"]) == ["a (3 times)", "b"]
    summary = {"task": "t", "out_dir": "/o", "notes": [], "splits": {
        s: {"examples": 1, "source_file": f"{s}.json", "has_targets": True, "notes": ["same note"]}
        for s in ("train", "valid")}}
    text = format_summary(summary)
    assert "train: same note" in text and "valid: same note" in text
    summary["notes"] = ["global", "global"]
    assert text.count("note:") == 2 and "global (2 times)" in format_summary(summary)


def test_malformed_records_are_reported_once_per_file(tmp_path, caplog):
    tok = _tokenizer_dir(tmp_path / "tok")
    bad = "<PubmedArticle><MedlineCitation><Article/></MedlineCitation></PubmedArticle>\n"
    f = xml_file(tmp_path / "m.xml", bad * 3 + article_xml(5) + article_xml(6))
    with caplog.at_level(logging.WARNING, logger="data_prep"):
        s = run_prep(f, tmp_path / "out", tok)
    assert s["skipped"] == {"malformed": 3}
    msgs = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert msgs == [f"{f}: 3 malformed record(s) skipped (first: record 1: missing PMID)"]


# ----------------------------------------------------------------------------------------------- <unk> rate


def test_binarisation_warns_once_per_file_on_a_high_unk_rate(tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    triple = [{"drug": "a", "target": "b", "interaction": "agonist"}]
    (raw / "train.json").write_text(json.dumps({"1": {"abstract": "Some text.", "triples": triple}}))
    (raw / "valid.json").write_text(json.dumps({"2": {"abstract": "More text.", "triples": triple}}))
    with caplog.at_level(logging.WARNING, logger="data_prep"):
        BUILDERS["ddi"](raw, tmp_path / "good", _tokenizer(tmp_path / "t1"), workers=1, options={})
    assert not [r for r in caplog.records if "<unk>" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="data_prep"):
        summary = BUILDERS["ddi"](raw, tmp_path / "bad", _tokenizer(tmp_path / "t2", covering=False), workers=1,
                                  options={})
    msgs = [r.getMessage() for r in caplog.records if "<unk>" in r.getMessage()]
    assert len(msgs) == 2 and msgs[0].startswith("train.json (train split): ") and "mismatched" in msgs[0]
    assert str(tmp_path / "t2" / "bpecodes") in msgs[0] and msgs[1].startswith("valid.json (valid split): ")
    assert any("mismatched" in n for n in summary["splits"]["train"]["notes"])


def test_pubmed_unk_warning_is_one_line_for_all_files(tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        xml_file(raw / f"f{i}.xml", article_xml(100 + i) + article_xml(200 + i))
    with caplog.at_level(logging.WARNING, logger="data_prep"):
        run_prep(raw, tmp_path / "out", _tokenizer_dir(tmp_path / "tok", covering=False))
    msgs = [r.getMessage() for r in caplog.records if "<unk>" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith("f0.xml: ") and "(and 2 more input file(s) like it)" in msgs[0]


# ------------------------------------------------------------------------------------- unwritable out_dir


def test_unwritable_out_dir_is_refused_before_work(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    target = blocker / "sub"
    # raw_dir does not exist either: the out_dir check comes first
    with pytest.raises(OutputPathError, match=rf"out_dir {target} cannot be created: {blocker} exists and is not "
                                              "a directory"):
        run_prep(tmp_path / "no_raw", target, tmp_path / "no_tok")
    (tmp_path / "train.tsv").write_text("A sentence .\tempty\n")
    with pytest.raises(OutputPathError, match="cannot be created"):  # before anything is encoded or written
        BUILDERS["hoc"](tmp_path, target, None, workers=1, options={"dev_fraction": 0})
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a read-only directory (root ignores chmod)
    with pytest.raises(OutputPathError, match=rf"out_dir {tmp_path / 'ro'} is not writable \(its existing parent "):
        check_writable_dir(tmp_path / "ro")


def test_cli_unwritable_out_dir_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = cli("dataset=pubmed", f"raw_dir={SAMPLE}", f"out_dir={blocker / 'out'}")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"data_prep: error: out_dir {blocker / 'out'} cannot be created: {blocker} exists and is not a directory; "
        "choose another out_dir"]
