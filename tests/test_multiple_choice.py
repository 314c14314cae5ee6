"""Multiple-choice tasks by log-likelihood: file readers and prompts (the harness's templates), acc / acc_norm /
macro-F1, seeded few-shot prompts, evaluation on a tiny BioGPT, the CLI, and results.json read by collect."""

import json

import pytest
import torch

from biogpt_train.evaluation.loglikelihood import loglikelihood
from biogpt_train.evaluation.multiple_choice import (TASKS, Item, TaskDataError, choose, evaluate_multiple_choice,
                                                     fewshot_contexts, metrics_for, read_medmcqa, read_medqa,
                                                     read_pubmedqa, write_results)
from tests.conftest import require_shared
from tests.helpers import write_dict


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


PQA = {
    "101": {"QUESTION": "Is aspirin useful?", "CONTEXTS": ["Aspirin was given.", "Pain went down."],
            "final_decision": "yes"},
    "102": {"QUESTION": "Does rest help?", "CONTEXTS": ["Rest was studied."], "final_decision": "no"},
    "103": {"QUESTION": "Is it safe?", "CONTEXTS": ["Some had side effects."], "final_decision": "maybe"},
    "104": {"QUESTION": "Do cells divide?", "CONTEXTS": ["Cells were counted."], "final_decision": "yes"},
}

MEDQA = [
    {"question": "Which organ pumps blood?", "options": {"A": "Liver", "B": "Heart", "C": "Lung", "D": "Skin"},
     "answer_idx": "B", "answer": "Heart", "meta_info": "step1"},
    {"question": "Which vitamin is made in skin?", "options": {"A": "C", "B": "B12", "C": "D", "D": "K"},
     "answer_idx": "C", "answer": "D"},
    {"question": "Insulin is made by which cells?", "options": {"A": "Alpha", "B": "Beta", "C": "Delta", "D": "PP"},
     "answer_idx": "B", "answer": "Beta"},
]

MEDMCQA = [
    {"id": "q1", "question": "Largest bone?", "opa": "Femur", "opb": "Tibia", "opc": "Ulna", "opd": "Radius",
     "cop": 1, "choice_type": "single", "exp": "", "subject_name": "Anatomy"},
    {"id": "q2", "question": "Normal pH of blood?", "opa": "6.4", "opb": "7.0", "opc": "7.4", "opd": "8.0", "cop": 3},
    {"id": "q3", "question": "Vitamin for clotting?", "opa": "A", "opb": "C", "opc": "E", "opd": "K", "cop": 4},
]


# --- readers and prompts -----------------------------------------------------------------------------------------
def test_pubmedqa_prompt_is_the_harness_template_in_both_file_forms(tmp_path):
    items = read_pubmedqa(_write(tmp_path / "p.json", PQA))
    assert [it.id for it in items] == ["101", "102", "103", "104"]
    assert items[0].prompt == "Abstract: Aspirin was given.\nPain went down.\nQuestion: Is aspirin useful?\nAnswer:"
    assert items[0].labels == ("yes", "no", "maybe") and [it.gold for it in items] == [0, 1, 2, 0]
    hf = [{"pubid": int(k), "question": v["QUESTION"], "context": {"contexts": v["CONTEXTS"], "labels": []},
           "final_decision": v["final_decision"]} for k, v in PQA.items()]
    assert read_pubmedqa(write_jsonl(tmp_path / "hf.jsonl", hf)) == items
    assert read_pubmedqa(_write(tmp_path / "hf.json", hf)) == items
    unlabeled = {k: {"QUESTION": v["QUESTION"], "CONTEXTS": v["CONTEXTS"]} for k, v in PQA.items()}
    assert [it.gold for it in read_pubmedqa(_write(tmp_path / "test.json", unlabeled))] == [None] * 4
    with pytest.raises(TaskDataError, match="record 9: final_decision 'perhaps' is not yes/no/maybe"):
        read_pubmedqa(_write(tmp_path / "bad.json", {"9": {"QUESTION": "q", "CONTEXTS": [], "final_decision":
                                                           "perhaps"}}))


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_pubmedqa_shared_files():
    train = read_pubmedqa(require_shared("PubMedQA", "pqal_fold0", "train_set.json"))
    dev = read_pubmedqa(require_shared("PubMedQA", "pqal_fold0", "dev_set.json"))
    test = read_pubmedqa(require_shared("PubMedQA", "test_set_inputs.json"))
    assert (len(train), len(dev), len(test)) == (450, 50, 500)
    assert [sum(it.gold == g for it in dev) for g in range(3)] == [27, 17, 6]
    assert all(it.gold is None for it in test) and not {it.id for it in test} & {it.id for it in train + dev}
    first = dev[0]
    assert first.id == "15879722" and first.prompt.startswith("Abstract: Cytokeratin 7/20 staining has been")
    assert first.prompt.endswith("\nQuestion: Is cytokeratin immunoreactivity useful in the diagnosis of "
                                 "short-segment Barrett's oesophagus in Korea?\nAnswer:")


def test_medqa_release_and_harness_forms(tmp_path):
    items = read_medqa(write_jsonl(tmp_path / "medqa.jsonl", MEDQA))
    assert items[0].prompt == ("Question: Which organ pumps blood?\nA. Liver\nB. Heart\nC. Lung\nD. Skin\nAnswer:")
    assert [it.gold for it in items] == [1, 2, 1] and items[0].labels == ("A", "B", "C", "D")
    hf = [{"sent1": r["question"], **{f"ending{i}": v for i, v in enumerate(r["options"].values())},
           "label": "ABCD".index(r["answer_idx"])} for r in MEDQA]
    assert [(i.prompt, i.gold) for i in read_medqa(write_jsonl(tmp_path / "hf.jsonl", hf))] == \
        [(i.prompt, i.gold) for i in items]
    five = dict(MEDQA[0], options={**MEDQA[0]["options"], "E": "Bone"}, answer_idx="E")
    (it,) = read_medqa(write_jsonl(tmp_path / "five.jsonl", [five]))
    assert it.labels == ("A", "B", "C", "D", "E") and it.gold == 4 and "\nE. Bone\nAnswer:" in it.prompt
    with pytest.raises(TaskDataError, match=r"record 0: answer_idx 'F' is not one of \['A', 'B', 'C', 'D'\]"):
        read_medqa(write_jsonl(tmp_path / "bad.jsonl", [dict(MEDQA[0], answer_idx="F")]))
    with pytest.raises(TaskDataError, match="record 0 has no 'options' field"):
        read_medqa(write_jsonl(tmp_path / "bad2.jsonl", [{"question": "q"}]))


def test_medmcqa_cop_conventions(tmp_path):
    items = read_medmcqa(write_jsonl(tmp_path / "release.json", MEDMCQA))  # has a 4: 1-based (the release)
    assert [it.gold for it in items] == [0, 2, 3] and [it.id for it in items] == ["q1", "q2", "q3"]
    assert items[1].prompt == "Question: Normal pH of blood?\nChoices:\nA. 6.4\nB. 7.0\nC. 7.4\nD. 8.0\nAnswer:"
    hf = [dict(r, cop=r["cop"] - 1) for r in MEDMCQA]  # has a 0: 0-based (HF)
    assert [it.gold for it in read_medmcqa(write_jsonl(tmp_path / "hf.json", hf))] == [0, 2, 3]
    ambiguous = write_jsonl(tmp_path / "amb.json", MEDMCQA[:2])  # cop 1 and 3 only
    with pytest.raises(TaskDataError, match="pass cop_base=0 or 1"):
        read_medmcqa(ambiguous)
    assert [it.gold for it in read_medmcqa(ambiguous, cop_base=1)] == [0, 2]
    assert [it.gold for it in read_medmcqa(ambiguous, cop_base="0")] == [1, 3]
    test = [dict(r, cop=-1) for r in MEDMCQA] + [{k: v for k, v in MEDMCQA[0].items() if k != "cop"}]
    assert [it.gold for it in read_medmcqa(write_jsonl(tmp_path / "test.json", test))] == [None] * 4


# --- metrics and prompts -----------------------------------------------------------------------------------------
def test_acc_and_acc_norm_differ_on_a_hand_made_case():
    labels = ("yes", "no", "maybe")
    # sums: "no" wins; per UTF-8 byte of the choice: yes -1.1, no -1.5, maybe -0.8 -> "maybe"
    assert choose([-3.3, -3.0, -4.0], labels) == (1, 2)
    assert choose([-1.0, -1.0, -5.0], labels) == (0, 0)  # ties: the first choice, as np.argmax
    preds = [{"gold": 2, "pred": 1, "pred_norm": 2, "gold_label": "maybe", "pred_label": "no"},
             {"gold": 1, "pred": 1, "pred_norm": 1, "gold_label": "no", "pred_label": "no"},
             {"gold": None, "pred": 0, "pred_norm": 0, "gold_label": None, "pred_label": "yes"}]
    metrics, units = metrics_for(TASKS["pubmedqa"], preds)
    assert metrics["acc"] == 50.0 and metrics["acc_norm"] == 100.0 and (metrics["n"], metrics["labeled"]) == (3, 2)
    assert units["acc"] == {"kind": "mean", "values": [0, 1]} and units["acc_norm"]["values"] == [1, 1]
    from sklearn.metrics import f1_score

    assert metrics["macro_f1"] == pytest.approx(100 * f1_score(["maybe", "no"], ["no", "no"], average="macro"))
    assert "macro_f1" not in metrics_for(TASKS["medqa"], preds)[0]


def test_fewshot_prompts_are_seeded_and_skip_the_item_itself():
    pool = [Item(str(i), f"Q{i}?\nAnswer:", ("yes", "no"), i % 2) for i in range(12)]
    items = pool[:5]
    a = fewshot_contexts(items, pool, 3, seed=7)
    assert a == fewshot_contexts(items, pool, 3, seed=7)
    assert a != fewshot_contexts(items, pool, 3, seed=8)
    for it, ctx in zip(items, a):
        parts = ctx.split("\n\n")
        assert len(parts) == 4 and parts[-1] == it.prompt and it.prompt not in parts[:-1]
        for shot in parts[:-1]:
            i = int(shot[1:shot.index("?")])
            assert shot == f"Q{i}?\nAnswer: {'yes' if i % 2 == 0 else 'no'}"
    assert fewshot_contexts(items, pool, 0) == [it.prompt for it in items]
    with pytest.raises(TaskDataError, match="3-shot prompts need 3 labeled examples"):
        fewshot_contexts(items, [Item("x", "p", ("a",), 0), Item("y", "p", ("a",), None)], 3)


# --- evaluation on a tiny BioGPT ---------------------------------------------------------------------------------
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WORDS = [".", ",", ":", "?", "the", "th@@", *CHARS, *(c + "@@" for c in CHARS)]


@pytest.fixture
def tiny(tmp_path):
    """dict.txt + bpecodes, a tiny random BioGPT saved as a native checkpoint beside them, and its tokenizer."""
    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    d = tmp_path / "model"
    d.mkdir()
    write_dict(d / "dict.txt", WORDS)
    (d / "bpecodes").write_text("t h 20\nth e</w> 10\n", encoding="utf-8")
    dictionary = Dictionary.load(d / "dict.txt")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(dictionary), embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=256,
                      dropout=0.0, attention_dropout=0.0)
    model = TransformerLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    save_native(d / "checkpoint.pt", model, dictionary)
    return model, Tokenizer.from_files(d / "dict.txt", d / "bpecodes"), d


def test_evaluate_pubmedqa_few_shot_matches_direct_scores(tiny, tmp_path):
    model, tok, _ = tiny
    data, train = _write(tmp_path / "dev.json", PQA), _write(tmp_path / "train.json", PQA)
    res = evaluate_multiple_choice(model, tok, "pubmedqa", data, num_fewshot=2, fewshot_path=train, seed=3,
                                   limit=3, batch_size=4)
    preds = res["predictions"]
    assert [p["id"] for p in preds] == ["101", "102", "103"] and res["metrics"]["n"] == 3
    contexts = fewshot_contexts(read_pubmedqa(data)[:3], read_pubmedqa(train), 2, seed=3)
    for p, ctx in zip(preds, contexts):
        direct = loglikelihood(model, tok, [(ctx, " yes"), (ctx, " no"), (ctx, " maybe")], batch_size=1)
        assert p["logprobs"] == pytest.approx([lp for lp, _ in direct], abs=1e-5)
        assert p["is_greedy"] == [g for _, g in direct]
        assert (p["pred"], p["pred_norm"]) == choose(p["logprobs"], ("yes", "no", "maybe"))
    hits = [p["pred"] == p["gold"] for p in preds]
    assert res["metrics"]["acc"] == pytest.approx(100 * sum(hits) / 3)
    assert res["metrics"]["macro_f1"] is not None
    # majority of the few-shot file (2 yes of 4): every item answered "yes" -> 1 of 3 right
    assert res["baseline"]["prediction"] == "yes" and res["baseline"]["acc"] == pytest.approx(100 / 3)
    assert res["options"]["num_fewshot"] == 2 and res["options"]["prefix_token_id"] == 2
    with pytest.raises(TaskDataError, match="needs fewshot_path"):
        evaluate_multiple_choice(model, tok, "pubmedqa", data, num_fewshot=1)

    from experiments.collect import summarise

    written = json.loads(write_results(res, tmp_path / "results.json", model_label="tiny").read_text())
    assert written["table_metrics"] == ["acc", "acc_norm", "macro_f1"]
    acc, _, f1 = summarise([dict(written, _path="x")], bootstrap_samples=50)
    assert acc["ci95_low"] <= acc["ours_mean"] <= acc["ci95_high"]  # per-item units: a bootstrap interval
    assert f1["ours_mean"] == res["metrics"]["macro_f1"] and f1["ci95_low"] != f1["ci95_low"]  # none: NaN
    assert f1["majority_baseline"] == res["baseline"]["macro_f1"]


def test_unlabeled_split_gives_predictions_without_metrics(tiny, tmp_path):
    model, tok, _ = tiny
    data = _write(tmp_path / "test.json", {k: {"QUESTION": v["QUESTION"], "CONTEXTS": v["CONTEXTS"]}
                                           for k, v in PQA.items()})
    res = evaluate_multiple_choice(model, tok, "pubmedqa", data)
    assert res["metrics"]["acc"] is None and res["metrics"]["macro_f1"] is None and res["baseline"] is None
    assert len(res["predictions"]) == 4 and all(p["pred_label"] in ("yes", "no", "maybe") for p in res["predictions"])
    out = write_results(res, tmp_path / "run" / "results.json", model_label="tiny")
    from experiments.collect import find_results, summarise

    rows = summarise(find_results([tmp_path / "run"]), bootstrap_samples=50)
    assert [r["metric"] for r in rows] == ["acc", "acc_norm", "macro_f1"] and all(r["seeds"] == 0 for r in rows)
    assert json.loads(out.read_text())["primary"] is None


def test_pubmedqa_real_data_with_the_biogpt_tokenizer(biogpt_tokenizer_files):
    from biogpt_train.data.tokenizer import Tokenizer
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    tok = Tokenizer.from_files(*biogpt_tokenizer_files)
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=len(tok), embed_dim=16, layers=1, heads=2, ffn_dim=32,
                                      max_positions=1024, dropout=0.0, attention_dropout=0.0)).eval()
    dev = require_shared("PubMedQA", "pqal_fold0", "dev_set.json")
    train = require_shared("PubMedQA", "pqal_fold0", "train_set.json")
    res = evaluate_multiple_choice(model, tok, "pubmedqa", dev, num_fewshot=1, fewshot_path=train, limit=3)
    assert res["metrics"]["labeled"] == 3 and len(res["predictions"]) == 3
    assert all(len(p["logprobs"]) == 3 and all(lp < 0 for lp in p["logprobs"]) for p in res["predictions"])
    assert res["baseline"]["prediction"] == "yes" and res["baseline"]["frequency"] == pytest.approx(249 / 450)
    assert res["contexts_example"].count("\nAnswer:") == 2  # one solved example, then the question


# --- command line and collect ------------------------------------------------------------------------------------
def test_cli_end_to_end_and_collect_table(tiny, tmp_path, capsys):
    from biogpt_train.evaluation.cli import _load_tokenizer, main
    from experiments.collect import find_results, summarise, to_markdown
    from experiments.collect import main as collect_main

    model, tok, d = tiny
    data = write_jsonl(tmp_path / "medqa_dev.jsonl", MEDQA)
    out = tmp_path / "runs" / "medqa" / "results.json"
    assert main(["medqa", "--checkpoint", str(d / "checkpoint.pt"), "--data", str(data), "--fewshot", "1",
                 "--fewshot-data", str(data), "--seed", "5", "--device", "cpu", "--batch-size", "3",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    res = json.loads(out.read_text())
    assert res["format"] == "biogpt_train.results/1" and res["task"] == "medqa" and res["model"] == "model"
    assert res["group"] == "model:medqa:loglikelihood:1-shot" and res["seed"] == 5 and res["split"] == "medqa_dev"
    assert res["primary_metric"] == "acc" and res["primary"] == res["metrics"]["acc"] == printed["metrics"]["acc"]
    assert res["metrics"]["acc"] == res["metrics"]["acc_norm"]  # one-letter choices: the same ranking
    assert res["units"]["values"] == res["metric_units"]["acc"]["values"] and len(res["units"]["values"]) == 3
    assert res["checkpoint"]["sha256"] and res["loglikelihood"]["num_fewshot"] == 1
    lines = (out.parent / "results.predictions.jsonl").read_text().splitlines()
    assert len(lines) == res["predictions"]["lines"] == 3

    # the same numbers in-process, with the tokenizer _load_tokenizer finds beside the checkpoint
    tok2 = _load_tokenizer(d / "checkpoint.pt")
    assert tok2.dictionary.symbols == tok.dictionary.symbols and tok2.prefix_token_id == 2
    direct = evaluate_multiple_choice(model, tok2, "medqa", data, num_fewshot=1, fewshot_path=data, seed=5)
    assert [json.loads(x)["logprobs"] for x in lines] == [pytest.approx(p["logprobs"], abs=1e-5)
                                                          for p in direct["predictions"]]

    # a generative row (the `score` stage's format) and the log-likelihood rows in one table
    gen = tmp_path / "runs" / "pubmedqa_gen" / "results.json"
    gen.parent.mkdir(parents=True)
    gen.write_text(json.dumps({"format": "biogpt_train.results/1", "task": "pubmedqa", "model": "biogpt",
                               "group": "pqa-ft", "seed": 1, "split": "test", "primary_metric": "accuracy",
                               "primary": 75.0, "metrics": {"accuracy": 75.0},
                               "units": {"kind": "mean", "values": [1, 1, 0, 1]},
                               "baseline": {"accuracy": 50.0}}))
    rows = summarise(find_results([tmp_path / "runs"]), bootstrap_samples=50)
    assert [(r["task"], r["metric"]) for r in rows] == [("medqa", "acc"), ("medqa", "acc_norm"),
                                                        ("pubmedqa", "accuracy")]
    ll = rows[0]
    assert ll["ours_mean"] == res["metrics"]["acc"] and ll["paper"] is None and ll["seeds"] == 1
    assert ll["majority_baseline"] == res["baseline"]["acc"]
    assert rows[2]["paper"] == 78.2 and rows[2]["ours_mean"] == 75.0
    assert "| medqa | model | model:medqa:loglikelihood:1-shot | acc_norm |" in to_markdown(rows)
    assert collect_main([str(tmp_path / "runs"), "--out", str(tmp_path / "table"), "--bootstrap-samples", "20"]) == 0
    assert "acc_norm" in (tmp_path / "table.md").read_text()


def test_load_tokenizer_beside_hf_directory_and_stored_dictionary(tiny, tmp_path):
    from biogpt_train.checkpoint.io import export_hf, save_native
    from biogpt_train.evaluation.cli import _load_tokenizer

    model, tok, d = tiny
    text = "Question: the cat?\nA. Liver\nAnswer: B"
    hf_dir = export_hf(model, tok.dictionary, d / "bpecodes", tmp_path / "hf")
    assert _load_tokenizer(hf_dir).encode(text) == tok.encode(text)
    alone = tmp_path / "alone"
    alone.mkdir()
    save_native(alone / "ckpt.pt", model, tok.dictionary)  # no dict.txt beside: the stored dictionary
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        _load_tokenizer(alone / "ckpt.pt")
    assert _load_tokenizer(alone / "ckpt.pt", bpecodes=d / "bpecodes").encode(text) == tok.encode(text)
    # a native checkpoint that carries its BPE codes needs nothing beside it
    save_native(alone / "full.pt", model, tok.dictionary, tokenizer_files={"bpecodes": (d / "bpecodes").read_bytes()})
    assert _load_tokenizer(alone / "full.pt").encode(text) == tok.encode(text)


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    from biogpt_train.evaluation.cli import main

    _, _, d = tiny
    data = write_jsonl(tmp_path / "m.jsonl", MEDMCQA[:2])
    assert main(["medmcqa", "--checkpoint", str(d / "checkpoint.pt"), "--data", str(data), "--device", "cpu"]) == 2
    assert "pass cop_base=0 or 1 (--cop-base)" in capsys.readouterr().err
    assert main(["medmcqa", "--checkpoint", str(d / "checkpoint.pt"), "--data", str(data), "--device", "cpu",
                 "--cop-base", "1"]) == 0
    medqa = write_jsonl(tmp_path / "q.jsonl", MEDQA)
    assert main(["medqa", "--checkpoint", str(d / "checkpoint.pt"), "--data", str(medqa), "--fewshot", "2"]) == 2
    assert "needs fewshot_path (--fewshot-data)" in capsys.readouterr().err
