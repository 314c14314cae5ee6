"""Causal self-attention with dropout for fp32 training on CPU, in blocks of query rows.

The plain formulation (models/biogpt.py: dropout_attention) computes every [T, T] score and multiplies the masked
upper triangle too. Here the queries go in blocks of QUERY_BLOCK rows, each against the keys up to its last row:
at T = 512 the blocks skip 3/8 of the attention matmuls, softmax and dropout work.
Forward and backward are written out (an autograd Function) so each product takes MKL's faster layout: the key
and value gradients are computed transposed, (dO^T Pd)^T and (q^T dS)^T, 4 ms instead of 7 ms for the small
preset's [32, 512, 512] x [32, 512, 64] (same bits), and no [B, H, T, T] copy is made in backward.

The operations per element are the plain path's: scores plus the 0 / -inf bias, softmax, dropout noise from
models/dropout.py's keep_noise, torch's softmax backward. With T <= QUERY_BLOCK the results are the plain path's bit
for bit (the same masks too). With more blocks the matmuls' reduction lengths change (fp32 rounding, ~1e-7
relative) and, with the default numpy masks, each block draws the noise of its own rows and visible keys (3/8
fewer random numbers at T = 512: ~12 ms of numpy per layer is the largest non-matmul cost here): other masks than
the plain path's for the same seed, the same distribution, still a function of torch's RNG state. With
`trainer.cpu_dropout_masks=torch` the masks are F.dropout's for [B, H, T, T], as on the plain path
(docs/FIDELITY.md #23).
One layer of the small preset (4 x 8 heads x 512 x 64, p = 0.1), forward + backward, 2 threads: plain path 79 ms,
written out in one block 74 ms, blocks of 256 rows 61 ms, of 128 rows 56 ms, of 64 rows 56 ms (noise for all of
[T, T]); 128 rows with noise for the visible keys only: 52 ms (measured).
bf16 gains nothing (its matmuls are cheap, and gradient sums over blocks would round to bf16): not used there.
"""

from __future__ import annotations

import torch

from biogpt_train.models.dropout import keep_noise, numpy_masks

QUERY_BLOCK = 128  # rows per block (measured above; 256 rows gave the unblocked bits at T = 512 here, 10% slower)


def applies(q: torch.Tensor, k: torch.Tensor, attn_mask, is_causal: bool, p: float) -> bool:
    """Whether `blocked_causal_attention` serves this call: fp32 on CPU, causal self-attention without a key mask,
    outside autocast and compiled code, 0 < p < 1."""
    return (is_causal and attn_mask is None and q.dtype == torch.float32 and q.device.type == "cpu"
            and q.size(-2) == k.size(-2) and 0 < p < 1 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def _block_noise(B: int, H: int, T: int, p: float, like: torch.Tensor) -> list[torch.Tensor]:
    """Each block's dropout noise [B * H, rows, visible keys]. numpy masks (default): drawn for the visible keys
    only, in one keep_noise call (one draw of torch's generator, blocks filled in parallel); with one block these
    are the masks dropout(probs) draws for [B, H, T, T]. `trainer.cpu_dropout_masks=torch`: F.dropout's noise for
    all of [B, H, T, T] (the same draws), sliced: the plain path's masks."""
    if numpy_masks(like, p):
        sizes = [B * H * (e - a) * e for a, e in _blocks(T)]
        noise = keep_noise(sum(sizes), p, like.dtype).split(sizes)
        return [n.view(B * H, e - a, e) for n, (a, e) in zip(noise, _blocks(T))]
    full = like.new_empty(B * H, T, T).bernoulli_(1 - p).div_(1 - p)  # torch's _dropout_impl noise
    return [full[:, a:e, :e] for a, e in _blocks(T)]


def _blocks(T: int):
    for a in range(0, T, QUERY_BLOCK):
        yield a, min(T, a + QUERY_BLOCK)  # queries a:e see keys :e


class _BlockedCausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, p: float):
        B, H, T, hd = q.shape
        scale = hd**-0.5
        qs = (q * scale).reshape(B * H, T, hd)  # fairseq scales q before the product
        kk, vv = k.reshape(B * H, T, hd), v.reshape(B * H, T, hd)
        # the causal mask as a 0 / -inf bias, added only where a block has masked keys: its last n keys (x + 0 == x:
        # the bits of masked_fill and of baddbmm with the whole bias, which first copies the bias over the scores)
        bias = torch.full((QUERY_BLOCK, QUERY_BLOCK), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        out = torch.empty(B * H, T, hd, dtype=q.dtype, device=q.device)
        saved = []
        for (a, e), noise in zip(_blocks(T), _block_noise(B, H, T, p, q)):
            scores = torch.bmm(qs[:, a:e], kk[:, :e].transpose(1, 2))
            scores[:, :, a:e] += bias[:e - a, :e - a]
            probs = torch.softmax(scores, dim=-1)
            dropped = probs * noise
            out[:, a:e] = torch.bmm(dropped, vv[:, :e])
            saved += [probs, noise, dropped]
        ctx.save_for_backward(qs, kk, vv, *saved)  # (intermediates too: activation checkpointing sees them)
        ctx.scale = scale
        return out.view(B, H, T, hd)

    @staticmethod
    def backward(ctx, grad_out):
        qs, kk, vv, *saved = ctx.saved_tensors
        B, H, T, hd = grad_out.shape
        d_out = grad_out.reshape(B * H, T, hd)
        dq = torch.empty_like(qs)
        dk_t = qs.new_zeros(B * H, hd, T)  # key and value gradients, transposed: MKL's faster layout
        dv_t = qs.new_zeros(B * H, hd, T)
        for (a, e), probs, noise, dropped in zip(_blocks(T), saved[0::3], saved[1::3], saved[2::3]):
            d_rows = d_out[:, a:e]
            dv_t[:, :, :e].baddbmm_(d_rows.transpose(1, 2), dropped)
            d_probs = torch.bmm(d_rows, vv[:, :e].transpose(1, 2)).mul_(noise)
            d_scores = torch._softmax_backward_data(d_probs, probs, -1, probs.dtype)
            dq[:, a:e] = torch.bmm(d_scores, kk[:, :e])
            dk_t[:, :, :e].baddbmm_(qs[:, a:e].transpose(1, 2), d_scores)
        dq.mul_(ctx.scale)
        dk, dv = (g.transpose(1, 2).view(B, H, T, hd) for g in (dk_t, dv_t))
        return dq.view(B, H, T, hd), dk, dv, None


def blocked_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + causal mask) with dropout p, times v, for q, k, v [B, H, T, hd] (see `applies`)."""
    return _BlockedCausalAttention.apply(q, k, v, p)
