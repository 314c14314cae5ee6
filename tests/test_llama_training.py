"""The Llama-family training path: data_prep with a SentencePiece tokenizer (pretraining documents and task pairs),
the `TokenizerVocab` the datasets and trainer see, SFT with the loss on the answer only, LoRA adapters (only they
train; checkpoints hold merged plain weights), and `+experiment=smoke_llama` end to end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.data.indexed_dataset import MMapIndexedDataset, read_index, write_dataset
from biogpt_train.data.vocab import TokenizerVocab
from data_prep import pubmed
from test_trainer_helpers import REPO, make_lm_data, read_metrics, run_cli, tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend

SAMPLE = REPO / "data_prep" / "samples" / "pubmed_sample.xml"
SPM = {"train": True, "vocab_size": 1000}


@pytest.fixture(scope="module")
def spm_data(tmp_path_factory) -> Path:
    """The shipped sample prepared with a 1,000-piece SentencePiece model trained on it."""
    out = tmp_path_factory.mktemp("spm") / "data"
    pubmed.run(SAMPLE, out, tokenizer="sentencepiece", spm=SPM, progress=False)
    return out


def _docs(prefix: Path) -> list[list[int]]:
    return [d.tolist() for d in MMapIndexedDataset(prefix)]


# --- data_prep ----------------------------------------------------------------------------------------------------

def test_pubmed_sentencepiece_documents(spm_data, tmp_path):
    """Every document is <s> + SentencePieceTokenizer.encode(text) + </s>; tokenizer.model (not dict.txt) is in the
    prepared directory and the manifest records it; a rerun reuses the model and the units; tokenizer_model=PATH
    with the same model gives the same shards."""
    vocab = TokenizerVocab.load(spm_data / "tokenizer.model")
    texts = {t for _, t in pubmed.iter_documents(SAMPLE, pubmed.Options(), Counter(), [])}
    want = {tuple([1] + vocab.encode(t) + [2]) for t in texts}
    train, valid = _docs(spm_data / "train"), _docs(spm_data / "valid")
    assert len(train) + len(valid) == 48 and {tuple(d) for d in train + valid} <= want
    assert read_index(spm_data / "train.idx")[0] == np.uint16
    assert not (spm_data / "dict.txt").exists() and not (spm_data / "bpecodes").exists()
    m = json.loads((spm_data / "manifest.json").read_text())
    assert m["tokenizer"]["kind"] == "sentencepiece" and m["tokenizer"]["vocab_size"] == 1000
    assert m["dictionary"] is None and m["settings"]["tokenizer"] == "sentencepiece"
    assert any(o["path"] == "tokenizer.model" for o in m["outputs"])
    # rerun: model reused (same bytes, not rewritten), every unit skipped
    t = (spm_data / "tokenizer.model").stat().st_mtime_ns
    s = pubmed.run(SAMPLE, spm_data, tokenizer="sentencepiece", spm=SPM, progress=False)
    assert s["units_already_complete"] == 1 and (spm_data / "tokenizer.model").stat().st_mtime_ns == t
    # an existing model given by path
    out = tmp_path / "given"
    pubmed.run(SAMPLE, out, tokenizer="sentencepiece", tokenizer_model=spm_data / "tokenizer.model", progress=False)
    assert _docs(out / "train") == train and (out / "tokenizer.model").read_bytes() == (
        spm_data / "tokenizer.model").read_bytes()
    with pytest.raises(pubmed.DataPrepError, match="tokenizer_model"):
        pubmed.run(SAMPLE, tmp_path / "x", tokenizer="sentencepiece", progress=False)


def test_wide_vocabulary_uses_uint32(spm_data, tmp_path, monkeypatch):
    """Ids above 65,535 need a wider .bin dtype: fairseq 0.12's best_fitting_int_dtype gives uint32 (code 9 in the
    index), and the reader returns the same ids."""
    monkeypatch.setattr(TokenizerVocab, "__len__", lambda self: 70_000)
    out = tmp_path / "wide"
    pubmed.run(SAMPLE, out, tokenizer="sentencepiece", tokenizer_model=spm_data / "tokenizer.model", progress=False)
    assert read_index(out / "train.idx")[0] == np.uint32
    assert _docs(out / "train") == _docs(spm_data / "train")


def test_task_pairs_with_sentencepiece(spm_data, tmp_path):
    """dataset=pubmedqa tokenizer=sentencepiece: sources/targets are encode(text) + </s> (no <s>: halves of one
    sequence), tokenizer.model replaces dict.txt; the prompt dataset starts each sequence with <s>."""
    from omegaconf import OmegaConf

    from tests.conftest import require_shared
    from data_prep.__main__ import run as data_prep_run

    raw = require_shared("PubMedQA")
    out = tmp_path / "pqa"
    cfg = OmegaConf.load(REPO / "conf" / "data_prep" / "config.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.dataset = OmegaConf.load(REPO / "conf" / "data_prep" / "dataset" / "pubmedqa.yaml")
    cfg.merge_with({"raw_dir": str(raw), "out_dir": str(out), "tokenizer": "sentencepiece",
                    "tokenizer_model": str(spm_data / "tokenizer.model"), "progress": False})
    data_prep_run(cfg)
    vocab = TokenizerVocab.load(out / "tokenizer.model")
    y = _docs(out / "train.x-y.y")
    lines = (out / "train.y").read_text().splitlines()
    assert y[0] == vocab.encode(lines[0]) + [2] and all(d[0] != 1 for d in y)
    assert not (out / "dict.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["tokenizer"]["kind"] == "sentencepiece"


# --- the vocabulary -----------------------------------------------------------------------------------------------

def test_tokenizer_vocab_interface(spm_data):
    v = TokenizerVocab.load(spm_data / "tokenizer.model")
    assert (v.pad(), v.bos(), v.eos(), v.unk(), v.prefix_token_id) == (0, 1, 2, 0, 1) and len(v) == 1000
    assert v.symbols[:3] == ["<unk>", "<s>", "</s>"] and v.index("</s>") == 2
    assert v.index("...") == v.encode("a...")[-1] != v.unk()  # the truncation marker is one piece
    text = "Plasma neurofilament light chain."
    ids = v.encode(text)
    assert v.string([1, *ids, 2, 0]) == text
    n = v.add_symbol("learned1")
    assert n == 1000 and len(v) == 1001 and v.index("learned1") == 1000 and v.add_symbol("</s>") == 2
    assert v.string([*ids, n]) == text + " learned1"


# --- training -----------------------------------------------------------------------------------------------------

def _trainer(tmp_path, data, **overrides):
    from biogpt_train.train.trainer import Trainer

    over = {"model": "llama_tiny", **overrides}
    return Trainer(compose(tiny_overrides(data, tmp_path / "runs", **over)), tmp_path / "run", distributed.init("cpu"))


def _pair_data(out: Path, model: Path, n: int = 24) -> Path:
    """A fine-tuning directory in SentencePiece ids: source = some text, target = its first word (+ </s>)."""
    import shutil

    v = TokenizerVocab.load(model)
    out.mkdir(parents=True)
    shutil.copy(model, out / "tokenizer.model")
    words = ["cells", "tumor", "patients", "protein", "blood", "brain"]
    rng = np.random.RandomState(0)
    for split in ("train", "valid"):
        picks = [rng.choice(words, size=rng.randint(3, 8)) for _ in range(n)]
        write_dataset(out / f"{split}.x-y.x", [v.encode(" ".join(p)) + [2] for p in picks], len(v))
        write_dataset(out / f"{split}.x-y.y", [v.encode(f"answer: {p[0]}") + [2] for p in picks], len(v))
    (out / "manifest.json").write_text("{}")
    return out


def test_sft_loss_on_the_answer_only(spm_data, tmp_path):
    """A Llama model on prompt-task data: inputs start with <s>, source targets are pad (not in the loss), the
    answer's are not; the loss falls."""
    data = _pair_data(tmp_path / "pairs", spm_data / "tokenizer.model")
    tr = _trainer(tmp_path, data, **{"task": "pubmedqa", "task.learned_prompt": 0, "task.mask_source_loss": "true",
                                     "task.max_source_positions": 64, "task.max_target_positions": 128,
                                     "trainer.max_update": 8, "optim.lr": 1e-2})
    sample = next(iter(tr.train_itr.next_epoch_itr(shuffle=False)))
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    assert (tokens[:, 0] == 1).all()
    ds = tr.train_itr.dataset
    for row, i in enumerate(sample["id"].tolist()):
        item = ds[i]
        n_ctx, n = item["n_context"], len(item["sentence"])
        assert (target[row, :n_ctx] == 0).all() and (target[row, n_ctx:n] != 0).all()
        assert target[row, n - 1] == 2
    assert sample["ntokens"] == int((target != 0).sum())
    tr.train()
    losses = [m["loss"] for _, m in sorted(read_metrics(tmp_path / "run").items())]
    assert losses[-1] < losses[0] - 1.0


def test_finetune_from_a_local_hf_llama_dir(spm_data, tmp_path):
    """checkpoint.finetune_from=<HF Llama directory> (continue_pretrain_biomedgpt's start): the trainer starts from
    its weights, trains them on SentencePiece data, and its checkpoint says llama + carries tokenizer.model."""
    from biogpt_train.checkpoint.hf_llama import save_hf_llama
    from biogpt_train.models import model_config
    from biogpt_train.models.llama import Llama

    cfg = compose(["model=llama_tiny"])
    torch.manual_seed(3)
    start = Llama(model_config(cfg.model, 1000))
    save_hf_llama(start, tmp_path / "hf")
    tr = _trainer(tmp_path, spm_data, **{"checkpoint.finetune_from": str(tmp_path / "hf"), "trainer.max_update": 2})
    for k, v in start.state_dict().items():
        assert torch.equal(tr.raw_model.state_dict()[k], v), k
    tr.train()
    obj = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert obj["family"] == "llama" and obj["dictionary"] == TokenizerVocab.load(spm_data / "tokenizer.model").symbols
    assert obj["tokenizer_files"]["tokenizer.model"] == (spm_data / "tokenizer.model").read_bytes()


def _logits(model, tokens):
    model.eval()
    with torch.no_grad():
        return model(tokens)


@pytest.mark.slow  # importing peft takes seconds
def test_lora_trains_only_adapters_and_merges(tmp_path):
    """model.lora.rank=8: only lora_A/lora_B change, the loss falls, the checkpoint holds plain Llama weights whose
    logits equal the adapted model's, and merge_and_unload gives the same plain model in memory."""
    from biogpt_train.models.llama import Llama
    from biogpt_train.train.lora import merge_and_unload

    data = make_lm_data(tmp_path / "data")
    tr = _trainer(tmp_path, data, **{"model.lora.rank": 8, "model.lora.alpha": 16, "model.lora.dropout": 0.0,
                                     "model.lora.target_modules": "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
                                                                  "down_proj]",
                                     "trainer.max_update": 20, "optim.lr": 2e-2})
    before = {k: v.clone() for k, v in tr.raw_model.state_dict().items()}
    assert {n for n, p in tr.raw_model.named_parameters() if p.requires_grad} == {k for k in before if ".lora_" in k}
    tr.train()
    after = tr.raw_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    assert any(".lora_B." in k for k in changed)
    losses = [m["loss"] for _, m in sorted(read_metrics(tmp_path / "run").items())]
    assert losses[-1] < losses[0] - 0.5

    tokens = torch.randint(4, 64, (2, 16))
    adapted = _logits(tr.raw_model, tokens)
    obj = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert obj["family"] == "llama" and set(obj["train_state"]["lora"]) == {k for k in before if ".lora_" in k}
    plain = Llama(tr.raw_model.cfg)
    plain.load_state_dict(obj["model"], strict=True)
    torch.testing.assert_close(_logits(plain, tokens), adapted, rtol=1e-5, atol=1e-5)
    merged = merge_and_unload(tr.raw_model)
    assert not any(".lora_" in k or "base_layer" in k for k in merged.state_dict())
    torch.testing.assert_close(_logits(merged, tokens), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lora_resume_repeats_the_uninterrupted_run(tmp_path):
    """Stop after 4 updates, resume to 8: the same losses as 8 updates in one go (the adapters are kept aside in the
    checkpoint and taken out of the merged weights on resume)."""
    data = make_lm_data(tmp_path / "data")
    lora = {"model.lora.rank": 4, "model.lora.dropout": 0.0, "optim.lr": 2e-2}
    one = tmp_path / "one"
    one.mkdir()
    _trainer(one, data, **lora).train()
    two = tmp_path / "two"
    two.mkdir()
    _trainer(two, data, **lora, **{"trainer.max_update": 4}).train()
    resumed = _trainer(two, data, **lora)
    assert resumed.state.num_updates == 4 and not torch.equal(
        resumed.raw_model.model.layers[0].self_attn.q_proj.lora_B.default.weight, torch.zeros(64, 4))
    resumed.train()
    a, b = read_metrics(one / "run"), read_metrics(two / "run")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for u in range(5, 9):
        assert b[u]["loss"] == pytest.approx(a[u]["loss"], rel=1e-5)


# --- the smoke run --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_llama_end_to_end(tmp_path):
    """`python -m biogpt_train +experiment=smoke_llama`: prepares the sample with a SentencePiece model trained on
    it, trains llama_tiny, the loss falls, and the checkpoint says it is a Llama."""
    run_cli(["+experiment=smoke_llama", f"paths.runs={tmp_path}/runs", f"paths.cache={tmp_path}/cache",
             "logging.tensorboard=false"])
    prepared = tmp_path / "cache" / "pubmed_sample_spm1000"
    assert (prepared / "tokenizer.model").exists() and not (prepared / "dict.txt").exists()
    (run_dir,) = (tmp_path / "runs" / "smoke_llama").iterdir()
    train = read_metrics(run_dir)
    assert sorted(train)[-1] == 30 and train[30]["loss"] < train[5]["loss"] - 0.5
    obj = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert obj["family"] == "llama" and obj["model_config"]["vocab_size"] == 1000
    assert obj["dictionary"][:3] == ["<unk>", "<s>", "</s>"]


@pytest.mark.slow
def test_generate_stage_decodes_a_llama_model_from_bos(spm_data, tmp_path):
    """The pipeline's generate stage on a Llama model: prefixes read after <s> (the vocabulary's prefix_token_id),
    the hypotheses decode to text with SentencePiece (no BPE/Moses step), one line per example."""
    from biogpt_train import pipeline

    data = _pair_data(tmp_path / "pairs", spm_data / "tokenizer.model", n=6)
    (data / "valid.pmid").write_text("".join(f"{i}\n" for i in range(6)))
    tr = _trainer(tmp_path, data, **{"task": "pubmedqa", "task.learned_prompt": 0, "task.mask_source_loss": "true",
                                     "task.max_source_positions": 64, "task.max_target_positions": 128,
                                     "trainer.max_update": 2, "generation.subset": "valid",
                                     "generation.checkpoint": "checkpoint_last.pt", "generation.max_len_b": 40})
    tr.train()
    seen = []
    from biogpt_train.generation import generator

    real = generator.generate_nbest
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generator, "generate_nbest", lambda *a, **kw: seen.append(kw.get("bos")) or real(*a, **kw))
        res = pipeline.STAGES["generate"](tr.cfg, tmp_path / "run")
    assert seen and set(seen) == {1}  # <s>
    v = TokenizerVocab.load(spm_data / "tokenizer.model")
    from biogpt_train.data.indexed_dataset import MMapIndexedDataset

    sources = MMapIndexedDataset(data / "valid.x-y.x")
    lines = Path(res["predictions"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    for i, line in enumerate(lines):
        assert line.startswith(v.string(sources[i][:-1]))  # the forced source, decoded by SentencePiece
