"""`python -m biogpt_train.score`: the last stdout line is one JSON object; usage errors are clear."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
P9 = " ".join(f"learned{i}" for i in range(1, 10))


def run(*args):
    return subprocess.run([sys.executable, "-m", "biogpt_train.score", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_pubmedqa_prints_json_last(tmp_path):
    gold = tmp_path / "test_ground_truth.json"
    gold.write_text(json.dumps({"1": "yes", "2": "no"}))
    pred = tmp_path / "out.detok"
    stem = f"q {P9} the answer to the question given the context is"
    pred.write_bytes(f"{stem} yes.\r\n{stem} maybe.\r\n".encode())
    proc = run("task=pubmedqa", f"pred={pred}", f"gold={gold}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) > 1  # a human-readable summary first
    result = json.loads(out[-1])
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["macro_f1"] == pytest.approx(100 / 3)  # yes 1, no 0, maybe 0


def test_cli_kd_dti_format_and_nan_as_null(tmp_path):
    gold = tmp_path / "test.json"
    gold.write_text(json.dumps({"7": {"triples": [{"drug": "a", "target": "b", "interaction": "agonist"}]}}))
    pred = tmp_path / "out.detok"
    pred.write_text(f"src {P9} <h> a <t> b <r> agonist.\n")
    proc = run("task=kd_dti", f"pred={pred}", f"gold={gold}", "format=htr")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["f1"] == 100.0 and result["format"] == "htr" and result["corpus"]["f1"] == 100.0

    pubtator = tmp_path / "gold.PubTator"
    pubtator.write_text("1|t|x\n1|a|y\n1\tCID\tD1\tD2\n")
    entities = tmp_path / "entities.json"
    entities.write_text(json.dumps({"chemical2id": {}, "disease2id": {}}))
    pmids = tmp_path / "test.pmid"
    pmids.write_text("1\n")
    pred.write_text("no relation at all\n")
    proc = run("task=bc5cdr", f"pred={pred}", f"gold={pubtator}", f"pmids={pmids}", f"entities={entities}")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert json.loads(last)["precision"] is None and '"f1": null' in last


def test_cli_usage_errors(tmp_path):
    proc = run("task=hoc", "pred=x")
    assert proc.returncode == 2 and "missing gold=" in proc.stderr and "usage:" in proc.stderr
    proc = run("task=nope", "pred=x", "gold=y")
    assert proc.returncode == 2 and "unknown task" in proc.stderr
    proc = run("task=hoc", "pred", "gold=y")
    assert proc.returncode == 2 and "expected key=value" in proc.stderr
    proc = run("task=hoc", f"pred={tmp_path / 'absent'}", f"gold={tmp_path / 'absent2'}")
    assert proc.returncode == 1 and "absent" in proc.stderr
    proc = run("task=hoc", "pred=x", "gold=y", "format=svo")
    assert proc.returncode == 2 and "format= applies to kd_dti and ddi only" in proc.stderr
    assert run("--help").returncode == 0


def test_cli_refuses_fewer_lines_than_gold_documents(tmp_path):
    """ddi with 1 line for 2 gold documents used to print F1 100 with rc 0."""
    gold = tmp_path / "test.json"
    triple = [{"drug": "a", "target": "b", "interaction": "agonist"}]
    gold.write_text(json.dumps({"7": {"triples": triple}, "8": {"triples": triple}}))
    pred = tmp_path / "out.detok"
    pred.write_text(f"src {P9} the interaction between a and b is agonist.\n")
    proc = run("task=ddi", f"pred={pred}", f"gold={gold}")
    assert proc.returncode == 1 and proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "1 prediction lines in" in err[0] and "but 2 gold documents in" in err[0]
    assert str(pred) in err[0] and str(gold) in err[0] and "allow_missing=true" in err[0]
    proc = run("task=ddi", f"pred={pred}", f"gold={gold}", "allow_missing=true")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["recall"] == 50.0 and result["unpredicted_docs"] == 1
    proc = run("task=pubmedqa", f"pred={pred}", f"gold={gold}", "allow_missing=true")
    assert proc.returncode == 2 and "allow_missing= applies to bc5cdr, kd_dti and ddi" in proc.stderr
    proc = run("task=ddi", f"pred={pred}", f"gold={gold}", "allow_missing=maybe")
    assert proc.returncode == 2 and "expected true or false" in proc.stderr
