"""Read and write Hugging Face Llama directories (`LlamaForCausalLM`): config.json plus weights.

Weights may be one `model.safetensors`, sharded `model-0000k-of-0000n.safetensors` with
`model.safetensors.index.json`, sharded `pytorch_model-0000k-of-0000n.bin` with `pytorch_model.bin.index.json`,
or one `pytorch_model.bin`. Our parameter names are HF's, so no key mapping is needed.

Loading builds the model on the meta device and fills it shard by shard with `load_state_dict(assign=True)`:
at any time memory holds the tensors loaded so far plus one shard, never two copies of a 7B model.
Saving writes safetensors (sharded, with an index, above `max_shard_bytes`) into a temporary directory that is
renamed onto the destination when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch

from biogpt_train.models.llama import Llama, LlamaConfig

PathLike = Union[str, os.PathLike]

SAFETENSORS_SINGLE, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_SINGLE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Older transformers (< 4.31) saved the rotary inverse frequencies as a buffer; we recompute them.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class HFLlamaError(ValueError):
    """A Hugging Face Llama directory that cannot be read as asked (the message names the file or tensor)."""


# --- detection and config ------------------------------------------------------------------------------------
def is_hf_llama_dir(path: PathLike) -> bool:
    """True if `path` is a directory whose config.json says model_type "llama"."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "llama"
    except (ValueError, OSError, AttributeError):
        return False


def _read_config_json(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise HFLlamaError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise HFLlamaError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "llama":
        got = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise HFLlamaError(f"{cfg_path} has model_type {got!r}, expected 'llama'")
    return cfg


def _rope_theta(cfg: dict, cfg_path: Path) -> float:
    """rope_theta from a transformers 4.x (`rope_theta`, `rope_scaling`) or 5.x (`rope_parameters`) config."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling")
    rope_type = params.get("rope_type", "default")
    if scaling or rope_type != "default":
        raise HFLlamaError(f"{cfg_path}: RoPE scaling ({scaling or rope_type}) is not supported; only plain RoPE")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def read_hf_llama_config(path: PathLike) -> LlamaConfig:
    """The LlamaConfig of an HF Llama directory; unsupported variants (biases, RoPE scaling, ...) are errors."""
    path = Path(path)
    cfg = _read_config_json(path)
    cfg_path = path / "config.json"
    for key, ok in (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu"), ("pretraining_tp", 1)):
        if key in cfg and cfg[key] is not None and cfg[key] != ok:
            raise HFLlamaError(f"{cfg_path}: {key}={cfg[key]!r} is not supported (only {ok!r})")
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim")
        if head_dim is not None and int(head_dim) != hidden // heads:
            raise HFLlamaError(f"{cfg_path}: head_dim {head_dim} != hidden_size / num_attention_heads; not supported")
        return LlamaConfig(
            vocab_size=int(cfg["vocab_size"]),
            embed_dim=hidden,
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            ffn_dim=int(cfg["intermediate_size"]),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=_rope_theta(cfg, cfg_path),
            attention_dropout=float(cfg.get("attention_dropout") or 0.0),
            pad_id=cfg.get("pad_token_id"),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            initializer_range=float(cfg.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise HFLlamaError(f"{cfg_path} lacks the key {e.args[0]!r}") from None


# --- reading weights -----------------------------------------------------------------------------------------
def weight_files(path: PathLike) -> List[Path]:
    """The weight files of an HF directory, in load order (safetensors preferred over .bin)."""
    path = Path(path)
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise HFLlamaError(f"{index} is not a weight index (no 'weight_map')") from None
            files = [path / name for name in dict.fromkeys(weight_map.values())]  # unique, first-seen order
            for f in files:
                if not f.is_file():
                    raise HFLlamaError(f"shard {f.name} listed in {index} is missing")
            return sorted(files)
    for single in (SAFETENSORS_SINGLE, BIN_SINGLE):
        if (path / single).is_file():
            return [path / single]
    raise HFLlamaError(f"{path} has no weights ({SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, {BIN_SINGLE} or "
                       f"{BIN_INDEX})")


def read_shard(file: Path) -> Dict[str, torch.Tensor]:
    """One weight file as a CPU state dict (.bin memory-mapped when its format allows, never unpickling code)."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(file, device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise HFLlamaError(f"{file} is not a readable safetensors file: {e}") from None
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch.save format cannot be memory-mapped
        pass
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of a damaged or foreign file
        raise HFLlamaError(f"{file} is not a readable PyTorch weight file: {e}") from None


def iter_hf_state_dict(path: PathLike) -> Iterator[Tuple[Path, Dict[str, torch.Tensor]]]:
    """(file, state dict) per weight file of an HF directory."""
    for f in weight_files(path):
        yield f, read_shard(f)


def load_hf_llama(path: PathLike, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device] = "cpu"
                  ) -> Llama:
    """An HF Llama directory as our `Llama` (eval mode). `dtype=None` keeps the stored dtype."""
    path = Path(path)
    cfg = read_hf_llama_config(path)
    with torch.device("meta"):
        model = Llama(cfg)
    expected = model.state_dict()
    loaded = set()
    for file, shard in iter_hf_state_dict(path):
        for name in [n for n in shard if n.endswith(IGNORED_SUFFIXES)]:
            del shard[name]
        for name, tensor in shard.items():
            if name not in expected:
                raise HFLlamaError(f"unexpected tensor {name} in {file} (not a LlamaForCausalLM parameter)")
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise HFLlamaError(f"tensor {name} in {file} has shape {tuple(tensor.shape)}, the config "
                                   f"({path / 'config.json'}) needs {tuple(expected[name].shape)}")
            if name in loaded:
                raise HFLlamaError(f"tensor {name} appears twice (again in {file})")
            shard[name] = tensor.to(device=device, dtype=dtype if dtype is not None and tensor.is_floating_point()
                                    else tensor.dtype)
        model.load_state_dict(shard, strict=False, assign=True)
        loaded.update(shard)
        del shard
    if cfg.tie_embeddings:
        # HF omits lm_head.weight when tied (or stores a copy): either way the head is the embedding
        model.lm_head.weight = model.model.embed_tokens.weight
        loaded.add("lm_head.weight")
    missing = [n for n in expected if n not in loaded]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise HFLlamaError(f"{path} lacks tensors {', '.join(missing[:3])}{more}")
    return model.eval()


# --- writing -------------------------------------------------------------------------------------------------
def hf_config_dict(cfg: LlamaConfig, dtype: torch.dtype, bos_id: int = 1, eos_id: int = 2) -> dict:
    """config.json for `cfg`, readable by transformers 4.x (rope_theta) and 5.x (rope_parameters)."""
    dtype_name = str(dtype).replace("torch.", "")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.ffn_dim,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "num_hidden_layers": cfg.layers,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "max_position_embeddings": cfg.max_positions,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": cfg.attention_dropout,
        "mlp_bias": False,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": cfg.pad_id,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def _shards(state: Dict[str, torch.Tensor], max_shard_bytes: int) -> List[Dict[str, torch.Tensor]]:
    """Split in order into groups of at most max_shard_bytes (a larger single tensor gets its own shard)."""
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def save_hf_llama(model: Llama, out_dir: PathLike, max_shard_bytes: int = 5 * 10**9, *, bos_id: int = 1,
                  eos_id: int = 2, tokenizer_model: Optional[PathLike] = None, overwrite: bool = False) -> Path:
    """Write `model` as an HF Llama directory (config.json + safetensors; sharded with an index when the
    weights exceed max_shard_bytes). `tokenizer_model` (a SentencePiece file) is copied in as tokenizer.model.

    The directory is assembled beside `out_dir` and renamed onto it when complete; an existing `out_dir` is an
    error unless `overwrite`, in which case it is replaced only after the new one is complete."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise HFLlamaError(f"{out_dir} already exists; pass overwrite=True to replace it")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        del state["lm_head.weight"]  # HF stores tied weights once; safetensors refuses shared tensors
    dtype = next(t.dtype for t in state.values() if t.is_floating_point())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        shards = _shards(state, max_shard_bytes)
        meta = {"format": "pt"}  # transformers checks this metadata key
        if len(shards) == 1:
            save_file(shards[0], tmp / SAFETENSORS_SINGLE, metadata=meta)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / name, metadata=meta)
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        config = hf_config_dict(model.cfg, dtype, bos_id, eos_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer_model is not None:
            shutil.copyfile(tokenizer_model, tmp / "tokenizer.model")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "dir")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
