"""ELECTRA / BERT encoders (BioM-ELECTRA, seed-systems.md §A) with the QA, RTD, MLM and classification heads.

Post-LN BERT blocks, exact (erf) GELU, learned absolute positions, token-type embeddings, and (ELECTRA only)
``embeddings_project`` when ``embedding_size != hidden_size``. Padding masks go to torch SDPA as a boolean key
mask, so nothing waits on the host. Module and parameter names are exactly transformers' (``electra.embeddings.
word_embeddings.weight``, ``electra.encoder.layer.0.attention.self.query.weight``, ``qa_outputs.weight``, ...;
``bert.*`` for BERT), so a transformers state dict loads with ``strict=True`` and no key mapping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from biogpt_train.models.biogpt import dropout_attention
from biogpt_train.models.dropout import Dropout

ACTIVATIONS = {  # transformers' hidden_act names
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
STYLES = ("electra", "bert")


class EncoderConfigError(ValueError):
    pass


@dataclass
class EncoderConfig:
    vocab_size: int
    embedding_size: int
    embed_dim: int
    layers: int
    heads: int
    ffn_dim: int
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_id: int = 0
    style: str = "electra"  # "electra" | "bert": parameter prefix and the heads that exist
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    classifier_dropout: Optional[float] = None  # None: `dropout` (transformers' rule)

    def __post_init__(self):
        if self.style not in STYLES:
            raise EncoderConfigError(f"style {self.style!r} is not one of {STYLES}")
        if self.embed_dim % self.heads:
            raise EncoderConfigError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.style == "bert" and self.embedding_size != self.embed_dim:
            raise EncoderConfigError(f"BERT has no embedding projection: embedding_size {self.embedding_size} must "
                                     f"equal hidden_size {self.embed_dim}")
        if self.hidden_act not in ACTIVATIONS:
            raise EncoderConfigError(f"hidden_act {self.hidden_act!r} is not supported; use one of {list(ACTIVATIONS)}")


# YAML keys that describe the preset or ELECTRA pretraining, not the network itself.
NON_MODEL_KEYS = ("family", "arch", "generator_size", "generator_layers")


def config_from_yaml_dict(d: dict, vocab_size: Optional[int] = None) -> EncoderConfig:
    """EncoderConfig from a ``conf/model/*.yaml`` mapping (``family: electra``); ``vocab_size`` overrides."""
    d = dict(d)
    if d.get("family", "electra") != "electra":
        raise EncoderConfigError(f"model family {d['family']!r} is not an encoder preset (expected 'electra')")
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = sorted(set(d) - fields - set(NON_MODEL_KEYS))
    if unknown:
        raise EncoderConfigError(f"unknown encoder config keys {unknown} in preset {d.get('arch')!r}; "
                                 f"known: {sorted(fields)}")
    if vocab_size is not None:
        d["vocab_size"] = vocab_size
    if "vocab_size" not in d:
        raise EncoderConfigError(f"preset {d.get('arch')!r} has no vocab_size; pass vocab_size=len(tokenizer)")
    return EncoderConfig(**{k: v for k, v in d.items() if k in fields})


def generator_config(disc: EncoderConfig, size: float = 0.25, layers: float = 1.0) -> EncoderConfig:
    """The ELECTRA generator beside a discriminator (google-research/electra ``get_generator_config``).

    hidden = round(size * disc.hidden), FFN = 4 * hidden, heads = max(1, hidden // 64), layers = round(layers *
    disc.layers); the embedding width stays the discriminator's because the two share their embeddings. The
    ELECTRA paper (Table 6) uses size 1/4 for Small and Large and 1/3 for Base."""
    hidden = int(round(disc.embed_dim * size))
    return dataclasses.replace(disc, embed_dim=hidden, ffn_dim=4 * hidden, heads=max(1, hidden // 64),
                               layers=int(round(disc.layers * layers)), style="electra")


# ---------------------------------------------------------------------------------------------------- body


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.embedding_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.LayerNorm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.size(1)
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_positions {self.position_embeddings.num_embeddings}")
        types = self.token_type_embeddings.weight[0] if token_type_ids is None else self.token_type_embeddings(
            token_type_ids)
        x = self.word_embeddings(input_ids) + types  # same summation order as transformers
        x = x + self.position_embeddings(torch.arange(T, device=input_ids.device))
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.heads, self.p = cfg.heads, cfg.attention_dropout
        self.query = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.key = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.value = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        if self.training and self.p > 0:  # the decoder's training attention: its dropout masks (models/dropout.py)
            y = dropout_attention(q, k, v, mask, False, self.p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(B, T, C)


class AddNorm(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (BERT's SelfOutput and Output)."""

    def __init__(self, d_in: int, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.embed_dim)
        self.LayerNorm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AddNorm(cfg.embed_dim, cfg)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.ffn_dim, cfg)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))


class Pooler(nn.Module):  # BERT: tanh(dense(h[CLS]))
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class EncoderModel(nn.Module):
    """The body that sits under ``electra.`` / ``bert.``: [B, T] ids -> [B, T, hidden]."""

    def __init__(self, cfg: EncoderConfig, pooler: bool = False):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        if cfg.embedding_size != cfg.embed_dim:
            self.embeddings_project = nn.Linear(cfg.embedding_size, cfg.embed_dim)
        self.encoder = Encoder(cfg)
        if pooler:
            self.pooler = Pooler(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        # [B, 1, 1, T] boolean key mask (True = attend); padded queries still see the real keys, as in BERT.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def init_weights(model: nn.Module, std: float) -> None:
    """transformers' ``_init_weights``: N(0, std) for Linear/Embedding, zero biases and padding rows, LN = 1/0.

    Embeddings go last so a tied output projection cannot overwrite the zeroed padding row."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()


# ---------------------------------------------------------------------------------------------------- heads


class _WithBody(nn.Module):
    """A head over the body stored under the style's prefix (``self.electra`` or ``self.bert``)."""

    def __init__(self, cfg: EncoderConfig, pooler: bool = False):
        super().__init__()
        self.config = cfg
        setattr(self, cfg.style, EncoderModel(cfg, pooler=pooler))

    @property
    def cfg(self) -> EncoderConfig:  # the name the trainer and the other families use
        return self.config

    @property
    def body(self) -> EncoderModel:
        return getattr(self, self.config.style)

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated layers (what activation checkpointing, compile and FSDP apply to)."""
        return self.body.encoder.layer

    def max_positions(self) -> int:
        return self.config.max_positions

    def _require_electra(self):
        if self.config.style != "electra":
            raise EncoderConfigError(f"{type(self).__name__} exists only for style 'electra', not "
                                     f"{self.config.style!r}")


class QAModel(_WithBody):
    """Extractive QA (``*ForQuestionAnswering``): (start_logits, end_logits), each [B, T]."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self.qa_outputs = nn.Linear(cfg.embed_dim, 2)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = self.qa_outputs(self.body(input_ids, attention_mask, token_type_ids))
        return logits[..., 0], logits[..., 1]


class DiscriminatorPredictions(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.dense_prediction = nn.Linear(cfg.embed_dim, 1)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, h):
        return self.dense_prediction(self.act(self.dense(h))).squeeze(-1)


class ElectraDiscriminator(_WithBody):
    """Replaced-token detection (``ElectraForPreTraining``): one logit per token, [B, T] (>0: "replaced")."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self._require_electra()
        self.discriminator_predictions = DiscriminatorPredictions(cfg)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.discriminator_predictions(self.electra(input_ids, attention_mask, token_type_ids))


class GeneratorPredictions(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embedding_size)
        self.LayerNorm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(F.gelu(self.dense(h)))  # always exact GELU, whatever hidden_act says


class ElectraGenerator(_WithBody):
    """Masked LM (``ElectraForMaskedLM``): [B, T, V] logits; the output matrix is the word embedding matrix."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self._require_electra()
        self.generator_predictions = GeneratorPredictions(cfg)
        self.generator_lm_head = nn.Linear(cfg.embedding_size, cfg.vocab_size)
        self.tie_weights()
        init_weights(self, cfg.initializer_range)

    def tie_weights(self):
        """Point the output projection at the (current) word embeddings; call again after swapping them."""
        self.generator_lm_head.weight = self.electra.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None):
        """``positions`` [B, N] (optional): score only those positions (ELECTRA's masked_lm_positions) -> [B, N, V]."""
        h = self.electra(input_ids, attention_mask, token_type_ids)
        if positions is not None:
            h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.size(-1)))
        return self.generator_lm_head(self.generator_predictions(h))


class ElectraClassificationHead(nn.Module):
    """ELECTRA's sentence head: dropout, dense, GELU, dropout, out_proj on the [CLS] state."""

    def __init__(self, cfg: EncoderConfig, num_labels: int, p: float):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.out_proj = nn.Linear(cfg.embed_dim, num_labels)
        self.dropout = Dropout(p)

    def forward(self, h):
        x = self.dropout(F.gelu(self.dense(self.dropout(h[:, 0]))))
        return self.out_proj(x)


class SequenceClassifier(_WithBody):
    """``*ForSequenceClassification``: [B, C] logits. ELECTRA: its two-layer head; BERT: pooler + linear."""

    def __init__(self, cfg: EncoderConfig, num_labels: int = 2):
        super().__init__(cfg, pooler=cfg.style == "bert")
        self.num_labels = num_labels
        p = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        if cfg.style == "electra":
            self.classifier = ElectraClassificationHead(cfg, num_labels, p)
        else:
            self.dropout = Dropout(p)
            self.classifier = nn.Linear(cfg.embed_dim, num_labels)
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.body(input_ids, attention_mask, token_type_ids)
        if self.config.style == "electra":
            return self.classifier(h)
        return self.classifier(self.dropout(self.bert.pooler(h)))


# Head names used by configs, the checkpoint code and the trainer.
HEADS = {"qa": QAModel, "rtd": ElectraDiscriminator, "mlm": ElectraGenerator, "cls": SequenceClassifier}


def build_encoder(cfg: EncoderConfig, head: str = "qa", num_labels: Optional[int] = None) -> nn.Module:
    """One of HEADS by name; ``num_labels`` only for "cls". (Generator + discriminator for ELECTRA pretraining:
    ``models/electra_pretraining.py``, head "pretrain" in the family table.)"""
    if head not in HEADS:
        raise EncoderConfigError(f"unknown encoder head {head!r}; known: {list(HEADS)} or 'pretrain'")
    if head == "cls":
        return SequenceClassifier(cfg, num_labels=2 if num_labels is None else num_labels)
    return HEADS[head](cfg)


def num_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied ones once), as transformers' ``num_parameters`` counts them."""
    return sum(p.numel() for p in model.parameters())


def tie_electra_embeddings(generator: ElectraGenerator, discriminator: ElectraDiscriminator) -> None:
    """Share the whole embedding block (word, position, token-type tables and their LayerNorm) between the
    generator and the discriminator, as google-research/electra does (both read the ``electra/embeddings``
    variable scope); each keeps its own ``embeddings_project``. The generator's output matrix follows."""
    if generator.config.embedding_size != discriminator.config.embedding_size:
        raise EncoderConfigError(f"cannot tie embeddings: generator embedding_size {generator.config.embedding_size}"
                                 f" != discriminator {discriminator.config.embedding_size}")
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.tie_weights()


__all__ = [
    "EncoderConfig", "EncoderConfigError", "config_from_yaml_dict", "generator_config", "EncoderModel", "QAModel",
    "ElectraDiscriminator", "ElectraGenerator", "SequenceClassifier", "HEADS", "build_encoder", "init_weights",
    "num_parameters", "tie_electra_embeddings",
]
