"""The `generate` / `score` stages (biogpt_train/pipeline/evaluate.py) and the task registry.

Synthetic prepared directories and a tiny random model check BioGPT's decoding semantics (forced source+prompt
prefix, source truncation with '...', greedy, the length limit counting the prefix, output = whole hypothesis in
*.detok form), reuse, gold resolution per task and split with its errors, the majority baseline and results.json.
The real dev sets check that the gold of every task lines up with the prepared data: the gold targets
themselves, decoded-line shaped, score 100 (BC5CDR/KD-DTI slightly less, reference §7.6).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from biogpt_train.pipeline import evaluate
from biogpt_train.config import compose
from biogpt_train.tasks.registry import TASKS, GoldRule, get_task
from tests.conftest import REPO, require_shared
from tests.helpers import EOS, PAD, tiny_lm, write_dict

pytestmark = pytest.mark.usefixtures("single_torch_thread")

WORDS = ["the", "answer", "to", "question", "given", "context", "is", "yes", "no", "maybe", "hel@@", "lo", "(",
         ")", "world", ",", "&apos;s", "...", "a", "b", "c", "d", "e", "f"]


# ------------------------------------------------------------------------------------------------- helpers
def write_prepared(out: Path, split_lines: dict, raw_dir: Path | None = None, settings=None) -> Path:
    """A prepared task directory from BPE'd lines: {split}.x/.y/.pmid, binarised {split}.x-y.{x,y}, dict.txt,
    manifest.json. split_lines: {split: [(pmid, source, target or None), ...]}."""
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.indexed_dataset import write_dataset

    out.mkdir(parents=True, exist_ok=True)
    d = Dictionary.load(write_dict(out / "dict.txt", WORDS))
    for split, rows in split_lines.items():
        (out / f"{split}.pmid").write_text("".join(f"{p}\n" for p, _, _ in rows), encoding="utf-8")
        (out / f"{split}.x").write_text("".join(f"{x}\n" for _, x, _ in rows), encoding="utf-8")
        write_dataset(out / f"{split}.x-y.x", [d.encode_line(x) for _, x, _ in rows], len(d))
        if rows and rows[0][2] is not None:
            (out / f"{split}.y").write_text("".join(f"{y}\n" for _, _, y in rows), encoding="utf-8")
            write_dataset(out / f"{split}.x-y.y", [d.encode_line(y) for _, _, y in rows], len(d))
    manifest = {"dataset": "synthetic", "settings": settings or {},
                "counts": {"raw_dir": str(raw_dir) if raw_dir else None}}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


def make_cfg(task: str, data: Path, tmp: Path, **ev):
    cfg = compose([f"task={task}", "model=tiny", f"task.data={data}", f"paths.runs={tmp / 'runs'}",
                   f"paths.shared={tmp / 'shared'}", "trainer.device=cpu", "generation.subset=valid"])
    OmegaConf.set_struct(cfg, False)
    for k, v in ev.items():
        cfg.evaluation[k] = v
    return cfg


def save_model(run_dir: Path, n_prompt: int, max_positions: int = 24, seed: int = 2, name="checkpoint_avg.pt"):
    """A tiny random model whose hypotheses end at different lengths (random final LayerNorm, </s> bias)."""
    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary

    d = Dictionary()
    for w in WORDS + [f"learned{k}" for k in range(1, n_prompt + 1)]:
        d.add_symbol(w)
    model = tiny_lm(len(d), max_positions=max_positions, seed=seed, eos_boost=3.0)
    path = run_dir / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_native(path, model, d)
    return model, d, path


def naive_greedy(model, prefix: list[int], max_len: int) -> list[int]:
    """BioGPT's decoding without a cache: start at </s>, force the prefix, then argmax (never <pad>) until </s>
    or until the hypothesis holds max_len tokens (prefix included)."""
    tokens = [EOS]
    prefix = prefix[:max_len]
    with torch.no_grad():
        while len(tokens) - 1 < max_len:
            step = len(tokens) - 1
            if step < len(prefix):
                tokens.append(prefix[step])
                continue
            logits = model(torch.tensor([tokens]))[0, -1].double()
            logits[PAD] = -float("inf")
            nxt = int(logits.argmax())
            if nxt == EOS:
                break
            tokens.append(nxt)
    return tokens[1:]


def fake_generate(cfg, run_dir: Path, lines: list[str], split="valid"):
    """Write what the generate stage writes, for scoring hand-made lines."""
    out = evaluate.output_paths(cfg, run_dir, split)
    out["detok"].parent.mkdir(parents=True, exist_ok=True)
    pmids = (evaluate.data_dir(cfg) / f"{split}.pmid").read_text(encoding="utf-8").splitlines()[: len(lines)]
    out["detok"].write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    out["bpe"].write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    out["pmid"].write_text("".join(x + "\n" for x in pmids), encoding="utf-8")
    ckpt = run_dir / "checkpoints" / "checkpoint_avg.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"weights")
    meta = {"examples": len(lines), "checkpoint": {"path": str(ckpt), "sha256": "x" * 64}, "generation": {},
            "seconds": 0.0}
    out["meta"].write_text(json.dumps(meta), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- decoding
PQA_ROWS = [("11", "a b c d e f a b c d e f a b", "the answer to the question given the context is yes."),
            ("12", "hel@@ lo world , the", "the answer to the question given the context is no."),
            ("13", "( a ) b &apos;s c", "the answer to the question given the context is maybe."),
            ("14", "f", "the answer to the question given the context is yes.")]


@pytest.fixture
def decode_setup(tmp_path):
    data = write_prepared(tmp_path / "data", {"valid": PQA_ROWS, "train": PQA_ROWS})
    cfg = make_cfg("pubmedqa", data, tmp_path)
    cfg.task.learned_prompt = 3
    cfg.task.max_source_positions = 6
    run_dir = tmp_path / "run"
    model, d, _ = save_model(run_dir, n_prompt=3, max_positions=24)
    return cfg, run_dir, model, d


def test_generate_is_biogpt_inference(decode_setup):
    """Prefix = source truncated to max_source_positions (last kept id -> '...') + learned1..N, forced after </s>;
    greedy until </s> or min(max_len_b, max_positions - 1) tokens counting the prefix; each output line is the
    whole hypothesis: *.bpe = dict.string, *.detok = '@@ ' removed + Moses detokenizer."""
    from sacremoses import MosesDetokenizer

    cfg, run_dir, model, d = decode_setup
    res = evaluate.generate(cfg, run_dir)
    out = evaluate.output_paths(cfg, run_dir, "valid")
    assert res == {"predictions": str(out["detok"]), "generated_examples": 4}
    bpe = out["bpe"].read_text(encoding="utf-8").splitlines()
    detok = out["detok"].read_text(encoding="utf-8").splitlines()
    prompt = [d.index(f"learned{k}") for k in (1, 2, 3)]
    max_len = min(cfg.generation.max_len_b, 24 - 1)
    lengths = set()
    for (pmid, src, _), b, t in zip(PQA_ROWS, bpe, detok):
        ids = d.encode_line(src, append_eos=False)
        if len(ids) > 6:
            ids = ids[:5] + [d.index("...")]
        hyp = naive_greedy(model, ids + prompt, max_len)
        lengths.add(len(hyp))
        assert b == d.string(hyp)
        assert b.startswith(d.string(ids + prompt))
        assert t == MosesDetokenizer("en").detokenize((b + " ").replace("@@ ", "").rstrip().split())
    assert max_len in lengths and len(lengths) > 1  # some hit the length limit, some stop at </s>
    assert "hello world," in detok[1] and "(a) b's c" in detok[2]  # detokenised, BPE joined
    assert out["pmid"].read_text().split() == ["11", "12", "13", "14"]
    meta = json.loads(out["meta"].read_text())
    assert meta["checkpoint"]["path"].endswith("checkpoint_avg.pt") and len(meta["checkpoint"]["sha256"]) == 64
    assert meta["generation"]["beam"] == 1 and meta["prompt"]["max_source_positions"] == 6


def test_generate_batching_reuse_and_max_examples(decode_setup, monkeypatch):
    cfg, run_dir, _, _ = decode_setup
    evaluate.generate(cfg, run_dir)
    out = evaluate.output_paths(cfg, run_dir, "valid")
    first = out["detok"].read_text()

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(evaluate, "_decode", boom)
    evaluate.generate(cfg, run_dir)  # same checkpoint, data and options: reused
    monkeypatch.undo()
    cfg.generation.batch_size = 1  # not part of the key (batched == unbatched) ...
    cfg.evaluation.reuse = False
    evaluate.generate(cfg, run_dir)
    assert out["detok"].read_text() == first  # ... and indeed the same text
    cfg.evaluation.reuse = True
    cfg.evaluation.max_examples = 2
    evaluate.generate(cfg, run_dir)
    assert out["detok"].read_text().splitlines() == first.splitlines()[:2]
    assert out["pmid"].read_text().split() == ["11", "12"]


def test_generate_errors_are_clear(decode_setup, tmp_path):
    cfg, run_dir, _, _ = decode_setup
    cfg.generation.checkpoint = "checkpoint_best.pt"
    with pytest.raises(FileNotFoundError, match=r"checkpoint_best.pt not found.*checkpoint_avg.pt"):
        evaluate.generate(cfg, run_dir)
    cfg.generation.checkpoint = "checkpoint_avg.pt"
    cfg.generation.subset = "test"
    with pytest.raises(FileNotFoundError, match=r"split 'test' of pubmedqa is not prepared"):
        evaluate.generate(cfg, run_dir)
    cfg.generation.subset = "valid"
    cfg.task.learned_prompt = 2  # the checkpoint was trained with 3 prompt tokens
    with pytest.raises(ValueError, match="differs from"):
        evaluate.generate(cfg, run_dir)


def test_dtype_auto_halves_fp16_checkpoints_on_cuda_only(decode_setup, tmp_path, caplog):
    """evaluation.dtype=auto (the default) = BioGPT's inference.py: model.half() when the checkpoint's training cfg
    says fp16; on CPU such a checkpoint decodes in fp32 with a note. Explicit dtypes are kept."""
    from biogpt_train.checkpoint.io import save_native

    cfg, run_dir, model, d = decode_setup
    assert compose([]).evaluation.dtype == "auto"
    path = run_dir / "checkpoints" / "checkpoint_avg.pt"
    save_native(path, model, d, cfg={"trainer": {"precision": "fp16", "fp16_weights": "memory_efficient"}})
    with caplog.at_level("INFO", logger="biogpt_train"):
        m, _ = evaluate._load_model(cfg, path, torch.device("cpu"), "auto")
    assert m.decoder.embed_tokens.weight.dtype == torch.float32 and "decoding in fp32 on cpu" in caplog.text
    m, _ = evaluate._load_model(cfg, path, torch.device("cpu"), "fp16")
    assert m.decoder.embed_tokens.weight.dtype == torch.float16
    with pytest.raises(ValueError, match="evaluation.dtype must be one of"):
        cfg.evaluation.dtype = "fp8"
        evaluate.generate(cfg, run_dir)


# -------------------------------------------------------------------------------------------------- gold
def _pqa_raw(path: Path, labels: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: {"QUESTION": "q", "CONTEXTS": ["c"], "final_decision": v}
                                for k, v in labels.items()}), encoding="utf-8")


def test_pubmedqa_gold_rules(tmp_path):
    raw = tmp_path / "raw"
    data = write_prepared(tmp_path / "data", {"valid": PQA_ROWS, "train": PQA_ROWS}, raw_dir=raw,
                          settings={"fold": 3})
    cfg = make_cfg("pubmedqa", data, tmp_path)
    spec = get_task("pubmedqa")
    pmids = ["11", "12", "13", "14"]
    out = tmp_path / "eval"
    out.mkdir()
    # no raw file: derived from the prepared valid.y
    g = evaluate.resolve_gold(cfg, spec, "valid", pmids, out, restrict=False)
    assert g.how == "derived from the prepared valid.y"
    assert json.loads(g.path.read_text()) == {"11": "yes", "12": "no", "13": "maybe", "14": "yes"}
    # the raw fold file of the fold recorded in the manifest wins
    _pqa_raw(raw / "pqal_fold3" / "dev_set.json", {"14": "no", "11": "yes", "12": "no", "13": "maybe"})
    _pqa_raw(raw / "pqal_fold0" / "dev_set.json", {"99": "yes"})
    g = evaluate.resolve_gold(cfg, spec, "valid", pmids, out, restrict=False)
    assert g.how == "final_decision of pqal_fold3/dev_set.json" and g.source == raw / "pqal_fold3" / "dev_set.json"
    assert list(json.loads(g.path.read_text())) == ["14", "11", "12", "13"]  # the gold file's order
    g = evaluate.resolve_gold(cfg, spec, "valid", ["11", "12"], out, restrict=True)
    assert json.loads(g.path.read_text()) == {"11": "yes", "12": "no"} and g.restricted
    # test: no labels anywhere -> an error naming every place looked at and the way out
    with pytest.raises(FileNotFoundError) as e:
        evaluate.resolve_gold(cfg, spec, "test", pmids, out, restrict=False)
    msg = str(e.value)
    for where in ("test_ground_truth.json", "test_set.json", "test.y", "evaluation.gold=FILE", str(raw)):
        assert where in msg
    (raw / "test_ground_truth.json").write_text(json.dumps({"11": "no"}))
    g = evaluate.resolve_gold(cfg, spec, "test", pmids, out, restrict=False)
    assert g.path == raw / "test_ground_truth.json" and g.how == "raw file test_ground_truth.json"


def test_raw_dir_resolution_order(tmp_path):
    data = write_prepared(tmp_path / "data", {"valid": PQA_ROWS}, raw_dir=tmp_path / "recorded")
    spec = get_task("ddi")
    cfg = make_cfg("ddi", data, tmp_path)
    assert evaluate.resolve_raw_dir(cfg, spec)[0] == tmp_path / "shared" / "DDI" / "raw"  # recorded dir absent
    (tmp_path / "recorded").mkdir()
    assert evaluate.resolve_raw_dir(cfg, spec) == (tmp_path / "recorded",
                                                   f"raw_dir recorded in {data / 'manifest.json'}")
    cfg.evaluation.raw_dir = str(tmp_path / "mine")
    assert evaluate.resolve_raw_dir(cfg, spec) == (tmp_path / "mine", "evaluation.raw_dir")
    (data / "manifest.json").write_text("{}")
    cfg.evaluation.raw_dir = None
    cfg.pipeline.prepare.dataset, cfg.pipeline.prepare.raw_dir = "pubmed", str(tmp_path / "lm")  # not this task
    assert evaluate.resolve_raw_dir(cfg, spec)[1] == "paths.shared/DDI/raw"
    cfg.pipeline.prepare.dataset = "ddi"
    assert evaluate.resolve_raw_dir(cfg, spec) == (tmp_path / "lm", "pipeline.prepare.raw_dir")


def test_relation_extraction_gold_rules(tmp_path):
    rows = [("D1", "a b", "x"), ("D2", "c", "y")]
    shared = tmp_path / "shared"
    data = write_prepared(tmp_path / "data", {"valid": rows})
    out = tmp_path / "eval"
    out.mkdir()
    # kd_dti/ddi: the raw json, valid.json before dev.json; an inputs-only test file is never gold
    raw = shared / "KD-DTI" / "raw"
    raw.mkdir(parents=True)
    (raw / "dev.json").write_text("{}")
    (raw / "test_inputs.json").write_text("{}")
    cfg = make_cfg("kd_dti", data, tmp_path)
    spec = get_task("kd_dti")
    (raw / "dev.json").write_text('{"D1": {"triples": []}, "D2": {"triples": []}}')
    g = evaluate.resolve_gold(cfg, spec, "valid", ["D1"], out, restrict=True)
    assert g.source == raw / "dev.json" and g.restricted  # only the decoded documents: the scorer needs them all
    assert json.loads(g.path.read_text()) == {"D1": {"triples": []}}
    (raw / "valid.json").write_text("{}")
    assert evaluate.resolve_gold(cfg, spec, "valid", ["D1"], out, restrict=False).path == raw / "valid.json"
    with pytest.raises(FileNotFoundError, match="test.json"):
        evaluate.resolve_gold(cfg, spec, "test", ["D1"], out, restrict=False)
    # bc5cdr: the PubTator file inside raw/ (BioGPT's layout) or beside it (../shared/data's)
    cfg = make_cfg("bc5cdr", data, tmp_path)
    spec = get_task("bc5cdr")
    beside = shared / "BC5CDR" / "CDR_Data" / "CDR.Corpus.v010516" / "CDR_DevelopmentSet.PubTator.txt"
    beside.parent.mkdir(parents=True)
    beside.write_text("D1|t|T\nD1|a|A\nD1\tCID\tC1\tX1\n\nD3|t|T\nD3\tCID\tC2\tX2\n\n")
    (shared / "BC5CDR" / "raw").mkdir()
    g = evaluate.resolve_gold(cfg, spec, "valid", ["D1", "D2"], out, restrict=False)
    assert g.path == beside and not g.restricted
    g = evaluate.resolve_gold(cfg, spec, "valid", ["D1", "D2"], out, restrict=True)
    assert g.path.read_text() == "D1|t|T\nD1|a|A\nD1\tCID\tC1\tX1\n\n\n" and g.source == beside
    inside = shared / "BC5CDR" / "raw" / "CDR_Data" / "CDR.Corpus.v010516" / "CDR_DevelopmentSet.PubTator.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("D1|t|T\n")
    assert evaluate.resolve_gold(cfg, spec, "valid", ["D1"], out, restrict=False).path == inside
    # an explicit gold file overrides the rules
    cfg.evaluation.gold = str(beside)
    assert evaluate.resolve_gold(cfg, spec, "valid", ["D1"], out, restrict=False).how == "evaluation.gold"
    cfg.evaluation.gold = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="evaluation.gold="):
        evaluate.resolve_gold(cfg, spec, "valid", ["D1"], out, restrict=False)


def test_hoc_gold_is_derived_from_the_prepared_dev_split(tmp_path):
    rows = [("train.tsv:3", "a b .", "the type of this document is empty ."),
            ("train.tsv:9", "c d .", "the type of this document is evading growth suppressors|inducing angiogenesis.")]
    data = write_prepared(tmp_path / "data", {"valid": rows})
    # the prepared .y holds the text before tokenisation: write it as data_prep does
    (data / "valid.y").write_text("the type of this document is empty.\n"
                                  "the type of this document is evading growth suppressors|inducing angiogenesis.\n")
    cfg = make_cfg("hoc", data, tmp_path)
    spec = get_task("hoc")
    out = tmp_path / "eval"
    out.mkdir()
    g = evaluate.resolve_gold(cfg, spec, "valid", ["train.tsv:3", "train.tsv:9"], out, restrict=False)
    assert g.path.read_text() == "a b .\tempty\nc d .\tevading growth suppressors|inducing angiogenesis\n"
    raw = tmp_path / "shared" / "HoC" / "raw"
    raw.mkdir(parents=True)
    (raw / "valid.tsv").write_text("leaks\ttest labels\n")  # BioGPT's valid.tsv is test.tsv: never used
    assert evaluate.resolve_gold(cfg, spec, "valid", ["x", "y"], out, restrict=False).how.startswith("derived")
    (data / "valid.y").write_text("garbage\nx\n")
    with pytest.raises(ValueError, match=r"valid.y:1: expected 'the type of this document is <label>.'"):
        evaluate.resolve_gold(cfg, spec, "valid", ["x", "y"], out, restrict=False)


# ------------------------------------------------------------------------------------------------- score
def test_score_writes_results_with_baseline(tmp_path):
    train = [("1", "a", "the answer to the question given the context is no."),
             ("2", "b", "the answer to the question given the context is no."),
             ("3", "c", "the answer to the question given the context is yes.")]
    valid = [("11", "a b", "the answer to the question given the context is yes."),
             ("12", "c", "the answer to the question given the context is no."),
             ("13", "d", "the answer to the question given the context is maybe."),
             ("14", "e", "the answer to the question given the context is no.")]
    data = write_prepared(tmp_path / "data", {"train": train, "valid": valid})
    cfg = make_cfg("pubmedqa", data, tmp_path, model_label="biogpt", group="pqa-tiny")
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=7\n- optim.lr=1e-4\n")
    cfg.seed = 7
    p = "a b learned1 learned2 the answer to the question given the context is"
    fake_generate(cfg, run_dir, [f"{p} yes.", f"{p} maybe.", "The answer is no", f"{p} no."])
    ret = evaluate.score(cfg, run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    assert ret["primary"] == res["primary"] == res["metrics"]["accuracy"] == 50.0
    assert ret["primary_metric"] == res["primary_metric"] == "accuracy"
    assert res["metrics"]["failed"] == 1 and res["units"] == {"kind": "mean", "values": [1, 0, 0, 1]}
    assert (res["task"], res["model"], res["group"], res["seed"], res["split"]) == ("pubmedqa", "biogpt", "pqa-tiny",
                                                                                     7, "valid")
    # majority class of the training targets ("no", 2 of 3), scored like the model: 2 of 4 right
    assert res["baseline"]["accuracy"] == 50.0 and res["baseline"]["prediction"].endswith("is no.")
    assert res["baseline"]["frequency"] == pytest.approx(2 / 3) and res["baseline"]["from"] == "training targets"
    assert res["paper"] == {"accuracy": 78.2}
    assert res["overrides"] == ["seed=7", "optim.lr=1e-4"]
    assert res["gold"]["how"] == "derived from the prepared valid.y"
    assert set(res["data"]["files"]) >= {"dict.txt", "valid.x-y.x.bin", "valid.pmid", "train.y", "manifest.json"}
    assert res["config"]["evaluation"]["group"] == "pqa-tiny" and res["config"]["seed"] == 7

    from experiments.collect import summarise

    row, = summarise([dict(res, _path="x")], bootstrap_samples=100)
    assert row["majority_baseline"] == 50.0 and row["paper"] == 78.2 and row["diff"] == pytest.approx(50 - 78.2)


def test_score_nan_metrics_and_options_from_the_data(tmp_path):
    # bc5cdr without a single parsable relation: P = F = NaN in the official evaluator -> null in results.json
    rows = [("D1", "a", "the relation between x and y exists."), ("D2", "b", "the relation between z and w exists.")]
    raw = tmp_path / "raw"
    pub = raw / "CDR_Data" / "CDR.Corpus.v010516" / "CDR_DevelopmentSet.PubTator.txt"
    pub.parent.mkdir(parents=True)
    pub.write_text("D1|t|T\nD1\tCID\tC1\tX1\n\nD2|t|T\nD2\tCID\tC2\tX2\n\n")
    data = write_prepared(tmp_path / "data", {"valid": rows, "train": rows}, raw_dir=raw)
    (data / "valid.entities.json").write_text(json.dumps({"chemical2id": {"x": "C1"}, "disease2id": {"y": "X1"}}))
    cfg = make_cfg("bc5cdr", data, tmp_path)
    run_dir = tmp_path / "run"
    fake_generate(cfg, run_dir, ["a learned1 nothing here", "b learned1 nothing"])
    evaluate.score(cfg, run_dir)
    text = (run_dir / "results.json").read_text()
    res = json.loads(text)
    assert res["metrics"]["precision"] is None and res["metrics"]["recall"] == 0.0 and "NaN" not in text
    # the baseline's one answer maps to C1-X1: right for D1, a false positive for D2
    assert res["baseline"]["precision"] == 50.0 and res["baseline"]["recall"] == 50.0
    assert res["data"]["files"][str(data / "valid.entities.json")]
    # kd_dti: the target format the data was prepared with reaches the scorer
    raw2 = tmp_path / "raw2"
    raw2.mkdir()
    (raw2 / "valid.json").write_text(json.dumps({"D1": {"triples": [{"drug": "a", "target": "b",
                                                                     "interaction": "inhibitor"}]}}))
    data2 = write_prepared(tmp_path / "data2", {"valid": rows[:1]}, raw_dir=raw2, settings={"target_format": "svo"})
    cfg2 = make_cfg("kd_dti", data2, tmp_path)
    fake_generate(cfg2, tmp_path / "run2", ["x learned1 a inhibits b."])
    evaluate.score(cfg2, tmp_path / "run2")
    res2 = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert res2["scorer_options"] == {"target_format": "svo"} and res2["metrics"]["f1"] == 100.0


def test_default_group_keeps_only_overrides_that_change_results():
    assert evaluate.default_group("ddi", ["+experiment=ddi", "seed=3", "paths.runs=/x", "trainer.device=cpu"]) == "ddi"
    assert evaluate.default_group("ddi", ["seed=2", "optim.lr=1e-5", "+model=biogpt_large", "evaluation.gold=g"]) == \
        "ddi[model=biogpt_large,optim.lr=1e-5]"


def test_score_before_generate_says_what_to_run(tmp_path):
    data = write_prepared(tmp_path / "data", {"valid": PQA_ROWS})
    with pytest.raises(FileNotFoundError, match="run the `generate` stage first"):
        evaluate.score(make_cfg("pubmedqa", data, tmp_path), tmp_path / "run")


# ------------------------------------------------------------------------------------- registry vs configs
@pytest.mark.parametrize("name", sorted(TASKS))
def test_registry_names_a_scorer_and_a_data_builder_for_every_task(name):
    from biogpt_train.scoring import SCORERS

    spec = TASKS[name]
    assert spec.scorer in SCORERS
    assert (REPO / "conf" / "data_prep" / "dataset" / f"{spec.data_prep}.yaml").exists()
    assert (REPO / "conf" / "experiment" / f"{name}.yaml").exists()


def test_gold_rules_are_validated():
    with pytest.raises(ValueError, match="unknown gold rule kind"):
        GoldRule("guess", "x")
    with pytest.raises(ValueError):
        GoldRule("prepared", "valid.y")
    with pytest.raises(KeyError, match="known splits"):
        get_task("hoc").gold_rules("dev")
    with pytest.raises(KeyError, match="no evaluation spec"):
        get_task("language_modeling")


# --------------------------------------------------------------------------------- real dev sets line up
@pytest.mark.shared_data
@pytest.mark.parametrize("task,at_least", [("pubmedqa", 100.0), ("hoc", 100.0), ("ddi", 100.0),
                                           ("kd_dti", 95.0), ("bc5cdr", 95.0)])
def test_gold_targets_of_the_real_dev_sets_score_about_100(task, at_least, tmp_path):
    """Prepared valid targets, shaped like decoded lines (source learned1..9 target), through gold resolution and
    scoring: 100 where the reference says gold scores 100, a little less for KD-DTI / BC5CDR (§7.6)."""
    from data_prep.tasks import BUILDERS

    raw = {"pubmedqa": require_shared("PubMedQA"), "hoc": require_shared("HoC", "raw"),
           "ddi": require_shared("DDI", "raw"), "kd_dti": require_shared("KD-DTI", "raw"),
           "bc5cdr": require_shared("BC5CDR", "raw")}[task]
    if task == "kd_dti":  # no train.json: prepare valid only
        sub = tmp_path / "kd"
        sub.mkdir()
        (sub / "valid.json").symlink_to(raw / "valid.json")
        raw = sub
    data = tmp_path / "data"
    BUILDERS[task](raw, data, None, workers=1, options={})  # text files only
    cfg = make_cfg(task, data, tmp_path)
    if task == "kd_dti":
        cfg.evaluation.baseline = False
    cfg.paths.shared = str(require_shared())
    xs = (data / "valid.x").read_text(encoding="utf-8").splitlines()
    ys = (data / "valid.y").read_text(encoding="utf-8").splitlines()
    prompt = " ".join(f"learned{k}" for k in range(1, int(cfg.task.learned_prompt) + 1))
    run_dir = tmp_path / "run"
    fake_generate(cfg, run_dir, [f"{x} {prompt} {y}" for x, y in zip(xs, ys)])
    ret = evaluate.score(cfg, run_dir)
    assert at_least <= ret["primary"] <= 100.0
    res = json.loads((run_dir / "results.json").read_text())
    assert not res["gold"]["restricted_to_decoded"]
    if task == "bc5cdr":
        assert Path(res["gold"]["path"]).name == "CDR_DevelopmentSet.PubTator.txt"
