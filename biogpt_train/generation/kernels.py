"""Prepacked oneDNN linear kernels for the decoding step (CPU, float32): ``generate(..., fast_kernels=True)``.

A decoding step multiplies a few rows (batch x beams) by every weight matrix once; for such small M, MKL's sgemm
behind ``F.linear`` repacks the whole weight on every call (the 42k x 512 output projection: ~20 ms at M=8, 4x its
M=1 time on one thread). oneDNN's linear with the weight reordered once into its blocked layout skips that.
It sums in another order than ``F.linear``: logits differ by a few ulps, so tokens can differ in near-ties; that is
why it is an option, off by default (docs/FIDELITY.md). With at least two rows per call (a lone row is
duplicated), its result for a row does not depend on the other rows (MKL's changes below 16 rows), so batched ==
unbatched holds bitwise under it (tested).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


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
