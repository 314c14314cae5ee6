"""The documented public API, for every family: biogpt_train.load_pretrained / load_tokenizer / loglikelihood /
generation.generate, on random weights and tokenizers trained in the test (the real ones are not in the repo)."""

from __future__ import annotations

import torch
import pytest

import biogpt_train
from biogpt_train.checkpoint.io import save_native

TEXTS = ["Aspirin inhibits COX-1 and COX-2 in platelets.", "The BRCA1 gene is mutated in 5% of breast cancers.",
         "Metformin lowers hepatic glucose output; its effect on AMPK is debated."] * 20


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    from biogpt_train.data.sentencepiece_tokenizer import train_sentencepiece

    folder = tmp_path_factory.mktemp("sp")
    return train_sentencepiece(iter(TEXTS), folder / "tokenizer", vocab_size=400)


@pytest.fixture(scope="module")
def wp_vocab(tmp_path_factory):
    from biogpt_train.data.wordpiece import train_wordpiece

    return train_wordpiece(iter(TEXTS), tmp_path_factory.mktemp("wp"), vocab_size=150, min_frequency=1)


def test_public_names_exist():
    for name in ("load_pretrained", "load_tokenizer", "loglikelihood", "Tokenizer"):
        assert callable(getattr(biogpt_train, name))
    from biogpt_train import generation

    assert callable(generation.generate)


def test_load_tokenizer_finds_every_kind(sp_model, wp_vocab, tmp_path):
    from biogpt_train.data.sentencepiece_tokenizer import SentencePieceTokenizer
    from biogpt_train.data.wordpiece import WordPieceTokenizer

    sp = biogpt_train.load_tokenizer(sp_model)
    assert isinstance(sp, SentencePieceTokenizer) and sp.prefix_token_id == 1
    assert isinstance(biogpt_train.load_tokenizer(sp_model.parent), SentencePieceTokenizer)
    wp = biogpt_train.load_tokenizer(wp_vocab)
    assert isinstance(wp, WordPieceTokenizer) and wp.encode("aspirin")[0] not in (wp.cls_id, wp.sep_id)
    assert isinstance(biogpt_train.load_tokenizer(wp_vocab.parent), WordPieceTokenizer)
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        biogpt_train.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        biogpt_train.load_tokenizer(tmp_path / "missing")


def test_load_tokenizer_bpe_from_folder_and_from_a_self_contained_checkpoint(tmp_path):
    from conftest import require_shared

    d = require_shared("tokenizer", "BioGPT", "dict.txt")
    codes = d.parent / "bpecodes"
    tok = biogpt_train.load_tokenizer(d.parent)
    ref = biogpt_train.Tokenizer.from_files(d, codes)
    assert tok.encode(TEXTS[0]) == ref.encode(TEXTS[0]) and tok.prefix_token_id == 2
    assert biogpt_train.load_tokenizer(d).encode(TEXTS[1]) == ref.encode(TEXTS[1])
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    model = TransformerLM(ModelConfig(vocab_size=len(ref.dictionary), embed_dim=8, layers=1, heads=2, ffn_dim=8,
                                      max_positions=16))
    save_native(tmp_path / "m.pt", model, ref.dictionary, tokenizer_files={"bpecodes": codes.read_bytes()})
    assert biogpt_train.load_tokenizer(tmp_path / "m.pt").encode(TEXTS[2]) == ref.encode(TEXTS[2])


def test_loglikelihood_of_a_llama_model_equals_transformers(sp_model, tmp_path):
    """Harness semantics for a Llama-family model: [<s>] + encode(context + continuation), summed log-probs."""
    transformers = pytest.importorskip("transformers")
    from biogpt_train.checkpoint.hf_llama import save_hf_llama
    from biogpt_train.models import build_model
    from biogpt_train.models.presets import get_preset

    tok = biogpt_train.load_tokenizer(sp_model)
    torch.manual_seed(0)
    save_hf_llama(build_model("llama", get_preset("llama_tiny", vocab_size=len(tok))), tmp_path / "hf",
                  tokenizer_model=sp_model)
    model = biogpt_train.load_pretrained(tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    requests = [("Aspirin inhibits", " COX-1"), ("The BRCA1 gene is", " mutated in 5%"), ("Metformin", " lowers")]
    got = biogpt_train.loglikelihood(model, tok, requests, batch_size=2)
    for (ctx, cont), (logp, _) in zip(requests, got):
        whole, ctx_ids = tok.encode(ctx + cont), tok.encode(ctx)
        ids = torch.tensor([[1] + whole])
        with torch.no_grad():
            lp = torch.log_softmax(hf(ids).logits.float(), -1)[0]
        n = len(whole) - len(ctx_ids)
        want = sum(lp[len(ctx_ids) + i, whole[len(ctx_ids) + i]].item() for i in range(n))
        assert abs(logp - want) < 1e-4


def test_load_pretrained_native_llama_keeps_its_tokenizer(sp_model, tmp_path):
    from biogpt_train.models import build_model
    from biogpt_train.models.presets import get_preset

    model = build_model("llama", get_preset("llama_tiny", vocab_size=400)).eval()
    save_native(tmp_path / "l.pt", model, tokenizer_files={"tokenizer.model": sp_model.read_bytes()})
    again = biogpt_train.load_pretrained(tmp_path / "l.pt")
    tokens = torch.tensor([[1, 7, 9]])
    assert torch.equal(again(tokens), model(tokens))
    assert biogpt_train.load_tokenizer(tmp_path / "l.pt").encode(TEXTS[0]) == \
        biogpt_train.load_tokenizer(sp_model).encode(TEXTS[0])


def test_a_tokenizer_larger_than_the_embedding_is_a_clear_error(sp_model):
    from biogpt_train.models import build_model
    from biogpt_train.models.presets import get_preset

    tok = biogpt_train.load_tokenizer(sp_model)
    model = build_model("llama", get_preset("llama_tiny", vocab_size=len(tok) - 10)).eval()
    with pytest.raises(ValueError, match=r"tokenizer has 400 entries but the model's embedding has only 390 rows"):
        biogpt_train.loglikelihood(model, tok, [("a", " b")])
