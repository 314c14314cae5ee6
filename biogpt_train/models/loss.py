"""Summed token cross-entropy fused with the output projection, in row chunks (no [N, V] logits at once).

fairseq's loss is `sum over non-pad targets of -log_softmax(h W^T)[target]` in fp32. Materialising the logits,
their log-softmax and its gradient costs 3 x N x V x 4 bytes (N = tokens per batch, V = 42,384: 1 GiB for 2,048
tokens) of memory traffic and peak memory. Here each chunk of rows computes its logits, its loss and, right away,
its gradients (softmax - onehot), so backward only scales the saved gradients by the incoming scalar. The matmuls
run in `compute_dtype` (bf16 under autocast, as autocast would run them); the log-softmax and the sum are fp32.
"""

from __future__ import annotations

import torch

# rows per chunk = this many logits / V (256 MiB of fp32 logits; smaller chunks were slower on CPU in bf16)
DEFAULT_CHUNK_LOGITS = 1 << 26


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, target, ignore_index: int, chunk_rows: int, compute_dtype, grad_enabled: bool):
        w = weight.detach().to(compute_dtype)
        hc = h.detach().to(compute_dtype)
        needs_h = grad_enabled and ctx.needs_input_grad[0]
        needs_w = grad_enabled and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hc) if needs_h else None
        grad_w = None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, hc.size(0), chunk_rows):
            x, t = hc[start:start + chunk_rows], target[start:start + chunk_rows]
            logits = torch.mm(x, w.t())
            # fairseq's (and F.cross_entropy's) formula: the fp32 log-softmax, the target's entry negated. Its
            # gradient p - onehot takes p = exp(log-softmax) in place, as log_softmax_backward computes it.
            logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            del logits
            valid = t.ne(ignore_index)
            t = t.masked_fill(~valid, 0)[:, None]
            logp_t = logp.gather(1, t)
            loss -= torch.where(valid[:, None], logp_t, 0.0).sum()
            if not (needs_h or needs_w):
                continue
            # d loss / d logits = p - onehot(target) on valid rows. The row mask is applied to the [n, d] operands
            # of the two matmuls rather than to the [n, V] gradient (one pass less over it).
            p = logp.exp_()
            g = p if compute_dtype == torch.float32 else p.to(compute_dtype)
            g.scatter_(1, t, (logp_t.exp() - 1.0).to(g.dtype))  # the target entry, computed in fp32
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
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        # cast to the input's dtype, then scale in place (a mixed-dtype mul with out= takes TensorIterator's slow
        # casting loop: 5x slower on CPU for the [V, d] weight gradient, measured)
        if grad_h is not None:
            grad_h = grad_h.to(h_dtype).mul_(grad_loss)
        if grad_w is not None:
            grad_w = grad_w.to(w_dtype).mul_(grad_loss)
        return grad_h, grad_w, None, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int,
                         chunk_logits: int | None = None) -> torch.Tensor:
    """sum(cross_entropy(h @ weight.T, target, ignore_index)) for h [..., d], weight [V, d], target [...].

    Equals `F.cross_entropy(F.linear(h, weight).float().view(-1, V), target.view(-1), ignore_index=...,
    reduction="sum")` (to fp32 rounding), and autocast's bf16/fp16 matmuls when called under autocast.
    """
    h2, t = h.reshape(-1, h.size(-1)), target.reshape(-1)
    if h2.size(0) != t.numel():
        raise ValueError(f"linear_cross_entropy: {h2.size(0)} feature rows but {t.numel()} targets")
    dtype = torch.float32
    if torch.is_autocast_enabled(h.device.type):
        dtype = torch.get_autocast_dtype(h.device.type)
    # equal chunks (2,048 rows in two of 1,024, not 1,583 + 465): the short last chunk ran its matmuls slowly
    chunk_logits = chunk_logits or DEFAULT_CHUNK_LOGITS
    chunks = -(-h2.size(0) // max(1, chunk_logits // weight.size(0)))
    rows = max(1, -(-h2.size(0) // max(1, chunks)))
    grad = torch.is_grad_enabled()  # Function.forward always runs without grad: no gradients for validation
    with torch.autocast(h.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h2, weight, t, ignore_index, rows, dtype, grad)
