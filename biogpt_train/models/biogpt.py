"""The BioGPT decoder: fairseq's `transformer_lm` with BioGPT's settings (reference §1).

Pre-LN blocks, a final LayerNorm, token embeddings scaled by sqrt(d), learned positions offset by
padding_idx + 1 = 2, exact (erf) GELU, separate q/k/v/out projections with biases, tied output projection.
Parameter names are fairseq's `decoder.*`, so a released `checkpoint.pt` loads with `strict=True`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from biogpt_train.models import causal_attention
from biogpt_train.models.dropout import dropout
from biogpt_train.models.loss import linear_cross_entropy, tied_embedding


@dataclass
class ModelConfig:
    vocab_size: int
    embed_dim: int
    layers: int
    heads: int
    ffn_dim: int
    max_positions: int
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    padding_idx: int = 1

    def __post_init__(self):
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")


def make_positions(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq `utils.make_positions`: real tokens get padding_idx+1, +2, ...; pads get padding_idx."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


def fairseq_embedding_weight(num_embeddings: int, embed_dim: int, padding_idx: int, seed: int) -> torch.Tensor:
    """The token embedding fairseq-train builds for ``seed`` (CPU, fp32), with the caller's RNG left untouched.

    fairseq-train seeds (``utils.set_torch_seed(seed)``), sets up the task (no random draws), then
    ``TransformerLanguageModel.build_embedding`` is the first draw: ``Embedding(len(dict), d, pad)`` =
    ``nn.Embedding`` (whose own init draws N(0, 1)), then ``normal_(0, d^-0.5)`` over it (the second draw, the values
    kept), pad row zeroed. BioGPT's ``load_state_dict`` then keeps rows ``[len(pretrained dict):]`` of this tensor
    for learned1..N (``transformer_lm_prompt.py``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        emb = nn.Embedding(num_embeddings, embed_dim, padding_idx=padding_idx)
        nn.init.normal_(emb.weight, mean=0.0, std=embed_dim**-0.5)
        nn.init.constant_(emb.weight[padding_idx], 0.0)
    return emb.weight.detach()


def attention_mask(tokens: torch.Tensor, start: int = 0, pad: int | None = None):
    """The one mask rule for cached and uncached forwards: (attn_mask, is_causal) for SDPA.

    Query i (absolute position start + i) sees keys 0..start + i. With `pad`, keys that are pads in `tokens`
    are hidden too, except the query itself, so a row whose keys are all pads gives no NaN (only outputs at pad
    positions change, and those are ignored). Built from shapes only: no host sync, no data-dependent branch.
    """
    T = tokens.size(1)
    if pad is None and (start == 0 or T == 1):
        return None, start == 0 and T > 1  # plain causal (or one new token that sees the whole cache)
    device = tokens.device
    keys = torch.arange(start + T, device=device)
    queries = torch.arange(start, start + T, device=device)[:, None]
    visible = keys <= queries  # [T, start + T]
    if pad is not None:  # only without a cache: cached keys never hold pads
        visible = (visible & tokens.ne(pad)[:, None, None, :]) | (keys == queries)  # [B, 1, T, T]
    return visible, False


def dropout_attention(q, k, v, attn_mask, is_causal: bool, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) with dropout p, times v: fairseq's training attention.

    GPUs: SDPA, whose flash / memory-efficient kernels draw the dropout inside the kernel (no [B, H, T, T] tensor).
    CPU: SDPA's math fallback (its only path with dropout there) adds "safe softmax" passes (isneginf/all/where),
    builds the causal mask each call and draws torch's serial masks; here a plain softmax (exact: every query keeps
    a key, its own under the causal mask, a real token under the encoders' key-pad mask) and models/dropout.py.
    fp32 causal self-attention goes to models/causal_attention.py (query blocks that skip masked keys: 79 -> 52 ms
    per small-preset layer); in bf16 the blocks did not pay (measured), so this path stays.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=p)
    if causal_attention.applies(q, k, attn_mask, is_causal, p):  # fp32: query blocks skip masked keys
        return causal_attention.blocked_causal_attention(q, k, v, p)
    B, H, T, hd = q.shape
    S = k.size(-2)
    q = q * hd**-0.5
    if is_causal:
        # the causal mask as a 0 / -inf bias added inside the matmul: the same bits as masked_fill (x + 0 == x), and
        # neither forward nor backward makes a masking pass over [B, H, T, S] (fwd + bwd per layer, small 4 x 512:
        # bf16 55 -> 49 ms, fp32 101 -> 89 ms, measured)
        bias = torch.full((T, S), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        scores = torch.baddbmm(bias, q.reshape(B * H, T, hd), k.reshape(B * H, S, hd).transpose(1, 2))
        scores = scores.view(B, H, T, S)
    else:
        scores = torch.matmul(q, k.transpose(-1, -2))
        if attn_mask is not None:
            scores = scores.masked_fill_(~attn_mask, float("-inf"))
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, True), v)


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated to `max_len` positions.

    Stored position-major per row, [layers, batch, max_len, heads, head_dim], and handed to attention as the
    [batch, heads, length, head_dim] view: one row's filled positions are then one contiguous block, so a beam
    reorder copies whole blocks (SDPA reads strided keys with the same results). A second buffer of the same
    shape is allocated on the first reorder: rows are gathered from one into the other (one pass, no temporary)
    and the two swap.
    """

    def __init__(self, layers, batch_size, heads, max_len, head_dim, device=None, dtype=None):
        shape = (layers, batch_size, max_len, heads, head_dim)
        self._k = torch.zeros(shape, device=device, dtype=dtype)
        self._v = torch.zeros(shape, device=device, dtype=dtype)
        self._spare = None  # (k, v) buffers a reorder writes into
        self._same = 0  # positions before this hold equal values in both buffers, row for row
        self.batch_size = batch_size  # rows in use (the buffers may hold more after a reorder shrank the batch)
        self.length = 0  # number of positions already stored

    @property
    def max_len(self) -> int:
        return self._k.size(2)

    @property
    def k(self) -> torch.Tensor:
        """All keys [layers, batch, heads, max_len, head_dim] (a view)."""
        return self._k[:, : self.batch_size].transpose(2, 3)

    @property
    def v(self) -> torch.Tensor:
        return self._v[:, : self.batch_size].transpose(2, 3)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v [B, H, t, hd] after the cached positions; return all keys and values so far (views)."""
        end = self.length + k.size(2)
        self._k[layer, : self.batch_size, self.length : end].copy_(k.transpose(1, 2))  # [B, t, H, hd]
        self._v[layer, : self.batch_size, self.length : end].copy_(v.transpose(1, 2))
        return (self._k[layer, : self.batch_size, :end].transpose(1, 2),
                self._v[layer, : self.batch_size, :end].transpose(1, 2))

    def reorder(self, index: torch.Tensor, start: int = 0):
        """Row r becomes old row ``index[r]`` (beam search keeps/duplicates rows; the batch may change size).

        Only the filled positions ``start:length`` are copied: the caller promises that positions before
        ``start`` already hold equal values in row r and row index[r] (e.g. a prefix every beam of a sentence
        shares). Copying the whole preallocated buffer at every beam step would cost max_len/length times more.
        """
        if not 0 <= start <= self.length:
            raise ValueError(f"KVCache.reorder: start={start} must be within the {self.length} filled positions")
        index = index.to(self._k.device)
        n = index.numel()
        if self._spare is None or self._spare[0].size(1) < n:
            shape = (self._k.size(0), max(n, self._k.size(1)), *self._k.shape[2:])
            self._spare = (self._k.new_zeros(shape), self._v.new_zeros(shape))
            self._same = 0
        # the target buffer's positions before `_same` equal this buffer's row for row, so (by the promise) they
        # already hold index[r]'s values; afterwards both buffers agree before `start`
        span = slice(min(start, self._same), self.length)
        for src, dst in zip((self._k, self._v), self._spare):
            torch.index_select(src[:, : self.batch_size, span], 1, index, out=dst[:, :n, span])
        self._spare, (self._k, self._v) = (self._k, self._v), self._spare
        self.batch_size, self._same = n, start


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.heads
        self.dropout = cfg.attention_dropout
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, attn_mask=None, is_causal=False, cache=None, layer=0):
        B, T, d = x.shape
        # [B, T, d] -> [B, H, T, hd]; SDPA scales q by hd^-0.5 as fairseq does
        q, k, v = (p(x).view(B, T, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if self.training and self.dropout > 0:
            y = dropout_attention(q, k, v, attn_mask, is_causal, self.dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, d))


class DecoderLayer(nn.Module):
    """Pre-LN block: x + Drop(Attn(LN(x))), then h + Drop(fc2(ActDrop(GELU(fc1(LN(h))))))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-5)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-5)
        self.dropout = cfg.dropout
        self.activation_dropout = cfg.activation_dropout

    def forward(self, x, attn_mask=None, is_causal=False, cache=None, layer=0):
        h = self.self_attn(self.self_attn_layer_norm(x), attn_mask, is_causal, cache, layer)
        x = x + dropout(h, self.dropout, self.training)
        h = F.gelu(self.fc1(self.final_layer_norm(x)))  # exact erf GELU, fairseq's "gelu"
        h = self.fc2(dropout(h, self.activation_dropout, self.training))
        return x + dropout(h, self.dropout, self.training)


class Decoder(nn.Module):
    """fairseq `TransformerDecoder` without encoder attention; attribute names give the `decoder.*` keys."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.embed_dim
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.padding_idx)
        # rows = max_positions + padding_idx + 1, because positions start at padding_idx + 1
        self.embed_positions = nn.Embedding(cfg.max_positions + cfg.padding_idx + 1, d, padding_idx=cfg.padding_idx)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(d, eps=1e-5)
        self.output_projection = nn.Linear(d, cfg.vocab_size, bias=False)
        self.output_projection.weight = self.embed_tokens.weight  # tied: one Parameter
        # fairseq keeps this buffer in every decoder state dict; having it makes strict loading work
        self.register_buffer("version", torch.Tensor([3]))


class TransformerLM(nn.Module):
    """BioGPT language model: `model(tokens) -> logits`; parameters live under `model.decoder` (fairseq names)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = replace(cfg)  # own copy: resize_vocab updates it
        self.decoder = Decoder(self.cfg)
        self.reset_parameters()

    # --- initialisation (reference §1.3) -----------------------------------------------------------------
    def reset_parameters(self):
        d, pad = self.cfg.embed_dim, self.cfg.padding_idx
        for emb in (self.decoder.embed_tokens, self.decoder.embed_positions):
            nn.init.normal_(emb.weight, mean=0.0, std=d**-0.5)
            nn.init.zeros_(emb.weight[pad])
        for layer in self.decoder.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
            nn.init.xavier_uniform_(attn.out_proj.weight)
            nn.init.zeros_(attn.out_proj.bias)
            # q/k/v biases, fc1, fc2 and LayerNorms keep PyTorch's default init, as in fairseq

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, *, pad_mask: bool = True,
                features_only: bool = False, target: torch.Tensor | None = None,
                ignore_index: int | None = None) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] (or the final-LayerNorm features [B, T, d] with `features_only`).

        With `target` [B, T]: the summed cross-entropy over targets other than `ignore_index` (default: the pad)
        (fairseq's training loss), computed
        with the output projection in row chunks (biogpt_train.models.loss) so no [B, T, V] logits exist at once.
        Inside forward so that DDP and FSDP (which unshards the tied weight only during forward) run it alike.

        With `cache`, tokens (no pads) are appended after cache.length. `pad_mask=False` promises that no pad
        precedes a real token (right padding, as every training batch here): real positions then see no pad under
        the causal mask alone, so SDPA runs its causal kernel; outputs at real positions are the same.
        No host sync and no data-dependent branch: the whole forward compiles as one graph.
        """
        dec, pad = self.decoder, self.cfg.padding_idx
        B, T = tokens.shape
        start = 0 if cache is None else cache.length
        if start + T > self.cfg.max_positions:  # checked on shapes, so no device sync
            raise ValueError(f"{start + T} positions exceed max_positions={self.cfg.max_positions}")
        if cache is None:
            positions = make_positions(tokens, pad)
        else:
            if start + T > cache.max_len:
                raise ValueError(f"KV cache holds {cache.max_len} positions; cannot append {T} after {start}")
            positions = torch.arange(start + pad + 1, start + pad + 1 + T, device=tokens.device).expand(B, T)
        attn_mask, is_causal = attention_mask(tokens, start, pad if pad_mask and cache is None else None)

        w = dec.embed_tokens.weight
        # CPU training loss: the lookup and the loss share the tied weight's gradient (models/loss.py tied_embedding)
        tied = {} if (target is not None and cache is None and w is dec.output_projection.weight and w.requires_grad
                      and torch.is_grad_enabled() and w.device.type == "cpu"
                      and not torch.compiler.is_compiling()) else None
        emb = dec.embed_tokens(tokens) if tied is None else tied_embedding(tokens, w, pad, tied)
        x = dec.embed_scale * emb + dec.embed_positions(positions)
        x = dropout(x, self.cfg.dropout, self.training)
        for i, layer in enumerate(dec.layers):
            x = layer(x, attn_mask, is_causal, cache, i)
        x = dec.layer_norm(x)
        if cache is not None:
            cache.length += T
        if target is not None:
            return linear_cross_entropy(x, dec.output_projection.weight, target,
                                        pad if ignore_index is None else ignore_index, tied=tied)
        return x if features_only else dec.output_projection(x)

    # --- utilities ---------------------------------------------------------------------------------------
    def make_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` positions (same device as the model)."""
        w = self.decoder.embed_tokens.weight
        head_dim = self.cfg.embed_dim // self.cfg.heads
        return KVCache(self.cfg.layers, batch_size, self.cfg.heads, max_len, head_dim, w.device, dtype or w.dtype)

    def resize_vocab(self, new_size: int, init: str = "normal", seed: int | None = None) -> None:
        """Grow the (tied) embedding to `new_size` rows, e.g. for learned prompt tokens learned1..N.

        Old rows are kept. New rows: ``fairseq`` = exactly the rows fairseq-train gives them for ``seed``
        (`fairseq_embedding_weight`, reference §2.5); ``normal`` = N(0, d^-0.5) from the current RNG; ``zeros``.
        The embedding becomes a new Parameter: build the optimizer afterwards.
        """
        old = self.decoder.embed_tokens
        if new_size < old.num_embeddings:
            raise ValueError(f"resize_vocab only grows the vocabulary: {old.num_embeddings} -> {new_size}")
        if init not in ("fairseq", "normal", "zeros"):
            raise ValueError(f"init must be 'fairseq', 'normal' or 'zeros', not {init!r}")
        if init == "fairseq" and seed is None:
            raise ValueError("resize_vocab(init='fairseq') needs the training seed")
        new = nn.Embedding(new_size, self.cfg.embed_dim, padding_idx=self.cfg.padding_idx,
                           device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            rows = new.weight[old.num_embeddings:]
            if init == "fairseq":
                fresh = fairseq_embedding_weight(new_size, self.cfg.embed_dim, self.cfg.padding_idx, seed)
                rows.copy_(fresh[old.num_embeddings:])
            elif init == "normal":
                nn.init.normal_(rows, mean=0.0, std=self.cfg.embed_dim**-0.5)
            else:
                nn.init.zeros_(rows)
            new.weight[: old.num_embeddings] = old.weight
        new.weight.requires_grad_(old.weight.requires_grad)
        self.decoder.embed_tokens = new
        self.decoder.output_projection = nn.Linear(self.cfg.embed_dim, new_size, bias=False,
                                                   device=old.weight.device, dtype=old.weight.dtype)
        self.decoder.output_projection.weight = new.weight
        self.cfg.vocab_size = new_size

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated layers (what activation checkpointing, compile and FSDP apply to)."""
        return self.decoder.layers

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied output projection counts once)."""
        return sum(p.numel() for p in self.parameters())

    def max_positions(self) -> int:
        return self.cfg.max_positions
