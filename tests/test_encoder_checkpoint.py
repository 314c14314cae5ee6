"""transformers ELECTRA/BERT directories -> our models -> transformers directories, losslessly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from biogpt_train.checkpoint.hf_encoder import (EncoderCheckpointError, is_hf_encoder_dir, load_hf_encoder,
                                                read_hf_encoder_config, read_state_dict, save_hf_encoder)
from biogpt_train.models.electra import ElectraDiscriminator, ElectraGenerator, QAModel, SequenceClassifier
from tests.test_electra_model import HF_CLASSES, hf_model, padded_batch, tiny_cfg

OUR_CLASS = {"qa": QAModel, "rtd": ElectraDiscriminator, "mlm": ElectraGenerator, "cls": SequenceClassifier}
# config.json keys that change what a model computes or how transformers builds it
KEYS_THAT_MATTER = ("architectures", "model_type", "vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                    "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
                    "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
                    "pad_token_id", "position_embedding_type", "initializer_range", "id2label", "label2id")


def write_vocab(path, n):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(n - 5)]
    path.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return path


def outputs(model, head, ids, am, tt, hf: bool):
    with torch.no_grad():
        if hf:
            out = model(input_ids=ids, attention_mask=am, token_type_ids=tt)
            return [out.start_logits, out.end_logits] if head == "qa" else [out.logits]
        out = model(ids, am, tt)
        return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("style,head", sorted(HF_CLASSES))
def test_hf_to_ours_to_hf_is_lossless(style, head, tmp_path, single_torch_thread):
    import transformers

    cfg = tiny_cfg(style)
    ref = hf_model(cfg, head)
    src, dst = tmp_path / "hf", tmp_path / "ours"
    ref.save_pretrained(src)
    write_vocab(src / "vocab.txt", cfg.vocab_size)
    assert is_hf_encoder_dir(src)

    model = load_hf_encoder(src).eval()
    assert type(model) is OUR_CLASS[head]
    ids, am, tt = padded_batch(cfg.vocab_size)
    for w, g in zip(outputs(ref, head, ids, am, tt, True), outputs(model, head, ids, am, tt, False)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)

    save_hf_encoder(model, dst, tokenizer_dir=src)
    assert (dst / "vocab.txt").read_bytes() == (src / "vocab.txt").read_bytes()
    a, b = load_file(str(src / "model.safetensors")), load_file(str(dst / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:  # byte-equal tensors
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (src, dst))
    for k in KEYS_THAT_MATTER:
        assert ca.get(k) == cb.get(k), k

    back = getattr(transformers, HF_CLASSES[(style, head)]).from_pretrained(dst, attn_implementation="eager").eval()
    for w, g in zip(outputs(ref, head, ids, am, tt, True), outputs(back, head, ids, am, tt, True)):
        assert torch.equal(w, g)


def test_generator_tie_survives_loading(tmp_path):
    ref = hf_model(tiny_cfg(), "mlm")
    ref.save_pretrained(tmp_path)
    assert "generator_lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))  # transformers drops it
    gen = load_hf_encoder(tmp_path)
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight
    assert json.loads((save_hf_encoder(gen, tmp_path / "out") / "config.json").read_text())["tie_word_embeddings"]


def test_pytorch_model_bin_with_legacy_position_ids(tmp_path, single_torch_thread):
    cfg = tiny_cfg()
    ref = hf_model(cfg, "qa")
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    sd = dict(ref.state_dict())
    sd["electra.embeddings.position_ids"] = torch.arange(cfg.max_positions)[None]  # what 2021 checkpoints carry
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = load_hf_encoder(tmp_path).eval()
    ids, am, tt = padded_batch(cfg.vocab_size)
    torch.testing.assert_close(outputs(model, "qa", ids, am, tt, False)[0],
                               outputs(ref, "qa", ids, am, tt, True)[0], atol=1e-5, rtol=1e-5)
    save_hf_encoder(model, tmp_path / "bin", safe_serialization=False)
    again = read_state_dict(tmp_path / "bin")
    assert all(torch.equal(again[k], v) for k, v in ref.state_dict().items())


def test_new_head_on_a_pretrained_discriminator(tmp_path):
    """Fine-tuning start: ElectraForPreTraining weights into a QA model (body kept, RTD head dropped, QA head new)."""
    ref = hf_model(tiny_cfg(), "rtd")
    ref.save_pretrained(tmp_path)
    info = read_hf_encoder_config(tmp_path)
    assert (info.head, info.architecture) == ("rtd", "ElectraForPreTraining")
    qa = load_hf_encoder(tmp_path, head="qa")
    assert type(qa) is QAModel
    body = {k: v for k, v in ref.state_dict().items() if k.startswith("electra.")}
    assert all(torch.equal(qa.state_dict()[k], v) for k, v in body.items())
    assert torch.equal(qa.qa_outputs.bias, torch.zeros(2)) and qa.qa_outputs.weight.std() < 0.05
    cls = load_hf_encoder(tmp_path, head="cls", num_labels=5)
    assert cls.classifier.out_proj.weight.shape == (5, 32)
    saved = json.loads((save_hf_encoder(cls, tmp_path / "cls") / "config.json").read_text())
    assert saved["id2label"]["4"] == "LABEL_4"


def test_errors_name_the_problem(tmp_path):
    cfg = tiny_cfg()
    hf_model(cfg, "qa").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())

    bad = tmp_path / "bad_shape"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes())
    (bad / "config.json").write_text(json.dumps({**config, "vocab_size": 120}))
    shape_msg = r"'electra\.embeddings\.word_embeddings\.weight' has shape \(97, 24\) in the checkpoint but config"
    with pytest.raises(EncoderCheckpointError, match=shape_msg + r"\.json gives \(120, 24\)"):
        load_hf_encoder(bad)

    write_vocab(tmp_path / "vocab.txt", cfg.vocab_size + 3)
    with pytest.raises(EncoderCheckpointError, match="100 tokens but the word embedding has 97 rows"):
        load_hf_encoder(tmp_path)
    model = load_hf_encoder(tmp_path, check_vocab_file=False)
    with pytest.raises(EncoderCheckpointError, match="100 tokens"):
        save_hf_encoder(model, tmp_path / "out", tokenizer_dir=tmp_path)
    assert not (tmp_path / "out").exists()  # checked before anything is written

    wrong_arch = tmp_path / "wrong_arch"
    wrong_arch.mkdir()
    (wrong_arch / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes())
    (wrong_arch / "config.json").write_text(json.dumps({**config, "architectures": ["ElectraModel"]}))
    with pytest.raises(EncoderCheckpointError, match="pass head="):
        load_hf_encoder(wrong_arch)
    (wrong_arch / "config.json").write_text(json.dumps({**config, "architectures": ["ElectraForPreTraining"]}))
    with pytest.raises(EncoderCheckpointError, match="unexpected tensors.*qa_outputs"):
        load_hf_encoder(wrong_arch)

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not is_hf_encoder_dir(llama) and not is_hf_encoder_dir(tmp_path / "nowhere")
    with pytest.raises(EncoderCheckpointError, match="model_type 'llama'"):
        read_hf_encoder_config(llama)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        read_state_dict(llama)
    with pytest.raises(EncoderCheckpointError, match="head 'mlm' is not available for model_type 'bert'"):
        hf_model(tiny_cfg("bert"), "qa").save_pretrained(tmp_path / "bert")
        load_hf_encoder(tmp_path / "bert", head="mlm")


def test_pretraining_pair_exports_both_halves(tmp_path, single_torch_thread):
    import transformers

    from biogpt_train.models.electra_pretraining import ElectraPretraining

    torch.manual_seed(0)
    pair = ElectraPretraining(tiny_cfg(), mask_id=4, generator_size=0.5).eval()
    ids, am, tt = padded_batch(97)
    for half, name, hf_cls in ((pair.discriminator, "disc", "ElectraForPreTraining"),
                               (pair.generator, "gen", "ElectraForMaskedLM")):
        save_hf_encoder(half, tmp_path / name)
        ref = getattr(transformers, hf_cls).from_pretrained(tmp_path / name, attn_implementation="eager").eval()
        keep = am.bool()
        torch.testing.assert_close(outputs(half, "x", ids, am, tt, False)[0][keep],
                                   outputs(ref, "x", ids, am, tt, True)[0][keep], atol=1e-5, rtol=1e-5)
    gen_cfg = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert (gen_cfg["hidden_size"], gen_cfg["embedding_size"], gen_cfg["num_attention_heads"]) == (16, 24, 1)
