"""Hugging Face Llama directories: HF -> ours -> HF round trips (safetensors/.bin, sharded or not), errors."""

from __future__ import annotations

import json

import pytest
import torch

from biogpt_train.checkpoint.hf_llama import (
    HFLlamaError, is_hf_llama_dir, load_hf_llama, read_hf_llama_config, save_hf_llama, weight_files,
)
from biogpt_train.models.llama import Llama, LlamaConfig

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: threads only contend

CFG = LlamaConfig(vocab_size=67, embed_dim=32, layers=2, heads=4, kv_heads=2, ffn_dim=48, max_positions=40,
                  norm_eps=1e-6, rope_theta=5000.0)
TOKENS = torch.tensor([[1, 5, 9, 30, 2, 44, 66], [1, 3, 3, 8, 12, 0, 7]])


def hf_model(cfg=CFG, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    hc = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.ffn_dim,
        max_position_embeddings=cfg.max_positions, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings, pad_token_id=0)
    model = transformers.LlamaForCausalLM(hc).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.to(dtype)


def write_bin(hf, out, shards: int):
    """What transformers 4.x save_pretrained(safe_serialization=False) writes (5.x only writes safetensors)."""
    hf.config.save_pretrained(out)
    sd = {k: v.clone() for k, v in hf.state_dict().items()}
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(CFG.embed_dim // CFG.heads // 2)  # transformers<4.31
    if shards == 1:
        torch.save(sd, out / "pytorch_model.bin")
        return
    names = list(sd)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        torch.save({k: sd[k] for k in part}, out / fname)
        weight_map.update(dict.fromkeys(part, fname))
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def assert_same_tensors(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("fmt", ["safetensors", "safetensors-sharded", "bin", "bin-sharded"])
def test_hf_to_ours_to_hf_is_lossless(tmp_path, fmt):
    hf = hf_model()
    src = tmp_path / "hf"
    if fmt.startswith("safetensors"):
        hf.save_pretrained(src, max_shard_size=20_000 if fmt.endswith("sharded") else "1GB")
    else:
        src.mkdir()
        write_bin(hf, src, shards=3 if fmt.endswith("sharded") else 1)
    assert (len(weight_files(src)) > 1) == fmt.endswith("sharded")
    assert is_hf_llama_dir(src)
    reference = transformers.LlamaForCausalLM.from_pretrained(src).eval()  # our .bin fixture is real for HF

    ours = load_hf_llama(src)
    assert ours.cfg == CFG
    assert_same_tensors(ours.state_dict(), hf.state_dict())
    with torch.no_grad():
        want = reference(TOKENS).logits
        assert (ours(TOKENS) - want).abs().max().item() <= 1e-5

    out = save_hf_llama(ours, tmp_path / "back", max_shard_bytes=30_000)
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").exists()
    back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    assert_same_tensors(back.state_dict(), hf.state_dict())
    with torch.no_grad():
        assert torch.equal(back(TOKENS).logits, want)
    assert_same_tensors(load_hf_llama(out).state_dict(), hf.state_dict())


def test_ours_to_hf_unsharded_config_and_dtype(tmp_path):
    torch.manual_seed(1)
    ours = Llama(CFG).to(torch.bfloat16)
    out = save_hf_llama(ours, tmp_path / "m", tokenizer_model=None)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["num_hidden_layers"], config["vocab_size"]) == (32, 48, 4, 2, 2, 67)
    assert config["torch_dtype"] == "bfloat16" and config["bos_token_id"] == 1 and config["eos_token_id"] == 2
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert hf.config.rope_parameters["rope_theta"] == 5000.0 and hf.config.rms_norm_eps == 1e-6
    assert_same_tensors(hf.state_dict(), ours.state_dict())
    assert read_hf_llama_config(out) == CFG
    loaded = load_hf_llama(out)
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert load_hf_llama(out, dtype=torch.float32).lm_head.weight.dtype == torch.float32
    assert not loaded.training


def test_tied_embeddings_round_trip(tmp_path):
    cfg = LlamaConfig(**{**CFG.__dict__, "tie_embeddings": True})
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_llama(tmp_path / "hf")
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    save_hf_llama(ours, tmp_path / "back")
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.equal(back(TOKENS).logits, hf(TOKENS).logits)


def test_load_builds_on_meta(tmp_path, monkeypatch):
    """The model is never materialised with random weights: it is built on meta and filled by assignment."""
    hf_model().save_pretrained(tmp_path / "hf", max_shard_size=20_000)
    devices = []
    original = Llama.reset_parameters
    monkeypatch.setattr(Llama, "reset_parameters",
                        lambda self: (devices.append(self.lm_head.weight.device.type), original(self))[1])
    model = load_hf_llama(tmp_path / "hf")
    assert devices == ["meta"]
    assert not any(p.is_meta for p in model.parameters())


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    ours = Llama(CFG)
    out = save_hf_llama(ours, tmp_path / "m")
    with pytest.raises(HFLlamaError, match="already exists; pass overwrite=True"):
        save_hf_llama(ours, out)
    (out / "tokenizer.model").write_bytes(b"x")
    save_hf_llama(ours, out, overwrite=True, max_shard_bytes=30_000)
    assert not (out / "model.safetensors").exists() and (out / "model.safetensors.index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


# --- errors --------------------------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    hf_model().save_pretrained(tmp_path / "hf", max_shard_size=20_000)
    return tmp_path / "hf"


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_error_shape_mismatch_names_tensor_and_shapes(saved):
    edit_config(saved, intermediate_size=50)
    with pytest.raises(HFLlamaError, match=r"tensor model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight in .* has "
                                           r"shape \((48, 32|32, 48)\), the config .* needs \((50, 32|32, 50)\)"):
        load_hf_llama(saved)


def test_error_missing_shard_names_it_and_the_index(saved):
    shard = sorted(saved.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(HFLlamaError, match=f"shard {shard.name} listed in .*model.safetensors.index.json is missing"):
        load_hf_llama(saved)


def test_error_unexpected_and_missing_tensors(tmp_path):
    from safetensors.torch import save_file

    hf = hf_model()
    hf.save_pretrained(tmp_path / "a")
    sd = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file({**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}, tmp_path / "a" / "model.safetensors")
    with pytest.raises(HFLlamaError, match=r"unexpected tensor model\.layers\.0\.self_attn\.q_proj\.bias in"):
        load_hf_llama(tmp_path / "a")
    del sd["model.norm.weight"], sd["lm_head.weight"]
    save_file(sd, tmp_path / "a" / "model.safetensors")
    with pytest.raises(HFLlamaError, match=r"lacks tensors model\.norm\.weight, lm_head\.weight"):
        load_hf_llama(tmp_path / "a")


def test_error_not_llama_or_no_weights(tmp_path, saved):
    assert not is_hf_llama_dir(tmp_path) and not is_hf_llama_dir(tmp_path / "nowhere")
    with pytest.raises(HFLlamaError, match="has no config.json"):
        load_hf_llama(tmp_path)
    edit_config(saved, model_type="gpt2")
    assert not is_hf_llama_dir(saved)
    with pytest.raises(HFLlamaError, match="model_type 'gpt2', expected 'llama'"):
        read_hf_llama_config(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((saved / "config.json").read_text().replace('"gpt2"', '"llama"'))
    with pytest.raises(HFLlamaError, match="has no weights"):
        load_hf_llama(empty)


def test_error_unsupported_variants(saved):
    edit_config(saved, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(HFLlamaError, match="RoPE scaling .* is not supported"):
        read_hf_llama_config(saved)
    edit_config(saved, rope_parameters=None, rope_theta=10000.0, attention_bias=True)
    with pytest.raises(HFLlamaError, match="attention_bias=True is not supported"):
        read_hf_llama_config(saved)


def test_transformers_4_style_config(saved):
    """A 4.x config.json: top-level rope_theta, no rope_parameters, no num_key_value_heads (MHA)."""
    cfg = json.loads((saved / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.pop("num_key_value_heads")
    cfg.update(rope_theta=250.0, rope_scaling=None, torch_dtype="float16")
    (saved / "config.json").write_text(json.dumps(cfg))
    got = read_hf_llama_config(saved)
    assert got.rope_theta == 250.0 and got.kv_heads == got.heads == 4


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_error_damaged_weight_file(saved, name):
    for f in saved.glob("model*"):
        f.unlink()
    (saved / name).write_bytes(b"not weights at all")
    with pytest.raises(HFLlamaError, match=f"{name} is not a readable"):
        load_hf_llama(saved)
