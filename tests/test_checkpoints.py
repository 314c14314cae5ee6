"""Checkpoint reading/writing: fairseq checkpoint.pt, HF directories, native .pt; conversions and clear errors."""

import argparse
import json

import pytest
import torch

from biogpt_train.checkpoint import io as ck
from biogpt_train.checkpoint.convert import main as convert_main
from biogpt_train.data.dictionary import Dictionary
from biogpt_train.models.biogpt import ModelConfig, TransformerLM

from conftest import require_shared

WORDS = ["the", "of", ".", ",", "hel@@", "lo", "cell@@", "s", "protein", "gene", "and", "in", "@-@", "&apos;",
         "learned", "ca@@", "ncer", "madeupword0000", "madeupword0001", "madeupword0002"]
BPECODES = "h e 100\nhe l 90\nl o</w> 80\nc e 70\nce l 60\ncel l 50\nt h 40\nth e</w> 30\n"
CFG = ModelConfig(vocab_size=4 + len(WORDS), embed_dim=32, layers=2, heads=2, ffn_dim=48, max_positions=30,
                  dropout=0.2, attention_dropout=0.05, activation_dropout=0.1)


def write_tokenizer_files(folder, words=WORDS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dict.txt").write_text("".join(f"{w} {1000 - i}\n" for i, w in enumerate(words)), encoding="utf-8")
    (folder / "bpecodes").write_text(BPECODES, encoding="utf-8")
    return folder / "dict.txt", folder / "bpecodes"


def random_model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    model = TransformerLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def fairseq_cfg(cfg: ModelConfig, learned_prompt=None):
    """The parts of a fairseq v0.12 cfg dump that matter (reference §1.1, §2.1)."""
    return {
        "common": {"fp16": False},
        "model": {"_name": "transformer_lm_prompt_biogpt", "decoder_embed_dim": cfg.embed_dim,
                  "decoder_layers": cfg.layers, "decoder_attention_heads": cfg.heads,
                  "decoder_ffn_embed_dim": cfg.ffn_dim, "max_target_positions": cfg.max_positions,
                  "dropout": cfg.dropout, "attention_dropout": cfg.attention_dropout,
                  "activation_dropout": cfg.activation_dropout, "share_decoder_input_output_embed": True},
        "task": {"_name": "language_modeling_prompt", "learned_prompt": learned_prompt},
    }


def write_fairseq(path, model, cfg=None, key="cfg"):
    sd = {k: v.clone() for k, v in model.state_dict().items()}  # separate tensors, like a real fairseq file
    obj = {key: cfg if cfg is not None else fairseq_cfg(model.cfg), "model": sd,
           "optimizer_history": [{"num_updates": 7}], "extra_state": {"epoch": 1}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return sd


def assert_same_tensors(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def tokens(vocab_size, n=9):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(4, vocab_size, (2, n), generator=g)
    t[:, 0] = 2
    return t


# --- round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["dict", "omegaconf", "legacy_args"])
def test_fairseq_to_native_is_lossless(tmp_path, flavour):
    model = random_model()
    cfg = fairseq_cfg(CFG)
    key = "cfg"
    if flavour == "omegaconf":
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(cfg)
    elif flavour == "legacy_args":
        cfg, key = argparse.Namespace(**cfg["model"], learned_prompt=None), "args"
    original = write_fairseq(tmp_path / "ft" / "checkpoint.pt", model, cfg, key)
    loaded = ck.read_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    assert loaded.source_format == "fairseq"
    assert loaded.model_config == CFG  # heads=2 and the dropouts come from cfg (shapes alone would say heads=0)
    assert_same_tensors(loaded.state_dict, original)

    write_tokenizer_files(tmp_path / "ft")
    assert convert_main([str(tmp_path / "ft" / "checkpoint.pt"), str(tmp_path / "native.pt")]) == 0
    native = ck.read_checkpoint(tmp_path / "native.pt")
    assert native.source_format == "native" and native.model_config == CFG
    assert_same_tensors(native.state_dict, original)
    assert native.dictionary_symbols == ["<s>", "<pad>", "</s>", "<unk>"] + WORDS
    assert ck.load_dictionary(native).count[4:] == [1000 - i for i in range(len(WORDS))]
    # native files hold only plain containers and tensors: the safe loader reads them
    raw = torch.load(tmp_path / "native.pt", weights_only=True)
    assert raw["format"] == "biogpt_train" and raw["format_version"] == 2 and raw["family"] == "biogpt"
    model_cfg = raw["cfg"] if flavour == "legacy_args" else raw["cfg"]["model"]
    assert model_cfg["decoder_layers"] == 2


def test_fairseq_without_cfg_is_read_from_shapes(tmp_path):
    cfg = ModelConfig(vocab_size=24, embed_dim=128, layers=3, heads=2, ffn_dim=40, max_positions=17)
    model = random_model(cfg)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    loaded = ck.read_checkpoint(tmp_path / "checkpoint.pt")
    # heads cannot be seen in shapes: head_dim 64 is assumed, as in both BioGPT models
    assert loaded.model_config == ModelConfig(24, 128, 3, 2, 40, 17, dropout=0.1, attention_dropout=0.1)
    with pytest.raises(ck.CheckpointError, match="no dictionary inside and no dict.txt beside it"):
        ck.load_dictionary(loaded)


def test_hf_to_native_to_hf_round_trip(transformers, tmp_path):
    model = random_model()
    hf = transformers.BioGptForCausalLM(transformers.BioGptConfig(**{
        k: v for k, v in ck.hf_config(CFG).items() if k not in ("architectures", "model_type")}))
    hf.load_state_dict(ck.fairseq_to_hf_keys(model.state_dict()) | {
        "output_projection.weight": model.decoder.embed_tokens.weight}, strict=True)
    dict_txt, codes = write_tokenizer_files(tmp_path / "tok")
    src = tmp_path / "hf_src"
    hf.save_pretrained(src)
    vocab_file = tmp_path / "tok" / "vocab.json"
    vocab_file.write_text(json.dumps(ck.hf_vocab(Dictionary.load(dict_txt).symbols)), encoding="utf-8")
    transformers.BioGptTokenizer(str(vocab_file), str(codes)).save_pretrained(src)

    assert convert_main([str(src), str(tmp_path / "mid.pt")]) == 0
    assert convert_main([str(tmp_path / "mid.pt"), str(tmp_path / "hf_out"), "--to", "hf",
                         "--bpecodes", str(src / "merges.txt")]) == 0
    back = transformers.BioGptForCausalLM.from_pretrained(tmp_path / "hf_out").eval()
    assert_same_tensors(back.state_dict(), hf.state_dict())
    assert back.output_projection.weight.data_ptr() == back.biogpt.embed_tokens.weight.data_ptr()
    assert json.loads((tmp_path / "hf_out" / "vocab.json").read_text()) == json.loads((src / "vocab.json").read_text())
    tok = transformers.BioGptTokenizer.from_pretrained(tmp_path / "hf_out")
    assert tok.convert_tokens_to_ids(["</s>", "hel", "lo</w>", "protein</w>"]) == [2, 8, 9, 12]
    t = tokens(CFG.vocab_size)
    with torch.no_grad():
        assert torch.equal(back(t).logits, ck.load_pretrained(tmp_path / "mid.pt")(t))


@pytest.mark.parametrize("legacy_args", [False, True])
def test_finetuned_fairseq_with_learned_prompts_exports_to_transformers(transformers, tmp_path, capsys, legacy_args):
    ft_cfg = ModelConfig(**{**CFG.__dict__, "vocab_size": CFG.vocab_size + 9})
    model = random_model(ft_cfg, seed=1)
    folder = tmp_path / "QA-PubMedQA-BioGPT"
    cfg = fairseq_cfg(ft_cfg, learned_prompt=9)
    if legacy_args:  # one flat Namespace; `task` is only the task's name there
        cfg = argparse.Namespace(**cfg["model"], task="language_modeling_prompt", learned_prompt=9)
    write_fairseq(folder / "checkpoint.pt", model, cfg, "args" if legacy_args else "cfg")
    write_tokenizer_files(folder)  # dict.txt has 24 symbols; the 9 learned ones exist only in the weights
    assert convert_main([str(folder / "checkpoint.pt"), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "vocab 33" in out and "wrote HF directory" in out and "learned1..learned9" in out

    hf = transformers.BioGptForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == CFG.vocab_size + 9 == 33
    t = tokens(33)
    with torch.no_grad():
        assert (hf(t).logits - model(t)).abs().max() <= 1e-5
    tok = transformers.BioGptTokenizer.from_pretrained(tmp_path / "hf")
    assert len(tok) == 33
    learned = list(range(24, 33))
    assert tok.convert_ids_to_tokens(learned) == [f"learned{i}</w>" for i in range(1, 10)]
    assert tok.decode([8, 9] + learned[:3]) == "hello learned1 learned2 learned3"


def test_load_pretrained_is_eval_cpu_fp32_and_tied(tmp_path):
    model = random_model()
    half = random_model().half()  # fp16-trained fairseq checkpoints store fp16 weights
    write_fairseq(tmp_path / "checkpoint.pt", half)
    loaded = ck.load_pretrained(tmp_path / "checkpoint.pt")
    assert not loaded.training
    for p in loaded.parameters():
        assert p.device.type == "cpu" and p.dtype == torch.float32
    assert loaded.decoder.output_projection.weight is loaded.decoder.embed_tokens.weight
    assert torch.equal(loaded.decoder.embed_tokens.weight, model.decoder.embed_tokens.weight.half().float())


# --- clear errors --------------------------------------------------------------------------------------------
def test_vocab_mismatch_names_both_numbers_and_files(tmp_path):
    write_fairseq(tmp_path / "ckpt" / "checkpoint.pt", random_model())
    big_dict, _ = write_tokenizer_files(tmp_path / "large", WORDS + [f"w{i}" for i in range(13)])
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_pretrained(tmp_path / "ckpt" / "checkpoint.pt", dictionary=big_dict)
    msg = str(e.value)
    assert "37" in msg and "24" in msg and str(big_dict) in msg and str(tmp_path / "ckpt" / "checkpoint.pt") in msg


def test_vocab_short_by_learned_prompts_gets_a_hint(tmp_path):
    ft = ModelConfig(**{**CFG.__dict__, "vocab_size": CFG.vocab_size + 9})
    with pytest.raises(ck.CheckpointError, match="learned1..learned9"):
        ck.check_vocab(ft, ["<s>", "<pad>", "</s>", "<unk>"] + WORDS, "dict.txt", "checkpoint.pt")


def test_missing_and_unknown_keys_are_listed(tmp_path):
    sd = random_model().state_dict()
    del sd["decoder.layers.1.fc2.bias"]
    sd["decoder.layers.0.self_attn.bias_k"] = torch.zeros(3)
    torch.save({"cfg": fairseq_cfg(CFG), "model": sd}, tmp_path / "checkpoint.pt")
    with pytest.raises(ck.CheckpointError) as e:
        ck.read_checkpoint(tmp_path / "checkpoint.pt")
    msg = str(e.value)
    assert "missing keys (1): decoder.layers.1.fc2.bias" in msg
    assert "unknown keys (1): decoder.layers.0.self_attn.bias_k" in msg


def test_untied_projection_is_refused(tmp_path):
    sd = {k: v.clone() for k, v in random_model().state_dict().items()}
    sd["decoder.output_projection.weight"] += 1
    torch.save({"cfg": fairseq_cfg(CFG), "model": sd}, tmp_path / "checkpoint.pt")
    with pytest.raises(ck.CheckpointError, match="only tied"):
        ck.read_checkpoint(tmp_path / "checkpoint.pt")


def test_garbage_is_none_of_the_formats(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01this is not a checkpoint" * 10)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"state": {}}, tmp_path / "dict.pt")
    (tmp_path / "emptydir").mkdir()
    for name in ("garbage.pt", "list.pt", "dict.pt", "emptydir"):
        with pytest.raises(ck.CheckpointError, match="none of the formats"):
            ck.read_checkpoint(tmp_path / name)
    with pytest.raises(ck.CheckpointError, match="no such file"):
        ck.read_checkpoint(tmp_path / "missing.pt")


def test_weights_without_a_tokenizer_convert_with_a_warning(transformers, tmp_path, caplog):
    """A fairseq checkpoint.pt with nothing beside it, and an HF directory saved with save_pretrained only."""
    model = random_model()
    write_fairseq(tmp_path / "alone" / "checkpoint.pt", model)
    assert convert_main([str(tmp_path / "alone" / "checkpoint.pt"), str(tmp_path / "hf")]) == 0
    assert "weights and config.json only" in caplog.text
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.BioGptForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = torch.tensor([[2, 5, 9, 11, 4]])
    assert torch.allclose(hf(tokens).logits, model(tokens), atol=1e-5)
    # ... and back: HF (no vocab.json) -> native, weights only
    assert convert_main([str(tmp_path / "hf"), str(tmp_path / "n.pt")]) == 0
    loaded = ck.read_checkpoint(tmp_path / "n.pt")
    assert loaded.dictionary_symbols is None and not loaded.tokenizer_files
    assert torch.equal(ck.build_model(loaded)(tokens), model(tokens))
    # --dict/--bpecodes add the tokenizer
    d, codes = write_tokenizer_files(tmp_path / "tok")
    assert convert_main([str(tmp_path / "alone" / "checkpoint.pt"), str(tmp_path / "hf2"), "--dict", str(d),
                         "--bpecodes", str(codes)]) == 0
    assert (tmp_path / "hf2" / "merges.txt").read_bytes() == codes.read_bytes()


def test_hf_vocab_shorter_than_the_embedding_loads_with_named_rows(transformers, tmp_path, caplog):
    """Fine-tuned hub models (BioGPT-Large-PubMedQA) keep the learned prompt rows out of vocab.json."""
    d, codes = write_tokenizer_files(tmp_path / "tok")
    n_learned = 3
    cfg = ModelConfig(**{**CFG.__dict__, "vocab_size": CFG.vocab_size + n_learned})
    model = random_model(cfg)
    ck.export_hf(model, Dictionary.load(d).symbols + [f"learned{i}" for i in range(1, n_learned + 1)], codes,
                 tmp_path / "hf")
    vocab = json.loads((tmp_path / "hf" / "vocab.json").read_text())
    short = {k: v for k, v in vocab.items() if v < CFG.vocab_size}
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(short))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["learned_prompt"] == n_learned
    hf = transformers.BioGptForCausalLM.from_pretrained(tmp_path / "hf").eval()  # transformers loads it
    tokens = torch.tensor([[2, 5, 9, CFG.vocab_size + 1]])
    ours = ck.load_pretrained(tmp_path / "hf")
    assert torch.allclose(ours(tokens), hf(tokens).logits, atol=1e-5)
    loaded = ck.read_checkpoint(tmp_path / "hf")
    assert loaded.dictionary_symbols[-n_learned:] == ["learned1", "learned2", "learned3"]
    assert "naming the extra rows learned1..learned3" in caplog.text
    # without the config's say-so the rows get fairseq's placeholder names
    del config["learned_prompt"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert ck.read_checkpoint(tmp_path / "hf").dictionary_symbols[-1] == "madeupword0002"
    assert convert_main([str(tmp_path / "hf"), str(tmp_path / "n.pt")]) == 0  # convert works too


def test_native_checkpoints_carry_the_bpe_codes_and_round_trip_hf_byte_for_byte(transformers, tmp_path):
    d, codes = write_tokenizer_files(tmp_path / "tok")
    model = random_model()
    ck.export_hf(model, d, codes, tmp_path / "hf")
    vocab_bytes = b'{"<s>": 0, ' + (tmp_path / "hf" / "vocab.json").read_bytes()[len(b'{\n"<s>": 0,\n'):]
    (tmp_path / "hf" / "vocab.json").write_bytes(vocab_bytes)  # a hub file formatted differently from ours
    assert convert_main([str(tmp_path / "hf"), str(tmp_path / "n.pt")]) == 0
    assert set(ck.read_checkpoint(tmp_path / "n.pt").tokenizer_files) == {"vocab.json", "merges.txt"}
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "n.pt"
    (tmp_path / "n.pt").rename(moved)  # nothing beside it: native -> HF needs no extra files
    assert convert_main([str(moved), str(tmp_path / "hf2")]) == 0
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "hf2" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes(), name
    tok = transformers.BioGptTokenizer.from_pretrained(tmp_path / "hf2")
    assert tok.convert_tokens_to_ids("protein</w>") == Dictionary.load(d).index("protein")


def test_llama_and_encoder_checkpoints_load_and_convert(transformers, tmp_path):
    """load_pretrained / convert detect the family from config.json (HF) or the native file."""
    from biogpt_train.checkpoint.hf_encoder import save_hf_encoder
    from biogpt_train.checkpoint.hf_llama import save_hf_llama
    from biogpt_train.models import build_model, family_of
    from biogpt_train.models.presets import get_preset

    torch.manual_seed(0)
    llama = build_model("llama", get_preset("llama_tiny", vocab_size=50)).eval()
    save_hf_llama(llama, tmp_path / "llama")
    enc = build_model("electra", get_preset("electra_tiny", vocab_size=60), head="qa").eval()
    save_hf_encoder(enc, tmp_path / "enc")
    tokens = torch.tensor([[1, 5, 9, 11]])
    for name, ref in (("llama", llama), ("enc", enc)):
        ours = ck.load_pretrained(tmp_path / name)
        assert family_of(ours) == family_of(ref) and type(ours) is type(ref)
        out, want = ours(tokens), ref(tokens)
        for a, b in zip(out if isinstance(out, tuple) else [out], want if isinstance(want, tuple) else [want]):
            assert torch.equal(a, b)
        assert convert_main([str(tmp_path / name), str(tmp_path / f"{name}.pt")]) == 0
        native = ck.read_checkpoint(tmp_path / f"{name}.pt")
        assert native.family == family_of(ref) and native.source_format == "native"
        assert convert_main([str(tmp_path / f"{name}.pt"), str(tmp_path / f"{name}_hf")]) == 0
        again = ck.load_pretrained(tmp_path / f"{name}_hf")
        for k, v in ref.state_dict().items():
            assert torch.equal(again.state_dict()[k], v), k
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "llama_hf").eval()
    assert torch.allclose(hf(tokens).logits, llama(tokens), atol=1e-5)
    hf = transformers.ElectraForQuestionAnswering.from_pretrained(tmp_path / "enc_hf").eval()
    assert torch.allclose(hf(tokens).start_logits, enc(tokens)[0], atol=1e-5)


def test_config_that_does_not_match_the_weights_names_the_tensor(tmp_path):
    from biogpt_train.checkpoint.hf_llama import save_hf_llama
    from biogpt_train.models import build_model
    from biogpt_train.models.presets import get_preset

    save_hf_llama(build_model("llama", get_preset("llama_tiny", vocab_size=50)), tmp_path / "llama")
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    config["intermediate_size"] += 8
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight.*shape"):
        ck.load_pretrained(tmp_path / "llama")


def test_hf_vocab_rules_and_inverse():
    symbols = ["<s>", "<pad>", "</s>", "<unk>", ".", "hel@@", "lo", "learned1"]
    vocab = ck.hf_vocab(symbols)
    assert vocab == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, ".</w>": 4, "hel": 5, "lo</w>": 6,
                     "learned1</w>": 7}
    assert ck.symbols_from_hf_vocab(vocab, "vocab.json") == symbols
    with pytest.raises(ck.CheckpointError, match="both map to HF vocab key"):
        ck.hf_vocab(symbols + ["lo</w>@@"])


# --- the real BioGPT vocabulary ------------------------------------------------------------------------------
SENTENCES = [
    "Aspirin-induced asthma is a well-known adverse reaction in COVID-19 patients (n = 12).",
    "The BRCA1 gene's product interacts with p53; IL-6 levels were > 5 pg/mL.",
    "We learned1 nothing about TNF-alpha & its \"receptor\" [sic] ... in 2021.",
]


@pytest.mark.shared_data
def test_exported_vocab_gives_fairseq_ids_on_real_biogpt_files(transformers, tmp_path):
    dict_txt = require_shared("tokenizer", "BioGPT", "dict.txt")
    codes = require_shared("tokenizer", "BioGPT", "bpecodes")
    fastBPE = pytest.importorskip("fastBPE")
    sacremoses = pytest.importorskip("sacremoses")
    d = Dictionary.load(dict_txt)
    assert len(d) == 42384
    d.encode_line(" ".join(f"learned{i}" for i in range(1, 10)), append_eos=False, add_if_not_exist=True)
    model = TransformerLM(ModelConfig(vocab_size=len(d), embed_dim=8, layers=1, heads=1, ffn_dim=8, max_positions=8))
    ck.export_hf(model, d, codes, tmp_path / "hf")
    assert (tmp_path / "hf" / "merges.txt").read_bytes() == codes.read_bytes()
    tok = transformers.BioGptTokenizer.from_pretrained(tmp_path / "hf")
    assert len(tok) == 42393 and tok.convert_ids_to_tokens(42384) == "learned1</w>"

    # the fairseq pipeline (reference §3): Moses (aggressive dashes, escape) -> fastBPE -> dict.txt ids
    moses = sacremoses.MosesTokenizer(lang="en")
    bpe = fastBPE.fastBPE(str(codes))
    for text in SENTENCES:
        moses_text = moses.tokenize(text, aggressive_dash_splits=True, return_str=True, escape=True)
        fairseq_ids = d.encode_line(bpe.apply([moses_text])[0], append_eos=False)
        assert 3 not in fairseq_ids, text
        assert tok(text)["input_ids"] == [2] + fairseq_ids, text
    assert tok.decode(list(range(42384, 42387))) == "learned1 learned2 learned3"
