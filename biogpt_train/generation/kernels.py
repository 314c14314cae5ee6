"""Linear kernels for the decoding step, chosen per call without touching the model's code.

* ``single_row_gemv`` (always on in ``generate``, exact): a step with one row (greedy, one sequence) runs each
  linear layer as a matrix-vector product, which gives F.linear's bits here (checked at run time) and skips
  sgemm's per-call work.
* ``packed_linears`` (``generate(..., fast_kernels=True)``, CPU float32, off by default): a step multiplies a few
  rows (batch x beams) by every weight matrix; for such small M, MKL's sgemm behind ``F.linear`` repacks the whole
  weight on every call (the 42k x 512 output projection: ~20 ms at M=8, 4x its M=1 time on one thread). oneDNN's
  linear with the weight reordered once into its blocked layout skips that. It sums in another order than
  ``F.linear``: logits differ by a few ulps, so tokens can differ in near-ties; that is why it is an option
  (docs/FIDELITY.md). With at least two rows per call (a lone row is duplicated), its result for a row does not
  depend on the other rows (MKL's changes below 16 rows), so batched == unbatched holds bitwise under it (tested).
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F


def available(model: nn.Module) -> bool:
    """Whether the packed kernels apply: a CPU float32 model and a PyTorch built with oneDNN."""
    w = next(model.parameters())
    return w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _packed_forward(weight: torch.Tensor, bias, rows_hint: int):
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
    bias = None if bias is None else bias.detach()

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        if rows.size(0) == 1:  # oneDNN sums a lone row in another order (its gemv path): run it as two rows
            rows = rows.expand(2, -1)
        y = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
        return y[: x.numel() // x.size(-1)].view(*x.shape[:-1], y.size(-1))

    return forward


@contextlib.contextmanager
def _patched_linears(model: nn.Module, make_forward):
    """Every ``nn.Linear`` of ``model`` runs ``make_forward(module)`` within the block (an instance attribute
    shadows nn.Linear.forward for that module only); on exit the modules are as they were. A model already
    patched (a nested entry) is left as it is."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if any("forward" in m.__dict__ for m in linears):
        yield
        return
    try:
        for m in linears:
            m.forward = make_forward(m)
        yield
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)


@contextlib.contextmanager
def packed_linears(model: nn.Module, enabled: bool = True, rows_hint: int = 8):
    """Within the block, every ``nn.Linear`` of ``model`` runs oneDNN's linear on a weight packed on entry
    (the tied output projection included). Inference only: the packed copies do not follow later weight updates,
    and nothing is differentiable. Packing copies every weight once (~0.1 s for the small preset), so a caller
    decoding many batches enters this once around them; a nested entry on an already packed model does nothing.
    ``rows_hint`` only tunes oneDNN's layout (results do not depend on it, tested)."""
    if not enabled:
        yield
        return
    if not available(model):
        raise ValueError("packed oneDNN linears need a float32 model on CPU and a PyTorch built with oneDNN")
    with _patched_linears(model, lambda m: _packed_forward(m.weight, m.bias, rows_hint)):
        yield


# --- one row per step: matrix-vector kernels, bitwise equal to F.linear ------------------------------------------
def _gemv_forward(module: nn.Linear):
    weight, bias = module.weight, module.bias

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.size(-1):  # several rows: the usual kernel
            return F.linear(x, weight, bias)
        row = x.reshape(-1)
        y = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return y.view(*x.shape[:-1], y.size(0))

    return forward


@functools.lru_cache(maxsize=None)
def gemv_is_exact(dtype: torch.dtype) -> bool:
    """Whether ``torch.mv``/``addmv`` give F.linear's bits for one row on CPU in ``dtype`` (MKL's sgemm with
    M=1 sums as its gemv does on the machines measured, and gemv skips sgemm's per-call work: the 42k x 512
    output projection 6.3 -> 4.7 ms). Checked once per process on random data (a different summation order
    would show in some of the 3 x 4096 outputs), so a BLAS where it does not hold just keeps F.linear."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for k in (64, 512, 2048):
            w = torch.randn(4096, k, generator=g, dtype=dtype)
            b = torch.randn(4096, generator=g, dtype=dtype)
            x = torch.randn(1, k, generator=g, dtype=dtype)
            if not (torch.equal(F.linear(x, w)[0], torch.mv(w, x[0]))
                    and torch.equal(F.linear(x, w, b)[0], torch.addmv(b, w, x[0]))):
                return False
    return True


@contextlib.contextmanager
def single_row_gemv(model: nn.Module):
    """Within the block, a linear layer called on a single row (greedy decoding of one sequence) uses the
    matrix-vector kernel when that is bitwise equal to F.linear here (``gemv_is_exact``); otherwise nothing
    changes. Exact, so decoding uses it by default."""
    w = next(model.parameters())
    if w.device.type != "cpu" or torch.is_grad_enabled() or not gemv_is_exact(w.dtype):
        yield
        return
    with _patched_linears(model, _gemv_forward):
        yield
