"""Encoder training and QA evaluation (issue #13): ELECTRA's linear schedule and layer-wise LR decay, the qa and
electra_pretrain objectives (against transformers' QA loss and electra_loss), encoder data prep (sentence
splitting, ELECTRA blocks, the BioASQ question split), the trainer end to end on a synthetic QA set with the QA
generate/score stages, and (slow) ELECTRA smoke pretraining and a tiny encoder on the shipped BioASQ data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.models.electra import EncoderConfig, QAModel
from biogpt_train.models.electra_pretraining import build_electra
from biogpt_train.train.lr_schedulers import linear
from biogpt_train.train.optim import build_optimizer, layer_depths, set_lr

pytestmark = pytest.mark.usefixtures("single_torch_thread")
REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(vocab=120, **kw):
    base = dict(vocab_size=vocab, embedding_size=16, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=64,
                dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return EncoderConfig(**base)


# --- schedule and optimizer ----------------------------------------------------------------------------------
def test_linear_schedule_is_electras():
    cfg = {"lr": 1e-3, "max_update": 100, "warmup_ratio": 0.1}
    assert linear(0, cfg) == 0.0
    assert linear(5, cfg) == pytest.approx(1e-3 * 0.95 * 0.5)  # decay from step 0, times the warmup factor
    assert linear(10, cfg) == pytest.approx(1e-3 * 0.9)
    assert linear(55, cfg) == pytest.approx(1e-3 * 0.45)
    assert linear(100, cfg) == 0.0 and linear(150, cfg) == 0.0
    assert linear(4, {"lr": 1e-3, "total_num_update": 10, "warmup_updates": 4}) == pytest.approx(6e-4)
    with pytest.raises(ValueError, match="total_num_update or max_update"):
        linear(0, {"lr": 1e-3})


def test_layerwise_lr_decay_groups():
    model = QAModel(tiny_cfg())
    depth = layer_depths(model)
    names = dict(model.named_parameters())
    assert depth[id(names["electra.embeddings.word_embeddings.weight"])] == 0
    assert depth[id(names["electra.embeddings_project.weight"])] == 0
    assert depth[id(names["electra.encoder.layer.1.output.dense.weight"])] == 2
    assert depth[id(names["qa_outputs.weight"])] == 4
    ocfg = SimpleNamespace(name="adam", impl="foreach", lr=1.0, betas=[0.9, 0.999], eps=1e-6, weight_decay=0.01,
                           decay_all_params=False, layerwise_lr_decay=0.8)
    opt = build_optimizer(model, ocfg, torch.device("cpu"))
    set_lr(opt, 1.0)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in model.parameters())
    assert lr_of[id(names["electra.embeddings.word_embeddings.weight"])] == pytest.approx(0.8 ** 4)
    assert lr_of[id(names["electra.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(0.8 ** 3)
    assert lr_of[id(names["electra.encoder.layer.1.attention.self.query.weight"])] == pytest.approx(0.8 ** 2)
    assert lr_of[id(names["qa_outputs.bias"])] == 1.0
    assert wd_of[id(names["qa_outputs.bias"])] == 0.0 and wd_of[id(names["qa_outputs.weight"])] == 0.01


# --- objectives ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # importing transformers takes ~10 s
def test_qa_loss_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from biogpt_train.train.objectives import qa_loss

    torch.manual_seed(0)
    cfg = tiny_cfg()
    ours = QAModel(cfg).eval()
    hf_cfg = transformers.ElectraConfig(vocab_size=cfg.vocab_size, embedding_size=16, hidden_size=32,
                                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                        max_position_embeddings=64, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    hf = transformers.ElectraForQuestionAnswering(hf_cfg).eval()
    hf.load_state_dict(ours.state_dict(), strict=False)
    ids = torch.randint(5, cfg.vocab_size, (3, 20))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    start, end = torch.tensor([3, 0, 40]), torch.tensor([5, 0, 41])  # the third is out of range: ignored
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "start_positions": start,
              "end_positions": end, "ntokens": 3}
    summed = qa_loss(ours, sample, torch.device("cpu"))
    ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=start, end_positions=end).loss
    assert (summed / 2).item() == pytest.approx(ref.item(), rel=1e-5)  # HF: mean over the 2 counted rows


def test_electra_pretrain_loss_is_the_mean_loss_times_tokens():
    from biogpt_train.train.objectives import electra_pretrain_loss

    torch.manual_seed(0)
    model = build_electra(tiny_cfg(), head="pretrain", mask_id=4, special_ids=(2, 3), generator_size=0.5)
    assert model.cfg.embed_dim == 32 and len(model.blocks) == 4
    ids = torch.randint(5, 120, (2, 16))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    torch.manual_seed(5)
    mean, _ = model(batch)
    torch.manual_seed(5)
    summed = electra_pretrain_loss(model, {**batch, "ntokens": int(mask.sum())}, torch.device("cpu"))
    assert summed.item() == pytest.approx(mean.item() * int(mask.sum()), rel=1e-6)


# --- data prep -----------------------------------------------------------------------------------------------
def test_sentence_split_and_blocks():
    from data_prep.encoder_corpus import BlockOptions, document_blocks, split_sentences

    text = ("Mutations in TP53 were found (e.g. R175H) in 12 tumours. Smith et al. In 2001 reported more. "
            "Fig. 2 shows it! 3 patients died? Yes.")
    assert split_sentences(text) == ["Mutations in TP53 were found (e.g. R175H) in 12 tumours.",
                                     "Smith et al. In 2001 reported more.", "Fig. 2 shows it!", "3 patients died?",
                                     "Yes."]
    CLS, SEP = 2, 3
    rng = random.Random(0)
    doc = []
    for n in rng.choices(range(3, 30), k=40):  # 40 sentences, each ending in [SEP]
        doc += [rng.randrange(5, 100) for _ in range(n)] + [SEP]
    opts = BlockOptions(max_length=64)
    blocks = document_blocks(doc, CLS, SEP, opts, random.Random(1))
    assert blocks and all(b[0] == CLS and b[-1] == SEP and len(b) <= 64 for b in blocks)
    assert all(2 <= (b == SEP).sum() <= 3 or (b == SEP).sum() == 1 for b in blocks)
    # blocks keep the text in order: their content is the document minus the sentence [SEP]s and cut tails
    content = [t for b in blocks for t in b if t not in (CLS, SEP)]
    assert len(content) <= sum(1 for t in doc if t != SEP) and content[:5] == [t for t in doc if t != SEP][:5]
    assert [b.tolist() for b in document_blocks(doc, CLS, SEP, opts, random.Random(1))] == [b.tolist() for b in blocks]


def test_pubmed_wordpiece_blocks(tmp_path):
    from biogpt_train.data.encoder_data import BlockDataset
    from biogpt_train.data.vocab import WordPieceVocab
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset
    from data_prep import pubmed

    enc = {"train": True, "vocab_size": 600, "lowercase": True, "min_frequency": 1, "vocab": None,
           "blocks": {"max_length": 64}}
    sample = REPO / "data_prep" / "samples" / "pubmed_sample.xml"
    out = tmp_path / "electra"
    first = pubmed.run(sample, out, encoder=enc, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["tokenizer"]["kind"] == "wordpiece" and manifest["dictionary"] is None
    assert (out / "vocab.txt").exists() and not (out / "dict.txt").exists()
    vocab = WordPieceVocab(out / "vocab.txt")
    ds = BlockDataset(MMapIndexedDataset(out / "train"), pad_id=vocab.pad(), sep_id=vocab.eos(), shuffle=True)
    assert len(ds) > first["kept"] // 2 and ds.sizes.max() <= 64
    batch = ds.collater([ds[i] for i in range(4)])
    row = batch["input_ids"][0][: int(batch["attention_mask"][0].sum())]
    assert row[0] == vocab.cls_id and row[-1] == vocab.sep_id
    sep = int((row == vocab.sep_id).nonzero()[0])
    assert batch["token_type_ids"][0, : sep + 1].sum() == 0 and batch["ntokens"] == int(batch["attention_mask"].sum())
    again = pubmed.run(sample, out, encoder=enc, progress=False)  # resumable: the unit is reused
    assert again["units_already_complete"] == 1 and again["merge"]["train_docs"] == first["merge"]["train_docs"]


@pytest.mark.shared_data
def test_bioasq_prep_splits_by_question(tmp_path, shared_data):
    from data_prep.__main__ import run

    out = tmp_path / "bq"
    run(compose_data_prep(["dataset=bioasq", f"raw_dir={shared_data / 'BioASQ'}", f"out_dir={out}",
                           "tokenizer=wordpiece", "wordpiece.train=true", "wordpiece.vocab_size=2000"]))
    qids = {}
    for split in ("train", "valid", "test"):
        data = json.loads((out / f"{split}.json").read_text())
        qids[split] = {qa["id"].rpartition("_")[0] for p in data["data"][0]["paragraphs"] for qa in p["qas"]}
    assert not qids["train"] & qids["valid"] and len(qids["valid"]) == 53 and len(qids["train"]) == 477
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["tokenizer"]["kind"] == "wordpiece" and (out / "vocab.txt").exists()


def compose_data_prep(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf" / "data_prep")):
        return hcompose(config_name="config", overrides=overrides)


# --- trainer + QA evaluation end to end ----------------------------------------------------------------------
def synthetic_qa(out: Path, seed: int = 0) -> Path:
    """Questions 'Which gene causes D?' over contexts that name exactly one gene causing D, plus a vocab."""
    from biogpt_train.data.wordpiece import train_wordpiece

    genes = ["brca1", "tp53", "egfr", "kras", "myc", "pten", "apoe", "cftr"]
    diseases = ["cancer", "fibrosis", "alzheimer disease", "leukemia", "asthma", "diabetes"]
    words = ["cells", "were", "studied", "in", "mice", "and", "humans", "with", "assays"]

    def make(n, s):
        rng = random.Random(s)
        paragraphs = []
        for i in range(n):
            g, d = rng.choice(genes).upper(), rng.choice(diseases)
            filler = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            ctx = f"{filler}. Mutations in {g} cause {d}. {filler}."
            paragraphs.append({"context": ctx, "qas": [{"id": f"q{s}{i:04d}_001", "question": f"Which gene causes {d}?",
                                                        "answers": [{"text": g, "answer_start": ctx.index(g)}]}]})
        return {"version": "v1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}

    out.mkdir(parents=True)
    for split, n, s in (("train", 64, seed + 1), ("valid", 16, seed + 2)):
        (out / f"{split}.json").write_text(json.dumps(make(n, s)))
    texts = [p["context"] + " " + p["qas"][0]["question"] for p in make(200, seed + 3)["data"][0]["paragraphs"]]
    train_wordpiece(texts, out, vocab_size=300, min_frequency=1)
    (out / "manifest.json").write_text("{}")
    return out


@pytest.mark.slow
def test_trainer_qa_end_to_end(tmp_path):
    from biogpt_train import pipeline
    from biogpt_train.train.trainer import Trainer

    data = synthetic_qa(tmp_path / "qa")
    cfg = compose(["model=electra_tiny", "task.name=bioasq", f"task.data={data}", "task.max_seq_length=64",
                   f"paths.runs={tmp_path / 'runs'}", "pipeline.stages=[train,generate,score]", "data.max_tokens=null",
                   "data.batch_size=8", "trainer.max_epoch=4", "trainer.max_update=0", "trainer.device=cpu",
                   "lr_scheduler=linear", "optim.lr=2e-3", "optim.layerwise_lr_decay=0.9", "logging.tensorboard=false",
                   "model.dropout=0.0", "generation.subset=valid", "generation.checkpoint=checkpoint_last.pt"])
    run = tmp_path / "run"
    tr = Trainer(cfg, run, distributed.init("cpu"))
    assert tr._epoch_limited_updates() == 4 * 8  # 64 features / 8 per batch, 4 epochs: the linear schedule's total
    out = tr.train()
    assert out["num_updates"] == 32
    pipeline.STAGES["generate"](cfg, run)  # QA tasks: pipeline/qa_eval.py
    res = pipeline.STAGES["score"](cfg, run)
    results = json.loads((run / "results.json").read_text())
    assert results["table_metrics"] == ["strict", "lenient", "mrr", "exact", "f1"]
    assert results["primary_metric"] == "mrr" and results["metric_units"]["mrr"]["kind"] == "mean"
    assert len(results["metric_units"]["exact"]["values"]) == 16
    nbest = json.loads((run / "eval" / "valid.nbest.json").read_text())
    submission = json.loads((run / "eval" / "valid.bioasq.json").read_text())
    assert len(nbest) == 16 and len(submission["questions"]) == 16
    assert res["lenient"] > results["baseline"]["lenient"] and res["f1"] > results["baseline"]["f1"]


@pytest.mark.slow
def test_smoke_electra_pretraining_loss_falls(tmp_path):
    from test_trainer_helpers import run_in_process

    overrides = ["+experiment=smoke_electra", f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
                 "logging.tensorboard=false", "logging.log_interval=1"]
    run = tmp_path / "run"
    run_in_process(overrides, run)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("split") == "train"]
    assert len(train) == 30
    first, last = sum(r["loss"] for r in train[:5]) / 5, sum(r["loss"] for r in train[-5:]) / 5
    assert last < 0.85 * first
    run_in_process(overrides + ["trainer.max_update=32"], run)  # resumes from checkpoint_last.pt (update 30)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in lines if r.get("split") == "train"][-2:] == [31, 32]


@pytest.mark.slow
@pytest.mark.shared_data
def test_tiny_encoder_beats_first_sentence_baseline_on_bioasq(tmp_path, shared_data):
    """+experiment=mini_bioasq (3 epochs, ~2 CPU minutes): a tiny ELECTRA trained from scratch on 477 BioASQ
    training questions beats the first-sentence baseline on the 53 held-out questions (strict/lenient/MRR of the
    merged snippet answers, snippet EM)."""
    from test_trainer_helpers import run_in_process

    run = tmp_path / "run"
    run_in_process(["+experiment=mini_bioasq", f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
                    f"paths.shared={shared_data}", "trainer.max_epoch=3", "logging.tensorboard=false"], run)
    r = json.loads((run / "results.json").read_text())
    assert r["metrics"]["n"] == 53 and r["metrics"]["total"] == 392
    for m in ("strict", "lenient", "mrr", "exact"):
        assert r["metrics"][m] > r["baseline"][m] + 2.0, (m, r["metrics"][m], r["baseline"][m])


def test_finetune_from_hf_discriminator_starts_a_fresh_qa_head(tmp_path):
    """checkpoint.finetune_from = a transformers ElectraForPreTraining directory: the body loads, the QA head is
    new (BioM's squad2 stage starts from the released discriminator)."""
    from biogpt_train.checkpoint.hf_encoder import save_hf_encoder
    from biogpt_train.models.electra import ElectraDiscriminator
    from biogpt_train.train.trainer import Trainer

    data = synthetic_qa(tmp_path / "qa")
    vocab = sum(1 for _ in open(data / "vocab.txt"))
    disc = ElectraDiscriminator(EncoderConfig(vocab_size=vocab, embedding_size=32, embed_dim=64, layers=2, heads=4,
                                              ffn_dim=128, max_positions=128))
    hf_dir = save_hf_encoder(disc, tmp_path / "disc", vocab_file=data / "vocab.txt")
    cfg = compose(["model=electra_tiny", "task.name=squad", f"task.data={data}", "task.max_seq_length=64",
                   f"paths.runs={tmp_path / 'runs'}", "data.max_tokens=null", "data.batch_size=8",
                   "trainer.max_update=1", "trainer.device=cpu", f"checkpoint.finetune_from={hf_dir}",
                   "logging.tensorboard=false"])
    tr = Trainer(cfg, tmp_path / "run", distributed.init("cpu"))
    body = {k: v for k, v in disc.state_dict().items() if k.startswith("electra.")}
    ours = tr.raw_model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in body.items()) and "qa_outputs.weight" in ours
