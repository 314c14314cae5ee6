"""Read and write transformers directories of ELECTRA / BERT encoders (config.json + weights + tokenizer files).

Supported architectures (ARCHITECTURES): ElectraForQuestionAnswering, ElectraForPreTraining (RTD),
ElectraForMaskedLM (generator), ElectraForSequenceClassification, BertForQuestionAnswering,
BertForSequenceClassification. Our parameter names are transformers', so weights load with ``strict=True``
after three documented adaptations: legacy ``*.position_ids`` buffers are dropped, the tied
``generator_lm_head.weight`` (absent from safetensors files) is filled from the word embeddings, and, only when
a different head is asked for (fine-tuning a pretrained discriminator for QA, say), the other head's tensors are
dropped and the new head is initialised like transformers does. The model is built on the meta device and the
tensors are assigned, so a 1.3 GB checkpoint is read once and never copied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn

from biogpt_train.models.electra import EncoderConfig, build_encoder
from biogpt_train.utils import atomic_path, atomic_write

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

# (style, head) <-> transformers architecture name
ARCHITECTURES = {
    ("electra", "qa"): "ElectraForQuestionAnswering",
    ("electra", "rtd"): "ElectraForPreTraining",
    ("electra", "mlm"): "ElectraForMaskedLM",
    ("electra", "cls"): "ElectraForSequenceClassification",
    ("bert", "qa"): "BertForQuestionAnswering",
    ("bert", "cls"): "BertForSequenceClassification",
}
HEAD_OF = {arch: head for (_, head), arch in ARCHITECTURES.items()}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")

# transformers' config defaults, used when an old config.json leaves a key out
HF_DEFAULTS = {
    "electra": dict(vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                    num_attention_heads=4, intermediate_size=1024),
    "bert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),
}
COMMON_DEFAULTS = dict(hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                       max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                       pad_token_id=0, position_embedding_type="absolute", classifier_dropout=None)
# config.json keys this module writes itself (everything else from a loaded config.json is carried over)
OWN_KEYS = ("architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
            "vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", *(k for k in COMMON_DEFAULTS if k != "position_embedding_type"),
            "tie_word_embeddings")  # position_embedding_type: validated as "absolute" and carried over as found


class EncoderCheckpointError(ValueError):
    pass


@dataclass
class HFEncoderConfig:
    config: EncoderConfig
    head: Optional[str]  # None when architectures names no supported head (e.g. ElectraModel)
    architecture: Optional[str]
    num_labels: int = 2
    raw: Dict = field(default_factory=dict)  # the whole config.json


def _config_path(path: PathLike) -> Path:
    return Path(path) / "config.json"


def _weights_file(path: Path) -> Optional[Path]:
    return next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)


def is_hf_encoder_dir(path: PathLike) -> bool:
    """A directory with an electra/bert config.json and a weights file."""
    path = Path(path)
    try:
        raw = json.loads(_config_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("model_type") in HF_DEFAULTS and _weights_file(path) is not None


def encoder_config_from_hf(raw: dict, where: str = "config.json") -> EncoderConfig:
    style = raw.get("model_type")
    if style not in HF_DEFAULTS:
        raise EncoderCheckpointError(f"{where}: model_type {style!r} is not an encoder this project reads "
                                     f"({sorted(HF_DEFAULTS)})")
    c = {**COMMON_DEFAULTS, **HF_DEFAULTS[style], **raw}
    if c["position_embedding_type"] != "absolute":
        raise EncoderCheckpointError(f"{where}: position_embedding_type {c['position_embedding_type']!r} is not "
                                     f"supported (only 'absolute')")
    if raw.get("is_decoder") or raw.get("add_cross_attention"):
        raise EncoderCheckpointError(f"{where}: decoder/cross-attention configs are not supported")
    return EncoderConfig(
        vocab_size=c["vocab_size"], embedding_size=c.get("embedding_size", c["hidden_size"]) if style == "electra"
        else c["hidden_size"], embed_dim=c["hidden_size"], layers=c["num_hidden_layers"],
        heads=c["num_attention_heads"], ffn_dim=c["intermediate_size"], max_positions=c["max_position_embeddings"],
        type_vocab_size=c["type_vocab_size"], layer_norm_eps=c["layer_norm_eps"], dropout=c["hidden_dropout_prob"],
        attention_dropout=c["attention_probs_dropout_prob"], pad_id=0 if c["pad_token_id"] is None else
        c["pad_token_id"], style=style, hidden_act=c["hidden_act"], initializer_range=c["initializer_range"],
        classifier_dropout=c["classifier_dropout"])


def read_hf_encoder_config(path: PathLike) -> HFEncoderConfig:
    cfg_path = _config_path(path)
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{cfg_path}: not found; expected a transformers model directory") from None
    except ValueError as e:
        raise EncoderCheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    cfg = encoder_config_from_hf(raw, str(cfg_path))
    archs = raw.get("architectures") or []
    arch = next((a for a in archs if a in HEAD_OF), archs[0] if archs else None)
    head = HEAD_OF.get(arch)
    if head is not None and ARCHITECTURES.get((cfg.style, head)) != arch:
        raise EncoderCheckpointError(f"{cfg_path}: architecture {arch} does not match model_type {cfg.style!r}")
    num_labels = raw.get("num_labels") or len(raw.get("id2label") or {}) or 2
    return HFEncoderConfig(cfg, head, arch, num_labels, raw)


# ------------------------------------------------------------------------------------------------ weights


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """All tensors of a transformers directory (safetensors or .bin, single file or sharded)."""
    path = Path(path)
    wf = _weights_file(path)
    if wf is None:
        raise FileNotFoundError(f"{path}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    if wf.name.endswith(".index.json"):
        shards = sorted(set(json.loads(wf.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [path / s for s in shards]
    else:
        files = [wf]
    sd = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd.update(load_file(str(f)))
        else:
            try:
                sd.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
            except RuntimeError:  # pre-1.6 (non-zip) files cannot be memory-mapped
                sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def _fresh_tensor(name: str, shape, std: float) -> torch.Tensor:
    """transformers' init for a new head tensor: zero biases, LayerNorm weight 1, N(0, std) otherwise."""
    if name.endswith("bias"):
        return torch.zeros(shape)
    if "LayerNorm" in name:
        return torch.ones(shape)
    return torch.randn(shape) * std


def _adapt_state_dict(model: nn.Module, sd: Dict[str, torch.Tensor], where: str, *, same_head: bool) -> dict:
    """Make ``sd`` match ``model``'s keys exactly (module docstring), or raise naming the offending tensors."""
    cfg = model.config
    expected = model.state_dict()  # meta tensors: names and shapes only
    prefix = cfg.style + "."
    sd = {k: v for k, v in sd.items() if not k.endswith(".position_ids")}
    word = prefix + "embeddings.word_embeddings.weight"
    if "generator_lm_head.weight" in expected and "generator_lm_head.weight" not in sd and word in sd:
        sd["generator_lm_head.weight"] = sd[word]
    is_head = lambda k: not k.startswith(prefix) or k.startswith(prefix + "pooler.")  # noqa: E731
    unexpected = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    if unexpected and not same_head and all(is_head(k) for k in unexpected):
        log.info("%s: dropping tensors of the checkpoint's own head: %s", where, ", ".join(unexpected))
        sd = {k: v for k, v in sd.items() if k not in unexpected}
        unexpected = []
    if unexpected:
        more = " ..." if len(unexpected) > 8 else ""
        raise EncoderCheckpointError(f"{where}: unexpected tensors {unexpected[:8]}{more} for "
                                     f"{type(model).__name__} ({cfg.style}); wrong architecture in config.json?")
    if missing and not same_head and all(is_head(k) for k in missing):
        log.info("%s: initialising new head tensors: %s", where, ", ".join(missing))
        for k in missing:
            sd[k] = _fresh_tensor(k, expected[k].shape, cfg.initializer_range)
        missing = []
    if missing:
        more = " ..." if len(missing) > 8 else ""
        raise EncoderCheckpointError(f"{where}: missing tensors {missing[:8]}{more} for "
                                     f"{type(model).__name__} ({cfg.style}); truncated or foreign checkpoint?")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise EncoderCheckpointError(f"{where}: tensor {k!r} has shape {tuple(v.shape)} in the checkpoint but "
                                         f"config.json gives {tuple(expected[k].shape)}; config and weights disagree")
    return sd


def count_vocab_txt(path: PathLike) -> int:
    with open(path, encoding="utf-8") as f:  # the way BertTokenizer reads it (one token per line)
        return len(f.readlines())


def check_vocab(vocab_txt: PathLike, embedding_rows: int) -> None:
    n = count_vocab_txt(vocab_txt)
    if n != embedding_rows:
        raise EncoderCheckpointError(f"{vocab_txt}: {n} tokens but the word embedding has {embedding_rows} rows; "
                                     f"this vocab.txt does not belong to this model (or pass check_vocab=False)")


def load_hf_encoder(path: PathLike, *, head: Optional[str] = None, num_labels: Optional[int] = None,
                    dtype: Optional[torch.dtype] = torch.float32, device: Union[str, torch.device, None] = None,
                    check_vocab_file: bool = True) -> nn.Module:
    """A model (QAModel, ElectraDiscriminator, ElectraGenerator or SequenceClassifier) with the directory's weights.

    ``head`` ("qa" | "rtd" | "mlm" | "cls") defaults to the one config.json's ``architectures`` names; a
    different one keeps the body and starts a fresh head. ``dtype=None`` keeps the file's dtype. The loaded
    config.json is kept as ``model.hf_config`` so save_hf_encoder writes its other keys back unchanged."""
    path = Path(path)
    info = read_hf_encoder_config(path)
    if head is None:
        if info.head is None:
            raise EncoderCheckpointError(f"{path}/config.json: architectures {info.raw.get('architectures')} name no "
                                         f"supported head ({sorted(HEAD_OF)}); pass head='qa'|'rtd'|'mlm'|'cls'")
        head = info.head
    if (info.config.style, head) not in ARCHITECTURES:
        raise EncoderCheckpointError(f"{path}: head {head!r} is not available for model_type {info.config.style!r}")
    with torch.device("meta"):
        model = build_encoder(info.config, head, num_labels or info.num_labels)
    where = str(_weights_file(path) or path)
    sd = _adapt_state_dict(model, read_state_dict(path), where, same_head=head == info.head)
    if dtype is not None or device is not None:
        sd = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # assign=True gave the lm head its own Parameter object
    if check_vocab_file and (path / "vocab.txt").is_file():
        check_vocab(path / "vocab.txt", info.config.vocab_size)
    model.hf_config = info.raw
    return model


# ------------------------------------------------------------------------------------------------ saving


def _head_of(model: nn.Module) -> str:
    for name, cls in (("qa", "QAModel"), ("rtd", "ElectraDiscriminator"), ("mlm", "ElectraGenerator"),
                      ("cls", "SequenceClassifier"), ("pretrain", "ElectraPretraining")):
        if type(model).__name__ == cls:
            return name
    raise EncoderCheckpointError(f"save_hf_encoder: {type(model).__name__} is not an encoder model of this project")


def hf_config_dict(model: nn.Module) -> dict:
    """config.json for ``model``: the loaded config.json's other keys, then ours."""
    cfg: EncoderConfig = model.config
    head = _head_of(model)
    arch = ARCHITECTURES[(cfg.style, head)]
    out = {k: v for k, v in getattr(model, "hf_config", {}).items() if k not in OWN_KEYS}
    dtype = next(model.parameters()).dtype
    out.update({
        "architectures": [arch], "model_type": cfg.style, "vocab_size": cfg.vocab_size,
        **({"embedding_size": cfg.embedding_size} if cfg.style == "electra" else {}),
        "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn_dim, "hidden_act": cfg.hidden_act, "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout, "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size, "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": cfg.pad_id,
        "classifier_dropout": cfg.classifier_dropout, "dtype": str(dtype).removeprefix("torch."),
    })
    if head == "mlm":
        out["tie_word_embeddings"] = True
    if head == "cls":
        labels = out.get("id2label") or {}
        if len(labels) != model.num_labels:
            labels = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
        out["id2label"] = {str(k): v for k, v in labels.items()}
        out["label2id"] = {v: int(k) for k, v in out["id2label"].items()}
    else:
        out.pop("id2label", None), out.pop("label2id", None), out.pop("num_labels", None)
    return out


def save_hf_encoder(model: nn.Module, out_dir: PathLike, *, tokenizer_dir: Optional[PathLike] = None,
                    vocab_file: Optional[PathLike] = None, lowercase: bool = True, safe_serialization: bool = True,
                    check_vocab_file: bool = True) -> Path:
    """Write ``model`` as a transformers directory loadable by ``<architecture>.from_pretrained``.

    Tokenizer files: every TOKENIZER_FILES entry in ``tokenizer_dir`` is copied; or ``vocab_file`` is copied to
    vocab.txt with a small tokenizer_config.json. Each file is written atomically; config.json goes last, so a
    directory with a config.json is complete. The tied ``generator_lm_head.weight`` is left out of safetensors
    (as transformers does: safetensors stores no aliased tensors)."""
    out = Path(out_dir)
    cfg: EncoderConfig = model.config
    vocab_src = Path(vocab_file) if vocab_file else (Path(tokenizer_dir) / "vocab.txt" if tokenizer_dir else None)
    if check_vocab_file and vocab_src is not None and vocab_src.is_file():
        check_vocab(vocab_src, cfg.vocab_size)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        if "generator_lm_head.weight" in sd:
            del sd["generator_lm_head.weight"]
        with atomic_path(out / "model.safetensors") as tmp:
            save_file({k: v.cpu() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
    else:
        with atomic_path(out / "pytorch_model.bin") as tmp:
            torch.save({k: v.cpu() for k, v in sd.items()}, tmp)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                with atomic_path(out / name) as tmp:
                    shutil.copyfile(Path(tokenizer_dir) / name, tmp)
    elif vocab_file is not None:
        with atomic_path(out / "vocab.txt") as tmp:
            shutil.copyfile(vocab_file, tmp)
        tok_cfg = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                   "model_max_length": cfg.max_positions}
        atomic_write(out / "tokenizer_config.json", json.dumps(tok_cfg, indent=2) + "\n")
    atomic_write(out / "config.json", json.dumps(hf_config_dict(model), indent=2, sort_keys=True) + "\n")
    return out


__all__ = ["ARCHITECTURES", "EncoderCheckpointError", "HFEncoderConfig", "is_hf_encoder_dir", "read_hf_encoder_config",
           "encoder_config_from_hf", "read_state_dict", "load_hf_encoder", "save_hf_encoder", "hf_config_dict",
           "check_vocab"]
