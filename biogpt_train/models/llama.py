"""Llama-family decoder (Llama-2, BioMedGPT-LM-7B): pre-RMSNorm blocks, rotary q/k, SwiGLU MLP, GQA, no biases.

Parameter names are Hugging Face's `LlamaForCausalLM` names (`model.embed_tokens.weight`,
`model.layers.N.self_attn.q_proj.weight`, ..., `model.norm.weight`, `lm_head.weight`), so an HF state dict
loads with `strict=True` and no key mapping. Rotary embeddings use HF's rotate_half layout (first half of each
head's dims paired with the second half), so HF weights load unpermuted. There are no buffers: the rotary
frequencies are recomputed from the config in every forward (cheap), which keeps the state dict equal to HF's
and lets a model built on the meta device be filled by `load_state_dict(assign=True)` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from biogpt_train.models.biogpt import KVCache
from biogpt_train.models.dropout import dropout
from biogpt_train.models.loss import linear_cross_entropy


@dataclass
class LlamaConfig:
    vocab_size: int
    embed_dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn_dim: int
    max_positions: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dropout: float = 0.0  # on the residual branches (Llama itself trains without dropout)
    attention_dropout: float = 0.0
    pad_id: Optional[int] = 0  # informational (data pipeline); the model never looks at it
    tie_embeddings: bool = False
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if (self.embed_dim // self.heads) % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {self.embed_dim // self.heads}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads


def config_from_yaml_dict(d: dict, vocab_size: Optional[int] = None) -> LlamaConfig:
    """A LlamaConfig from a `conf/model/*.yaml` mapping; `family`/`arch` are ignored, `vocab_size` overrides."""
    d = {k: v for k, v in dict(d).items() if k not in ("family", "arch")}
    known = {f.name for f in fields(LlamaConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown Llama model keys {unknown}; known: {sorted(known)}")
    if vocab_size is not None:
        d["vocab_size"] = vocab_size
    if "vocab_size" not in d:
        raise ValueError("Llama model config has no vocab_size: pass vocab_size= (e.g. the tokenizer's size)")
    return LlamaConfig(**d)


# --- building blocks -------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in float32 and cast back before the weight (as HF does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin [B, T, head_dim] for integer positions [B, T]; angles in float32, then cast (HF's order)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    angles = positions[..., None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)  # dim i and i + head_dim/2 share a frequency
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.dropout = cfg.attention_dropout
        self.q_proj = nn.Linear(cfg.embed_dim, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.embed_dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.embed_dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.embed_dim, bias=False)

    def forward(self, x, cos, sin, attn_mask, is_causal, cache, layer):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:  # the cache stores rotated keys, so cached positions never need re-rotating
            k, v = cache.update(layer, k, v)
        # enable_gqa: query head h reads kv head h // (heads / kv_heads), HF's repeat_kv grouping
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.embed_dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.embed_dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.embed_dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + Attn(RMSNorm(x)), then h + MLP(RMSNorm(h))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, attn_mask, is_causal, cache, layer):
        h = self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, is_causal, cache, layer)
        x = x + dropout(h, self.dropout, self.training)
        h = self.mlp(self.post_attention_layernorm(x))
        return x + dropout(h, self.dropout, self.training)


class LlamaModel(nn.Module):
    """The body; attribute names give HF's `model.*` keys."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)


# --- the language model ----------------------------------------------------------------------------------------
class Llama(nn.Module):
    """`model(tokens, attention_mask=None, cache=None) -> logits [B, T, V]`."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = replace(cfg)  # own copy: resize_vocab updates it
        self.model = LlamaModel(self.cfg)
        self.lm_head = nn.Linear(cfg.embed_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self):
        """HF's init: every Linear and the embedding N(0, initializer_range), RMSNorm weights 1."""
        std = self.cfg.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def forward(self, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, *, target: Optional[torch.Tensor] = None,
                ignore_index: Optional[int] = None) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V].

        With `target` [B, T]: the summed cross-entropy over targets other than `ignore_index` (default cfg.pad_id),
        the training loss, with lm_head fused in row chunks (biogpt_train.models.loss): no [B, T, V] logits.

        attention_mask [B, S] (1 = real token, 0 = pad; S = cache.length + T with a cache, else T) hides padded
        keys and gives positions cumsum(mask) - 1, as HF generate computes them: this handles right padding
        (positions 0..n-1 as without a mask) and left padding alike. Without a mask, positions run on from
        cache.length. Outputs at pad positions are meaningless (each pad query only sees itself).
        """
        B, T = tokens.shape
        start = 0 if cache is None else cache.length
        end = start + T
        if end > self.cfg.max_positions:  # checked on shapes, so no device sync
            raise ValueError(f"{end} positions exceed max_positions={self.cfg.max_positions}")
        if cache is not None and end > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; cannot append {T} after {start}")
        device = tokens.device
        attn_mask, is_causal = None, False
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, end):
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, end)} "
                                 f"(batch, cached + new positions)")
            keep = attention_mask.bool()
            positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, start:]
            q_pos = torch.arange(start, end, device=device)[:, None]
            k_pos = torch.arange(end, device=device)[None, :]
            # causal and not a pad key; a query always sees itself so no row is all -inf (no NaN at pads)
            attn_mask = ((k_pos <= q_pos) & keep[:, None, None, :]) | (k_pos == q_pos)  # [B, 1, T, end]
        else:
            positions = torch.arange(start, end, device=device).expand(B, T)
            if cache is None or start == 0:
                is_causal = T > 1
            elif T > 1:  # new queries see every cached key plus the causal part of the new block
                attn_mask = torch.ones(T, end, dtype=torch.bool, device=device).tril(diagonal=start)

        x = self.model.embed_tokens(tokens)
        cos, sin = rotary_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        x = dropout(x, self.cfg.dropout, self.training)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, attn_mask, is_causal, cache, i)
        if cache is not None:
            cache.length = end
        x = self.model.norm(x)
        if target is None:
            return self.lm_head(x)
        ignore = self.cfg.pad_id if ignore_index is None else ignore_index
        ignore = -100 if ignore is None else ignore  # no pad id: every target counts
        if type(self.lm_head) is nn.Linear:
            return linear_cross_entropy(x, self.lm_head.weight, target, ignore)
        # an adapter (LoRA) wraps the head: its own forward, then the plain fp32 loss
        return F.cross_entropy(self.lm_head(x).float().flatten(0, 1), target.flatten(), ignore_index=ignore,
                               reduction="sum")

    # --- utilities -------------------------------------------------------------------------------------------
    def make_cache(self, batch_size: int, max_len: int, dtype: Optional[torch.dtype] = None) -> KVCache:
        """An empty KV cache (kv_heads per layer) for `batch_size` sequences of up to `max_len` positions."""
        w = self.model.embed_tokens.weight
        return KVCache(self.cfg.layers, batch_size, self.cfg.kv_heads, max_len, self.cfg.head_dim,
                       w.device, dtype or w.dtype)

    def resize_vocab(self, new_size: int, init: str = "normal") -> None:
        """Grow the embedding and lm_head to `new_size` rows (old rows kept; new ones N(0, initializer_range) or
        zeros). Both become new Parameters: build the optimizer afterwards."""
        old_emb, old_head = self.model.embed_tokens.weight, self.lm_head.weight
        old_size = old_emb.size(0)
        if new_size < old_size:
            raise ValueError(f"resize_vocab only grows the vocabulary: {old_size} -> {new_size}")
        if init not in ("normal", "zeros"):
            raise ValueError(f"init must be 'normal' or 'zeros', not {init!r}")

        def grown(old):
            new = old.new_empty(new_size, old.size(1))
            with torch.no_grad():
                new[:old_size] = old
                if init == "normal":
                    nn.init.normal_(new[old_size:], mean=0.0, std=self.cfg.initializer_range)
                else:
                    nn.init.zeros_(new[old_size:])
            return nn.Parameter(new, requires_grad=old.requires_grad)

        self.model.embed_tokens = nn.Embedding(new_size, self.cfg.embed_dim, device="meta")
        self.model.embed_tokens.weight = grown(old_emb)
        self.lm_head = nn.Linear(self.cfg.embed_dim, new_size, bias=False, device="meta")
        self.lm_head.weight = self.model.embed_tokens.weight if self.cfg.tie_embeddings else grown(old_head)
        self.cfg.vocab_size = new_size

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated layers (what activation checkpointing, compile and FSDP apply to)."""
        return self.model.layers

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied lm_head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def max_positions(self) -> int:
        return self.cfg.max_positions
