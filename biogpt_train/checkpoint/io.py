"""Read and write model checkpoints of every family: fairseq `checkpoint.pt` (BioGPT), Hugging Face directories
(BioGPT, Llama, ELECTRA/BERT), native `.pt` files.

Formats (reference §2):
- fairseq: `torch.save({"cfg" (or legacy "args"), "model": {decoder.* tensors}, ...})`. No dictionary inside;
  fine-tuned checkpoints have extra embedding rows for learned1..N (§2.5).
- HF: a directory with `config.json` and `model.safetensors` (or `pytorch_model.bin`), keys `biogpt.*` plus
  `output_projection.weight`; `vocab.json` / `merges.txt` are derived from `dict.txt` / `bpecodes` (§2.4).
- native: `{"format": "biogpt_train", "format_version": 2, "family", "model_config", "model", "dictionary",
  "tokenizer_files", "cfg", ...}` (docs/ARCHITECTURE.md). Version 2 adds `family` and `tokenizer_files` (name ->
  bytes: `bpecodes`, `tokenizer.model` or `vocab.txt`, plus an HF directory's `vocab.json`/`merges.txt`), so a
  native checkpoint carries its tokenizer; version 1 files (BioGPT, no tokenizer files) still load.
- Llama and ELECTRA/BERT HF directories are read with checkpoint/hf_llama.py and checkpoint/hf_encoder.py; their
  parameter names are transformers' own, which are also ours.

BioGPT weights are normalised to fairseq's `decoder.*` key layout, which is also our BioGPT model's names.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from biogpt_train.models.biogpt import ModelConfig, TransformerLM
from biogpt_train.distributed.parallelize import unwrap
from biogpt_train.utils import atomic_path, atomic_write

logger = logging.getLogger("biogpt_train")

NATIVE_FORMAT, NATIVE_VERSION = "biogpt_train", 2
NATIVE_KEYS = ("format", "format_version", "family", "model_config", "model", "dictionary",
               "tokenizer_files", "head", "num_labels", "cfg")
READABLE_VERSIONS = (1, 2)
# fairseq names the rows it adds to pad a dictionary "madeupwordNNNN"; we name unexplained extra rows the same way
PLACEHOLDER = "madeupword{:04d}"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
EMBED, OUT, VERSION = "decoder.embed_tokens.weight", "decoder.output_projection.weight", "decoder.version"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model / dictionary (message says why)."""


@dataclass
class Loaded:
    model_config: Any  # the family's config dataclass (BioGPT: ModelConfig)
    state_dict: dict  # BioGPT: decoder.* keys, incl. decoder.version and the tied output projection
    dictionary_symbols: list | None  # BioGPT's dict symbols (ids = positions), when the checkpoint has them
    cfg: Any | None
    source_format: str  # "fairseq" | "hf" | "native"
    path: str = ""
    extra: dict | None = None  # native: everything besides the model (e.g. train_state); fairseq: other keys
    family: str = "biogpt"
    tokenizer_files: dict | None = None  # name -> bytes (bpecodes, vocab.json, merges.txt, tokenizer.model, vocab.txt)
    head: str | None = None  # encoders: qa | rtd | mlm | cls
    num_labels: int | None = None  # encoders with a cls head


# --- small helpers -------------------------------------------------------------------------------------------
def _field(obj, name, default=None):
    """cfg access that works for dicts, OmegaConf DictConfig (a Mapping) and argparse.Namespace (legacy `args`)."""
    if obj is None:
        return default
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def _torch_load(path: Path):
    """torch.load on CPU. Try the safe loader first; fairseq checkpoints pickle an argparse Namespace or OmegaConf
    objects, which it refuses, so then fall back to a full unpickle (only load checkpoints you trust)."""
    def none_of_the_formats(e):
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return CheckpointError(
            f"{path}: file is none of the formats (fairseq checkpoint.pt, native biogpt_train .pt, HF directory): "
            f"torch.load failed with {type(e).__name__}: {first}"
        )

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # maybe a pickled Namespace / OmegaConf cfg: retry below
    except Exception as e:
        raise none_of_the_formats(e) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise CheckpointError(f"{path}: unpickling needs the Python module {e.name!r}, which is not installed") from e
    except Exception as e:
        raise none_of_the_formats(e) from e


def _cfg_to_plain(cfg):
    """OmegaConf -> plain containers, so native checkpoints load with torch.load(weights_only=True)."""
    if cfg is None or isinstance(cfg, (dict, list, str, int, float, bool)):
        return cfg
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    if hasattr(cfg, "__dict__"):  # argparse.Namespace
        return dict(vars(cfg))
    return cfg


def _describe(path) -> str:
    return str(path) if path is not None else "<in-memory dictionary>"


def _list(names, limit=20) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- model config from a fairseq cfg or from shapes ----------------------------------------------------------
def _config_from_shapes(sd: Mapping, heads: int | None = None, **dropouts) -> ModelConfig:
    """Shapes fix everything except the number of heads; BioGPT's presets all use head_dim 64."""
    for key in (EMBED, "decoder.embed_positions.weight", "decoder.layers.0.fc1.weight"):
        if key not in sd:
            raise CheckpointError(f"state dict has no {key!r}; is this a BioGPT / fairseq transformer_lm model?")
    vocab, d = sd[EMBED].shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.layers."))
    return ModelConfig(
        vocab_size=vocab,
        embed_dim=d,
        layers=layers,
        heads=heads or max(1, d // 64),
        ffn_dim=sd["decoder.layers.0.fc1.weight"].shape[0],
        max_positions=sd["decoder.embed_positions.weight"].shape[0] - 2,  # rows = max_positions + padding_idx + 1
        **dropouts,
    )


def fairseq_model_config(model_cfg, sd: Mapping) -> ModelConfig:
    """ModelConfig of a fairseq transformer_lm: shapes from the weights, heads and dropouts from cfg.model / args."""
    defaults = ModelConfig(1, 1, 1, 1, 1, 1)
    cfg = _config_from_shapes(
        sd,
        heads=_field(model_cfg, "decoder_attention_heads"),
        dropout=float(_field(model_cfg, "dropout", defaults.dropout)),
        attention_dropout=float(_field(model_cfg, "attention_dropout", defaults.attention_dropout)),
        activation_dropout=float(
            _field(model_cfg, "activation_dropout", _field(model_cfg, "relu_dropout", defaults.activation_dropout))
        ),
    )
    # cfg values that disagree with the weights mean a corrupt or foreign file; say so rather than guess
    for name, value in (("decoder_embed_dim", cfg.embed_dim), ("decoder_layers", cfg.layers),
                        ("decoder_ffn_embed_dim", cfg.ffn_dim)):
        declared = _field(model_cfg, name)
        if declared is not None and int(declared) != value:
            raise CheckpointError(f"cfg.model.{name}={declared} but the weights imply {value}")
    return cfg


def learned_prompt_count(cfg) -> int:
    """N of BioGPT's `--learned-prompt N`: cfg.task.learned_prompt, or args.learned_prompt in legacy checkpoints
    (where `task` is just the task's name)."""
    task = _field(cfg, "task")
    for holder in (task, cfg):
        if holder is not None and not isinstance(holder, str) and _field(holder, "learned_prompt"):
            return int(_field(holder, "learned_prompt"))
    return 0


# --- state dict normalisation and checks ---------------------------------------------------------------------
def _expected_shapes(cfg: ModelConfig) -> dict:
    with torch.device("meta"):  # no memory, even for the 1.5B model
        return {k: tuple(v.shape) for k, v in TransformerLM(cfg).state_dict().items()}


def _normalise(sd: Mapping, cfg: ModelConfig, path) -> dict:
    """Fill the keys fairseq/HF may omit (version buffer, tied projection), then check keys and shapes."""
    sd = dict(sd)
    sd.setdefault(VERSION, torch.Tensor([3]))
    if EMBED in sd:
        if OUT not in sd:
            sd[OUT] = sd[EMBED]
        elif sd[OUT] is not sd[EMBED] and not torch.equal(sd[OUT], sd[EMBED]):
            raise CheckpointError(f"{path}: {OUT} differs from {EMBED}; only tied output projections are supported")
    expected = _expected_shapes(cfg)
    missing, unknown = set(expected) - set(sd), set(sd) - set(expected)
    wrong = [f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in expected.keys() & sd.keys()
             if tuple(sd[k].shape) != expected[k]]
    if missing or unknown or wrong:
        parts = [f"{path}: state dict does not fit TransformerLM({cfg})"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_list(missing)}")
        if unknown:
            parts.append(f"unknown keys ({len(unknown)}): {_list(unknown)}")
        if wrong:
            parts.append(f"shape mismatches ({len(wrong)}): {_list(wrong)}")
        raise CheckpointError("\n  ".join(parts))
    sd[OUT] = sd[EMBED]
    return sd


def hf_to_fairseq_keys(sd: Mapping) -> dict:
    """HF BioGptForCausalLM keys -> fairseq decoder.* keys (inverse of the HF converter's renaming)."""
    if not any(k.startswith("biogpt.") for k in sd):  # a bare BioGptModel was saved
        sd = {("biogpt." + k if k != "output_projection.weight" else k): v for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        if k == "output_projection.weight":
            out[OUT] = v
        elif k.startswith("biogpt."):
            out["decoder." + k[len("biogpt."):]] = v
        else:
            out[k] = v  # reported as unknown by _normalise
    return out


def fairseq_to_hf_keys(sd: Mapping) -> dict:
    """decoder.* -> HF keys, dropping decoder.version and the tied output projection (HF re-ties it)."""
    return {"biogpt." + k[len("decoder."):]: v for k, v in sd.items() if k not in (VERSION, OUT)}


# --- vocabulary ----------------------------------------------------------------------------------------------
def _symbols(dictionary) -> list:
    """A Dictionary, a list of symbols, or a dict.txt path -> list of symbols (ids = positions)."""
    if dictionary is None:
        return None
    if isinstance(dictionary, (str, os.PathLike)):
        from biogpt_train.data.dictionary import Dictionary

        return list(Dictionary.load(dictionary).symbols)
    return list(getattr(dictionary, "symbols", dictionary))


def check_tokenizer_fits(model, tokenizer, where: str = "model") -> None:
    """A tokenizer whose ids reach past the embedding would index out of range deep in the forward: refuse it
    here, with both sizes (any family; a smaller tokenizer is fine, e.g. HF Llama embeddings padded to 32 rows)."""
    rows = unwrap(model).get_input_embeddings().num_embeddings if hasattr(unwrap(model), "get_input_embeddings") \
        else next(m for m in unwrap(model).modules() if isinstance(m, torch.nn.Embedding)).num_embeddings
    if len(tokenizer) > rows:
        raise CheckpointError(f"{where}: the tokenizer has {len(tokenizer)} entries but the model's embedding has "
                              f"only {rows} rows; use the tokenizer the checkpoint was trained with")


def check_vocab(model_config: ModelConfig, dictionary, dict_path=None, ckpt_path=None) -> None:
    """The embedding must have exactly one row per dictionary symbol (fairseq never pads it further)."""
    n, rows = len(_symbols(dictionary)), model_config.vocab_size
    if n == rows:
        return
    msg = (f"vocabulary mismatch: dictionary {_describe(dict_path)} has {n} symbols but checkpoint "
           f"{ckpt_path or '<model>'} has {rows} embedding rows.")
    if 0 < rows - n <= 64:
        msg += (f" The checkpoint looks fine-tuned with {rows - n} learned prompt tokens: append "
                f"learned1..learned{rows - n} to the dictionary (as the fine-tuning task does).")
    else:
        msg += " Use the dictionary the checkpoint was trained with (BioGPT: 42384 entries, BioGPT-Large: 57717)."
    raise CheckpointError(msg)


def hf_vocab(symbols: Sequence[str]) -> dict:
    """dict.txt symbols -> HF vocab.json: the tokenizer module's rule (reference §2.4), as a CheckpointError."""
    from biogpt_train.data.tokenizer import hf_vocab as tokenizer_hf_vocab

    try:
        return tokenizer_hf_vocab(symbols)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def symbols_from_hf_vocab(vocab: Mapping, path) -> list:
    """Inverse of hf_vocab: vocab.json -> fairseq symbols in id order."""
    by_id = sorted((i, tok) for tok, i in vocab.items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise CheckpointError(f"{path}: ids are not 0..{len(by_id) - 1} without gaps")
    out = []
    for i, tok in by_id:
        if i < len(SPECIALS) and tok == SPECIALS[i]:
            out.append(tok)
        elif tok.endswith("</w>"):
            out.append(tok[: -len("</w>")])
        else:
            out.append(tok + "@@")
    return out


def dictionary_from_symbols(symbols: Sequence[str], counts: Sequence[int] | None = None):
    """A Dictionary with exactly these symbols at these ids (the first four must be the fairseq specials)."""
    from biogpt_train.data.dictionary import Dictionary

    if tuple(symbols[:4]) != SPECIALS:
        raise CheckpointError(f"dictionary must start with {SPECIALS}, got {tuple(symbols[:4])}")
    d = Dictionary()
    for i, sym in enumerate(symbols[4:], start=4):
        d.add_symbol(sym, n=int(counts[i]) if counts else 1, overwrite=sym in d)
    return d


# --- reading -------------------------------------------------------------------------------------------------
def _read_hf_dir(path: Path) -> Loaded:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}/config.json: not valid JSON ({e})") from e
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")
    missing = [k for k in required if k not in config]
    if missing:
        raise CheckpointError(f"{path}/config.json: missing fields {', '.join(missing)}")
    if config.get("model_type", "biogpt") != "biogpt":
        raise CheckpointError(f"{path}/config.json: model_type is {config.get('model_type')!r}, not 'biogpt'")
    if config.get("hidden_act", "gelu") != "gelu" or not config.get("scale_embedding", True):
        raise CheckpointError(f"{path}/config.json: only hidden_act='gelu' with scale_embedding=true is supported "
                              f"(got {config.get('hidden_act')!r}, {config.get('scale_embedding')!r})")
    if (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists():
        from safetensors.torch import load_file

        if (path / "model.safetensors").exists():
            files = ["model.safetensors"]
        else:
            files = sorted(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values()))
        sd = {}
        for name in files:
            sd.update(load_file(str(path / name), device="cpu"))
    elif (path / "pytorch_model.bin").exists():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{path}: HF directory without model.safetensors or pytorch_model.bin")
    sd = hf_to_fairseq_keys(sd)
    model_config = ModelConfig(
        vocab_size=config["vocab_size"],
        embed_dim=config["hidden_size"],
        layers=config["num_hidden_layers"],
        heads=config["num_attention_heads"],
        ffn_dim=config["intermediate_size"],
        max_positions=config["max_position_embeddings"],
        dropout=config.get("hidden_dropout_prob", 0.1),
        attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
        activation_dropout=config.get("activation_dropout", 0.0),
        padding_idx=config.get("pad_token_id", 1),
    )
    symbols = None
    if (path / "vocab.json").exists():
        symbols = symbols_from_hf_vocab(json.loads((path / "vocab.json").read_text(encoding="utf-8")),
                                        path / "vocab.json")
        symbols = name_extra_rows(symbols, model_config.vocab_size, int(config.get("learned_prompt") or 0),
                                  path / "vocab.json")
    files = {name: (path / name).read_bytes() for name in ("vocab.json", "merges.txt") if (path / name).is_file()}
    return Loaded(model_config, _normalise(sd, model_config, path), symbols, config, "hf", str(path),
                  tokenizer_files=files or None)


def name_extra_rows(symbols: list, rows: int, learned: int, where) -> list:
    """A vocabulary shorter than the embedding (fine-tuned hub models: the learned prompt rows are not in
    vocab.json) is completed as transformers loads it, with names: `learned1..N` when the checkpoint says it has N
    learned prompt tokens (config.json `learned_prompt`), otherwise fairseq's placeholder `madeupwordNNNN`."""
    extra = rows - len(symbols)
    if extra <= 0:
        return symbols
    if learned == extra:
        names = [f"learned{i}" for i in range(1, extra + 1)]
    else:
        names = [PLACEHOLDER.format(i) for i in range(extra)]
    logger.warning("%s has %d entries but the embedding has %d rows; naming the extra rows %s..%s", where,
                   len(symbols), rows, names[0], names[-1])
    return list(symbols) + names


def _read_native(obj: dict, path: Path) -> Loaded:
    from biogpt_train.models import get_family

    if obj.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: native format_version {obj.get('format_version')!r}; "
                              f"this code reads versions {READABLE_VERSIONS}")
    if not isinstance(obj.get("model_config"), Mapping) or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{path}: native checkpoint without 'model_config' / 'model'")
    family = obj.get("family", "biogpt")
    config_cls = get_family(family).config
    mc = dict(obj["model_config"])
    unknown = set(mc) - {f.name for f in fields(config_cls)}
    if unknown:
        raise CheckpointError(f"{path}: unknown model_config fields for the {family} family: {_list(unknown)}")
    model_config = config_cls(**mc)
    sd = _normalise(obj["model"], model_config, path) if family == "biogpt" else dict(obj["model"])
    extra = {k: v for k, v in obj.items() if k not in NATIVE_KEYS}
    return Loaded(model_config, sd, obj.get("dictionary"), obj.get("cfg"), "native", str(path), extra, family,
                  obj.get("tokenizer_files"), obj.get("head"), obj.get("num_labels"))


def _read_hf_llama(path: Path) -> Loaded:
    from biogpt_train.checkpoint import hf_llama

    config = hf_llama.read_hf_llama_config(path)
    sd = {}
    for _, shard in hf_llama.iter_hf_state_dict(path):
        sd.update({k: v for k, v in shard.items() if not k.endswith(hf_llama.IGNORED_SUFFIXES)})
    files = {name: (path / name).read_bytes() for name in ("tokenizer.model",) if (path / name).is_file()}
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return Loaded(config, sd, None, raw, "hf", str(path), family="llama", tokenizer_files=files or None)


def _read_hf_encoder(path: Path) -> Loaded:
    from biogpt_train.checkpoint import hf_encoder

    info = hf_encoder.read_hf_encoder_config(path)
    if info.head is None:
        raise CheckpointError(f"{path}/config.json: architectures {info.raw.get('architectures')} name no "
                              "supported encoder head (QuestionAnswering, PreTraining, MaskedLM, SequenceClassification)")
    if (path / "vocab.txt").is_file():
        hf_encoder.check_vocab(path / "vocab.txt", info.config.vocab_size)
    files = {name: (path / name).read_bytes() for name in ("vocab.txt",) if (path / name).is_file()}
    return Loaded(info.config, hf_encoder.read_state_dict(path), None, info.raw, "hf", str(path), family="electra",
                  tokenizer_files=files or None, head=info.head, num_labels=info.num_labels)


def _read_fairseq(obj: dict, path: Path) -> Loaded:
    cfg = obj.get("cfg")
    if cfg is None and obj.get("args") is not None:  # legacy: one flat Namespace
        cfg = obj["args"]
        model_cfg = cfg
    else:
        model_cfg = _field(cfg, "model")
    sd = obj["model"]
    model_config = fairseq_model_config(model_cfg, sd)
    extra = {k: v for k, v in obj.items() if k not in ("cfg", "args", "model")}
    return Loaded(model_config, _normalise(sd, model_config, path), None, cfg, "fairseq", str(path), extra)


def hf_model_type(path: Path) -> str:
    try:
        return str(json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type", "biogpt"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}/config.json: not valid JSON ({e})") from e


HF_READERS = {"biogpt": _read_hf_dir, "llama": _read_hf_llama, "electra": _read_hf_encoder, "bert": _read_hf_encoder}


def detect_format(path) -> str:
    """'hf' for a directory with config.json; for files, look inside (see read_checkpoint)."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").exists():
            return "hf"
        raise CheckpointError(f"{path}: directory is none of the formats (an HF model directory needs config.json)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    return "file"


def read_checkpoint(path) -> Loaded:
    """Read any supported checkpoint into decoder.* tensors + ModelConfig (+ dictionary symbols when stored)."""
    path = Path(path)
    if detect_format(path) == "hf":
        model_type = hf_model_type(path)
        if model_type not in HF_READERS:
            raise CheckpointError(f"{path}/config.json: model_type {model_type!r} is none of the supported families' "
                                  f"({', '.join(HF_READERS)})")
        return HF_READERS[model_type](path)
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == NATIVE_FORMAT:
        return _read_native(obj, path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), Mapping) and any(
        k.startswith("decoder.") for k in obj["model"]
    ):
        return _read_fairseq(obj, path)
    what = f"a dict with keys {_list(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{path}: file is none of the formats (fairseq checkpoint.pt with 'model' of decoder.* weights, native "
        f"biogpt_train .pt, HF directory); it holds {what}"
    )


def _check_tensors(model, sd: Mapping, path) -> None:
    """Every tensor present with the model's shape: one line naming the first offending tensor."""
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{path}: tensors do not fit {type(model).__name__} "
                              f"(missing: {_list(missing, 5) or 'none'}; unexpected: {_list(unknown, 5) or 'none'})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)} in the checkpoint but "
                                  f"{tuple(expected[k].shape)} in the model its config describes")


def build_model(loaded: Loaded):
    """The family's model with the loaded weights (fp32, CPU, eval). Built on the meta device and filled with
    `assign=True`: no wasted init, and no second copy of the weights (a 7B model fits once in memory)."""
    from biogpt_train.models import build_model as new_model

    if loaded.family == "biogpt":
        with torch.device("meta"):
            model = TransformerLM(loaded.model_config)
        model.load_state_dict(loaded.state_dict, strict=True, assign=True)
        model.decoder.output_projection.weight = model.decoder.embed_tokens.weight  # assign=True broke the tie
        return model.float().eval()
    head = {}
    if loaded.family == "electra":
        head = {"head": loaded.head or "qa", "num_labels": loaded.num_labels}
    with torch.device("meta"):
        model = new_model(loaded.family, loaded.model_config, **head)
    sd = dict(loaded.state_dict)
    if loaded.family == "electra":  # its adapter checks every name and shape (hf_encoder._adapt_state_dict)
        from biogpt_train.checkpoint.hf_encoder import _adapt_state_dict

        sd = _adapt_state_dict(model, sd, str(loaded.path), same_head=True)
    else:
        if loaded.model_config.tie_embeddings:
            sd.setdefault("lm_head.weight", sd.get("model.embed_tokens.weight"))
        _check_tensors(model, sd, loaded.path)
    model.load_state_dict(sd, strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # assign=True gave a tied head its own Parameter
    if loaded.family == "llama" and loaded.model_config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.float().eval()


def load_dictionary(loaded: Loaded, dict_path=None):
    """The Dictionary that goes with a checkpoint: `dict_path`, else the one stored inside, else dict.txt (or
    dict.x.txt) beside it. Learned prompt tokens of a fine-tuned fairseq checkpoint (cfg task.learned_prompt)
    are appended as the fine-tuning task does. Checked against the embedding rows."""
    from biogpt_train.data.dictionary import Dictionary

    if dict_path is None and loaded.dictionary_symbols is None:
        for name in ("dict.txt", "dict.x.txt"):
            if (Path(loaded.path).parent / name).exists():
                dict_path = Path(loaded.path).parent / name
                break
        else:
            raise CheckpointError(f"{loaded.path}: no dictionary inside and no dict.txt beside it; pass one")
    if dict_path is not None:
        d = Dictionary.load(dict_path)
    else:
        d = dictionary_from_symbols(loaded.dictionary_symbols, (loaded.extra or {}).get("dictionary_counts"))
    n = learned_prompt_count(loaded.cfg)
    if n and len(d) + n == loaded.model_config.vocab_size:
        d.encode_line(" ".join(f"learned{i}" for i in range(1, n + 1)), append_eos=False, add_if_not_exist=True)
    check_vocab(loaded.model_config, d, dict_path or f"stored in {loaded.path}", loaded.path)
    return d


def load_pretrained(path, dictionary=None):
    """Any checkpoint of any family -> the model in eval mode on CPU (fp32).

    fairseq checkpoint.pt, native .pt (any family), or an HF directory: BioGPT (BioGptForCausalLM), Llama
    (LlamaForCausalLM), ELECTRA/BERT (QA, pre-training, masked-LM or classification head, from `architectures`).
    `dictionary` (BioGPT: Dictionary, symbol list or dict.txt path), when given, must match the embedding rows.
    """
    loaded = read_checkpoint(path)
    if loaded.family != "biogpt":
        if dictionary is not None:
            raise CheckpointError(f"{path}: dictionary= applies to BioGPT checkpoints; this is a {loaded.family} model")
        return build_model(loaded)
    if dictionary is not None:
        dict_path = dictionary if isinstance(dictionary, (str, os.PathLike)) else None
        check_vocab(loaded.model_config, dictionary, dict_path, path)
    elif loaded.dictionary_symbols is not None:
        check_vocab(loaded.model_config, loaded.dictionary_symbols, f"stored in {path}", path)
    return build_model(loaded)


# --- writing -------------------------------------------------------------------------------------------------
def model_state_dict(model) -> dict:
    """CPU tensors of a plain model; BioGPT keeps its tied projection as one tensor under both fairseq names."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    if EMBED in sd:
        sd[OUT] = sd[EMBED]
    return sd


def native_dict(model, model_state: dict, dictionary=None, cfg=None, tokenizer_files: dict | None = None) -> dict:
    """The native checkpoint's contents (the one place that lays them out; training checkpoints add train_state).

    `dictionary`: BioGPT's Dictionary (symbols + counts), or None for families whose vocabulary is the tokenizer
    file in `tokenizer_files` (tokenizer.model, vocab.txt)."""
    from biogpt_train.models import family_of

    model = unwrap(model)
    family = family_of(model)
    config = model.cfg if family != "electra" else model.config
    symbols = _symbols(dictionary)
    if symbols is not None and family == "biogpt":
        check_vocab(config, symbols, None, "<model>")
    obj = {
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_VERSION,
        "family": family,
        "model_config": asdict(config),
        "model": model_state,
        "dictionary": symbols,
        "tokenizer_files": dict(tokenizer_files) if tokenizer_files else None,
        "cfg": _cfg_to_plain(cfg),
    }
    counts = getattr(dictionary, "count", None)
    if counts is not None:
        obj["dictionary_counts"] = list(counts)
    if family == "electra":
        from biogpt_train.checkpoint.hf_encoder import _head_of

        obj["head"] = _head_of(model)
        obj["num_labels"] = getattr(model, "num_labels", None)
    return obj


def save_native(path, model, dictionary=None, cfg=None, extra=None, tokenizer_files: dict | None = None) -> Path:
    """Atomically write a native checkpoint; `extra` adds top-level entries such as `train_state`."""
    obj = native_dict(model, model_state_dict(model), dictionary, cfg, tokenizer_files)
    for k, v in (extra or {}).items():
        if k in obj:
            raise ValueError(f"save_native: extra key {k!r} collides with a reserved key")
        obj[k] = v
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def hf_config(cfg: ModelConfig) -> dict:
    """config.json for transformers.BioGptConfig (BioGptForCausalLM)."""
    return {
        "architectures": ["BioGptForCausalLM"],
        "model_type": "biogpt",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout,
        "max_position_embeddings": cfg.max_positions,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,  # informational: HF's BioGPT builds nn.LayerNorm with its default 1e-5
        "scale_embedding": True,
        "layerdrop": 0.0,
        "use_cache": True,
        "pad_token_id": cfg.padding_idx,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
    }


def export_hf(model, dictionary=None, bpecodes=None, out_dir=None, tokenizer_files: dict | None = None) -> Path:
    """Write an HF directory that transformers' `from_pretrained` loads offline, for any family.

    BioGPT: model.safetensors (tied projection once), config.json, and with a dictionary and BPE codes (`bpecodes`
    or `tokenizer_files["merges.txt"/"bpecodes"]`) vocab.json/merges.txt for BioGptTokenizer — an HF directory read
    earlier gets its own vocab.json bytes back. Llama: config.json + safetensors (+ tokenizer.model). ELECTRA/BERT:
    config.json + weights (+ vocab.txt). Without tokenizer files only weights and config are written (a warning
    says so): the directory then loads as a model, not as a tokenizer."""
    from biogpt_train.models import family_of

    model, out, files = unwrap(model), Path(out_dir), dict(tokenizer_files or {})
    family = family_of(model)
    if family != "biogpt":
        return _export_hf_other(model, family, out, files)
    symbols = _symbols(dictionary)
    merges = Path(bpecodes).read_bytes() if bpecodes else files.get("merges.txt", files.get("bpecodes"))
    if bpecodes is not None and not Path(bpecodes).is_file():
        raise CheckpointError(f"HF export: BPE codes file {bpecodes} not found")
    if symbols is not None:
        check_vocab(model.cfg, symbols, dictionary if isinstance(dictionary, (str, os.PathLike)) else None, "<model>")
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in fairseq_to_hf_keys(model_state_dict(model)).items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = hf_config(model.cfg)
    learned = _trailing_learned(symbols)
    if learned:
        config["learned_prompt"] = learned  # read back by name_extra_rows when vocab.json lacks those rows
    atomic_write(out / "config.json", json.dumps(config, indent=2) + "\n")
    if symbols is None or merges is None:
        logger.warning("%s: no %s given, so the export has weights and config.json only (no vocab.json/merges.txt); "
                       "pass the dictionary and BPE codes (--dict/--bpecodes) to include the tokenizer", out,
                       "dictionary" if symbols is None else "BPE codes")
        return out
    vocab = hf_vocab(symbols)
    stored = files.get("vocab.json")
    if stored is not None and json.loads(stored) == vocab:
        atomic_write(out / "vocab.json", stored)  # byte for byte what was read
    else:
        atomic_write(out / "vocab.json", json.dumps(vocab, ensure_ascii=False, indent=0) + "\n")
    if merges and not merges.endswith(b"\n"):
        merges += b"\n"  # BioGptTokenizer drops the text after the last newline
    atomic_write(out / "merges.txt", merges)
    specials = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "pad_token": "<pad>",
                "unk_token": "<unk>"}
    atomic_write(out / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")
    tok_cfg = {"tokenizer_class": "BioGptTokenizer", "model_max_length": model.cfg.max_positions, **specials}
    atomic_write(out / "tokenizer_config.json", json.dumps(tok_cfg, indent=2) + "\n")
    return out


def _trailing_learned(symbols) -> int:
    """N when the symbols end with learned1..learnedN (BioGPT's learned prompt tokens), else 0."""
    import re

    m = re.fullmatch(r"learned(\d+)", symbols[-1]) if symbols else None
    n = int(m.group(1)) if m else 0
    return n if 0 < n <= len(symbols) and list(symbols[-n:]) == [f"learned{i}" for i in range(1, n + 1)] else 0


def _export_hf_other(model, family: str, out: Path, files: dict) -> Path:
    import tempfile

    name = {"llama": "tokenizer.model", "electra": "vocab.txt"}[family]
    with tempfile.TemporaryDirectory() as tmp:
        tok = None
        if name in files:
            tok = Path(tmp) / name
            tok.write_bytes(files[name])
        else:
            logger.warning("%s: no %s given, so the export has weights and config.json only", out, name)
        if family == "llama":
            from biogpt_train.checkpoint.hf_llama import save_hf_llama

            save_hf_llama(model, out, tokenizer_model=tok, overwrite=True)
        else:
            from biogpt_train.checkpoint.hf_encoder import save_hf_encoder

            save_hf_encoder(model, out, vocab_file=tok)
    return out
