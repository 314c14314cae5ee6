"""Summed token cross-entropy fused with the output projection, in row chunks (no [N, V] logits at once).

fairseq's loss is `sum over non-pad targets of -log_softmax(h W^T)[target]` in fp32. Materialising the logits,
their log-softmax and its gradient costs 3 x N x V x 4 bytes (N = tokens per batch, V = 42,384: 1 GiB for 2,048
tokens) of memory traffic and peak memory. Here each chunk of rows computes its logits, its loss and, right away,
its gradients (softmax - onehot), so backward only scales the saved gradients by the incoming scalar. The matmuls
run in `compute_dtype` (bf16 under autocast, as autocast would run them); the log-softmax and the sum are fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# rows per chunk: 256 MiB of [rows, V] logits. Smaller chunks were slower on CPU in bf16; there the fp32 softmax
# runs in row blocks, so bf16 chunks hold 2x the rows in the same memory (small preset 4 x 512 in one chunk instead
# of two: 0.50 -> 0.41 s for the projection + CE with gradients, measured; fp32 one chunk: no gain)
DEFAULT_CHUNK_BYTES = 1 << 28
# rows per block of the CPU softmax (32 x 42,384 fp32 = 5.4 MB; bf16: 4 to 64 rows within 15%; fp32 8 / 32 / 128 rows:
# 24 / 28 / 32 ms per 1,024-row chunk, measured)
SOFTMAX_BLOCK_ROWS = 32


def _log_softmax_target(logits: torch.Tensor, t: torch.Tensor, want_p: bool):
    """(log p[target] in fp32 [n, 1], p = softmax in logits' dtype or None) for logits [n, V], target [n, 1].

    fairseq's (and F.cross_entropy's) formula: the fp32 log-softmax, the target's entry read off it. p is
    exp(log-softmax) taken in place, as log_softmax_backward computes it, then cast to the logits' dtype.
    On CPU the rows go in blocks small enough to stay in a core's L2 cache, and p overwrites the logits: the same
    operations on every row (bitwise the same result, tested), but the intermediates never go to memory. fp32
    logits are log-softmaxed and exponentiated in place (1,024 x 42,384: 41 -> 24-28 ms); bf16 ones through an fp32
    block (116 -> 51 ms). GPUs do not need blocks: one pass over the whole chunk.
    """
    if logits.device.type != "cpu":  # GPUs: one kernel per pass, no blocks
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
        logp_t = logp.gather(1, t)
        return logp_t, (logp.exp_().to(logits.dtype) if want_p else None)
    logp_t = torch.empty(t.shape, dtype=torch.float32, device=logits.device)
    in_place = logits.dtype == torch.float32
    for r in range(0, logits.size(0), SOFTMAX_BLOCK_ROWS):
        block = logits[r:r + SOFTMAX_BLOCK_ROWS]
        if in_place:
            logp = torch.log_softmax(block, dim=-1, out=block)
        else:
            logp = torch.log_softmax(block, dim=-1, dtype=torch.float32)
        torch.gather(logp, 1, t[r:r + SOFTMAX_BLOCK_ROWS], out=logp_t[r:r + SOFTMAX_BLOCK_ROWS])
        if want_p:
            logp.exp_()
            if not in_place:
                block.copy_(logp)
    return logp_t, (logits if want_p else None)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, target, ignore_index: int, chunk_rows: int, compute_dtype, grad_enabled: bool,
                tied: dict | None):
        w = weight.detach().to(compute_dtype)
        hc = h.detach().to(compute_dtype)
        needs_h = grad_enabled and ctx.needs_input_grad[0]
        needs_w = grad_enabled and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hc) if needs_h else None
        grad_w = None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        rows = torch.arange(min(chunk_rows, hc.size(0)), device=h.device)
        for start in range(0, hc.size(0), chunk_rows):
            x, t = hc[start:start + chunk_rows], target[start:start + chunk_rows]
            logits = torch.mm(x, w.t())
            valid = t.ne(ignore_index)
            t = t.masked_fill(~valid, 0)[:, None]
            logp_t, g = _log_softmax_target(logits, t, want_p=needs_h or needs_w)
            del logits
            loss -= torch.where(valid[:, None], logp_t, 0.0).sum()
            if g is None:
                continue
            # d loss / d logits = p - onehot(target) on valid rows. The row mask is applied to the [n, d] operands
            # of the two matmuls rather than to the [n, V] gradient (one pass less over it). The target entry is
            # computed in fp32. Indexed assignment, not scatter_: CPU scatter_ on bf16 copies the whole [n, V]
            # tensor twice (38 ms per 1,024-row chunk, measured; fp32 does not).
            g[rows[:t.size(0)], t[:, 0]] = (logp_t[:, 0].exp() - 1.0).to(g.dtype)
            keep = valid[:, None].to(compute_dtype)
            if needs_h:
                torch.mul(torch.mm(g, w), keep, out=grad_h[start:start + chunk_rows])
            if needs_w:
                if grad_w is None:  # first chunk: no zero-filled accumulator
                    grad_w = torch.mm(g.t(), x * keep)
                elif grad_w.dtype == torch.float32 and compute_dtype == torch.float32:
                    grad_w.addmm_(g.t(), x * keep)
                else:  # low precision: sum the chunks in fp32
                    grad_w = grad_w.float().add_(torch.mm(g.t(), x * keep))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, weight.dtype)
        ctx.tied = tied
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        # the trainer's summed loss gets d loss = 1.0: x * 1.0 == x, so on CPU (where reading it costs no sync) the
        # pass over the [V, d] weight gradient is skipped (9 ms per small-preset update, measured)
        one = grad_loss.device.type == "cpu" and grad_loss.item() == 1.0

        def scaled(g, dtype):
            # cast to the input's dtype, then scale (a mixed-dtype mul with out= takes TensorIterator's slow casting
            # loop: 5x slower on CPU for the [V, d] weight gradient, measured); the saved tensor itself is never
            # scaled in place, so a retained graph can run backward again
            cast = g.to(dtype)
            if one:
                return cast
            return cast.mul_(grad_loss) if cast is not g else cast * grad_loss

        grad_h = None if grad_h is None else scaled(grad_h, h_dtype)
        grad_w = None if grad_w is None else scaled(grad_w, w_dtype)
        if ctx.tied is not None and grad_w is not None:  # handed to tied_embedding's backward, which runs later
            ctx.tied["grad_weight"], grad_w = grad_w, None
        return grad_h, grad_w, None, None, None, None, None, None


class _TiedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, tokens, padding_idx: int, tied: dict):
        ctx.save_for_backward(tokens)
        ctx.padding_idx, ctx.tied, ctx.num_weights = padding_idx, tied, weight.size(0)
        return F.embedding(tokens, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad):
        (tokens,) = ctx.saved_tensors
        rows, grad = tokens.reshape(-1), grad.reshape(-1, grad.size(-1))
        grad_w = ctx.tied.pop("grad_weight", None)
        if grad_w is None:  # the loss was not differentiated: the embedding's own gradient alone
            grad_w = grad.new_zeros(ctx.num_weights, grad.size(1))
        real = rows != ctx.padding_idx  # as F.embedding's backward, the pad row gets nothing
        rows, grad = rows[real], grad[real]
        # each token's rows summed in sequence order from zero, as embedding_dense_backward sums them, then added
        # once: the values of (loss gradient + dense embedding gradient) without the two [V, d] passes
        unique, inverse = torch.unique(rows, return_inverse=True)
        sums = grad.new_zeros(unique.numel(), grad.size(1)).index_add_(0, inverse, grad)
        return grad_w.index_add_(0, unique, sums), None, None, None


def tied_embedding(tokens: torch.Tensor, weight: torch.Tensor, padding_idx: int, tied: dict) -> torch.Tensor:
    """F.embedding(tokens, weight, padding_idx) for a weight that `linear_cross_entropy(..., tied=tied)` also
    projects with (BioGPT's tied embedding / output projection), in the same forward.

    Its gradient is the same sum autograd forms (the loss's [V, d] weight gradient plus the lookup's), but the
    loss hands its gradient over and the lookup adds only the rows of the tokens it saw: no zero-filled [V, d]
    embedding gradient and no [V, d] addition (small preset, fp32, CPU: ~9 ms of a ~2 s update, profiled in round7.md).
    The values are the same (tested); a -0.0 entry of the loss gradient keeps its sign where autograd's
    addition would give +0.0. The loss's backward runs first (the lookup feeds everything the loss sees).
    With d loss = 1 (the trainer's) the handed gradient is the loss's saved tensor, added to in place: a second
    backward through a retained graph then fails with autograd's "modified by an inplace operation" error instead
    of reusing a changed tensor (with any other incoming gradient it runs and gives the same gradients; tested).
    """
    return _TiedEmbedding.apply(weight, tokens, padding_idx, tied)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int,
                         chunk_logits: int | None = None, tied: dict | None = None) -> torch.Tensor:
    """sum(cross_entropy(h @ weight.T, target, ignore_index)) for h [..., d], weight [V, d], target [...].

    Equals `F.cross_entropy(F.linear(h, weight).float().view(-1, V), target.view(-1), ignore_index=...,
    reduction="sum")` (to fp32 rounding), and autocast's bf16/fp16 matmuls when called under autocast.
    `tied`: the dict given to `tied_embedding` for the same weight in this forward; the weight's gradient then
    comes out of the embedding lookup's backward.
    """
    h2, t = h.reshape(-1, h.size(-1)), target.reshape(-1)
    if h2.size(0) != t.numel():
        raise ValueError(f"linear_cross_entropy: {h2.size(0)} feature rows but {t.numel()} targets")
    dtype = torch.float32
    if torch.is_autocast_enabled(h.device.type):
        dtype = torch.get_autocast_dtype(h.device.type)
    # equal chunks (2,048 rows in two of 1,024, not 1,583 + 465): the short last chunk ran its matmuls slowly
    if chunk_logits is None:
        blocked = dtype != torch.float32 and h.device.type == "cpu"  # no fp32 [rows, V] tensor (_log_softmax_target)
        chunk_logits = DEFAULT_CHUNK_BYTES // (dtype.itemsize if blocked else 4)
    chunks = -(-h2.size(0) // max(1, chunk_logits // weight.size(0)))
    rows = max(1, -(-h2.size(0) // max(1, chunks)))
    grad = torch.is_grad_enabled()  # Function.forward always runs without grad: no gradients for validation
    with torch.autocast(h.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h2, weight, t, ignore_index, rows, dtype, grad, tied)
