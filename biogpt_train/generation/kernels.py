"""Linear kernels for the decoding step, chosen per call without touching the model's code.

A decoding step multiplies a few rows (batch x beams) by every weight matrix once. For fewer than 16 rows, MKL's
sgemm behind ``F.linear`` repacks the whole weight on every call (the 42k x 512 output projection: ~22 ms at M=8,
3-4x its M=1 time, on one thread). Two ways around it:

* ``chunked_linears`` (always on in ``generate``, exact): the same sgemm over ~1 MiB row blocks of the weight, so
  each block is repacked in cache; every output still sums over the same inputs in the same order, so the bits
  are F.linear's (checked at run time per shape).
* ``packed_linears`` (``generate(..., fast_kernels=True)``, CPU float32, off by default): oneDNN's linear on
  weights reordered once into its blocked layout. It sums in another order than ``F.linear``: logits differ by a
  few ulps, so tokens can differ in near-ties; that is why it is an option (docs/FIDELITY.md). With at least two
  rows per call (a lone row is duplicated: oneDNN's one-row path sums differently), its result for a row does
  not depend on the other rows (MKL's changes below 16 rows), so batched == unbatched holds bitwise (tested).
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
def packed_linears(model: nn.Module, enabled: bool = True, rows_hint: int = 8):
    """Within the block, every ``nn.Linear`` of ``model`` runs oneDNN's linear on a weight packed on entry
    (the tied output projection included); on exit the modules are as they were. Inference only: the packed
    copies do not follow later weight updates, and nothing is differentiable. Packing copies every weight once
    (~0.1 s for the small preset), so a caller decoding many batches enters this once around them; a nested
    entry on an already packed model does nothing. ``rows_hint`` only tunes oneDNN's layout (results do not
    depend on it, tested)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not enabled or any("forward" in m.__dict__ for m in linears):
        yield
        return
    if not available(model):
        raise ValueError("packed oneDNN linears need a float32 model on CPU and a PyTorch built with oneDNN")
    try:
        for m in linears:  # an instance attribute shadows nn.Linear.forward for this module only
            m.forward = _packed_forward(m.weight, m.bias, rows_hint)
        yield
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)


# --- 2..15 rows per step: big weights in row blocks, bitwise equal to F.linear ------------------------------------
_FEW_ROWS = 16  # below this many rows MKL's sgemm repacks the whole weight per call (its M >= 16 path differs)
_CHUNK_BYTES = 1 << 20  # weight rows per block: ~1 MiB, so MKL's packed copy of a block stays in cache
# below this many bytes of linear weights the model stays in cache across steps and blocks only add calls
# (tiny bench model, 5.5 MB: 1.74 -> 1.82 ms/step at 8 rows)
_CACHED_BYTES = 32 << 20


@functools.lru_cache(maxsize=None)
def chunks_are_exact(rows: int, in_features: int, chunk: int, bias: bool, dtype: torch.dtype) -> bool:
    """Whether F.linear over row blocks of the weight gives the bits of one F.linear for ``rows`` inputs (each
    output sums over the same in_features, only the output columns are split). Checked once per shape on random
    data, tail chunk included, so a BLAS where it does not hold keeps the single call."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        w = torch.randn(3 * chunk + 100, in_features, generator=g, dtype=dtype)
        b = torch.randn(w.size(0), generator=g, dtype=dtype) if bias else None
        x = torch.randn(rows, in_features, generator=g, dtype=dtype)
        parts = [F.linear(x, w[i : i + chunk], None if b is None else b[i : i + chunk])
                 for i in range(0, w.size(0), chunk)]
        return torch.equal(torch.cat(parts, dim=1), F.linear(x, w, b))


def _chunk_rows(module: nn.Linear) -> int:
    return max(64, _CHUNK_BYTES // (module.in_features * module.weight.element_size()))


def _chunked_forward(module: nn.Linear):
    weight, bias = module.weight, module.bias
    chunk = _chunk_rows(module)

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        n = rows.size(0)
        if not 1 < n < _FEW_ROWS or not chunks_are_exact(n, weight.size(1), chunk, bias is not None, weight.dtype):
            return F.linear(x, weight, bias)
        out = rows.new_empty(n, weight.size(0))
        for i in range(0, weight.size(0), chunk):
            out[:, i : i + chunk] = F.linear(rows, weight[i : i + chunk], None if bias is None else bias[i : i + chunk])
        return out.view(*x.shape[:-1], weight.size(0))

    return forward


@contextlib.contextmanager
def chunked_linears(model: nn.Module):
    """Within the block (models with over 32 MiB of linear weights), a linear layer whose weight spans at least
    two ~1 MiB row blocks, called on 2..15 rows
    (a decoding step of a batch or beams), runs block by block: MKL then repacks each block in cache instead of
    the whole weight through memory (the 42k x 512 output projection at 8 rows: 22 -> 15 ms; the FFN matrices
    of six 512-wide layers: 6.9 -> 5.2 ms; one thread). Exact (``chunks_are_exact``), so decoding uses it by
    default; CPU only (the repacking is MKL's)."""
    w = next(model.parameters())
    if w.device.type != "cpu":
        yield
        return
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    big = [m for m in linears if m.out_features >= 2 * _chunk_rows(m)]
    small_model = sum(m.weight.numel() * m.weight.element_size() for m in linears) < _CACHED_BYTES
    if small_model or any("forward" in m.__dict__ for m in big):  # (or already patched: packed kernels)
        yield
        return
    try:
        for m in big:
            m.forward = _chunked_forward(m)
        yield
    finally:
        for m in big:
            m.__dict__.pop("forward", None)
