"""Dropout whose CPU masks come from numpy's SFC64 streams, one per block, filled in parallel.

torch's CPU `bernoulli_` draws one mt19937 number per element on one thread (~6 ns per element here, whatever
the thread count): 27% of a small bf16 training update (bench/results/NOTES.md). On CPU tensors `dropout` draws
one 63-bit key from torch's generator per call and fills the keep-mask from numpy's SFC64 seeded with
SeedSequence((key, block)) for each block of 2^20 elements, blocks spread over torch's thread count (SFC64: 8 ms
per 8.4M-element mask on 2 threads, Philox 11 ms, torch's bernoulli_ 48 ms; since round 7 a byte per element
decides 255 times in 256, see `_fill`). The mask depends on torch's RNG state
only, not on the threads, so fairseq's reseeding per update, bitwise resume and activation-checkpoint
recomputation work as with torch's masks. The arithmetic is torch's (`x * (mask / (1 - p))` in x's dtype); the
keep probability 1 - p is resolved to 2^-32. Other devices, p >= 1 and code being compiled use `F.dropout`; so
does every device after `set_cpu_masks("torch")` (`trainer.cpu_dropout_masks=torch`, docs/FIDELITY.md #21).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

BLOCK = 1 << 20  # elements per stream (a fixed layout: the mask does not depend on the thread count)
_state = {"masks": "numpy", "pool": None, "pool_key": None}


def set_cpu_masks(kind: str) -> None:
    """`numpy` (default): masks as above; `torch`: torch's CPU bernoulli_ (the stream F.dropout draws)."""
    if kind not in ("numpy", "torch"):
        raise ValueError(f"cpu dropout masks must be 'numpy' or 'torch', not {kind!r}")
    _state["masks"] = str(kind)


def _pool(workers: int) -> ThreadPoolExecutor:
    key = (os.getpid(), workers)  # a forked child must not reuse its parent's (dead) threads
    if _state["pool_key"] != key:
        _state["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="dropout")
        _state["pool_key"] = key
    return _state["pool"]


# a float's bytes as an integer of its size (torch view, numpy buffer): the noise is written as bit patterns
_INT = {2: (torch.int16, np.int16), 4: (torch.int32, np.int32), 8: (torch.int64, np.int64)}


_BYTES = np.arange(8)


def _fill(noise: np.ndarray, key: int, threshold: np.uint32, scale_bits, block: int) -> None:
    """Block `block` of the noise. Element i keeps iff its 32-bit number is below `threshold`, compared top byte
    first: byte i of the block's stream decides unless it equals the threshold's top byte (1 in 256); only those
    elements draw their low 24 bits, from the same stream afterwards, in order. The same law as 32 random bits per
    element (keep probability threshold / 2^32) from a quarter of the random numbers (in a small fp32 update, a
    1M-element mask 2.5 -> 2.2 ms, the attention's 5.2M 9.1 -> 8.4 ms; bench/results/round7.md)."""
    lo = block * BLOCK
    n = min(BLOCK, noise.size - lo)
    stream = np.random.SFC64(np.random.SeedSequence((key, block)))
    top = stream.random_raw(-(-n // 8)).view(np.uint8)  # n bytes, rounded up to whole 64-bit draws
    top_threshold = np.uint8(threshold >> 24)
    keep = np.less(top, top_threshold)
    tie = np.equal(top, top_threshold)
    words = np.flatnonzero(tie.view(np.uint64))  # 8-byte words holding a tie: a shorter scan than the bytes
    if words.size:
        ties = (words[:, None] * 8 + _BYTES).ravel()
        ties = ties[tie[ties]]
        keep[ties] = (stream.random_raw(ties.size) & 0xFFFFFF) < (threshold & 0xFFFFFF)
    np.multiply(keep[:n], scale_bits, out=noise[lo:lo + n])  # the bits of 1/(1-p) where kept, of +0.0 elsewhere


@functools.lru_cache(maxsize=None)
def _constants(p: float, dtype: torch.dtype):
    """The keep threshold on 32 random bits and the bits of 1/(1-p) in `dtype` (as torch's `noise.div_(1 - p)`)."""
    threshold = np.uint32(min(round((1.0 - p) * 2.0**32), 2**32 - 1))
    scale = torch.ones((), dtype=dtype).div_(1 - p)
    torch_int, np_int = _INT[scale.element_size()]
    return threshold, np_int(scale.view(torch_int).item())


def keep_noise(numel: int, p: float, dtype: torch.dtype) -> torch.Tensor:
    """torch's dropout noise [numel] in `dtype`: 1/(1-p) (rounded to dtype, as `mask.to(dtype).div_(1-p)`) with
    probability 1 - p, else 0; from one draw of torch's CPU RNG. numpy drops the GIL: blocks fill in parallel."""
    key = int(torch.empty((), dtype=torch.int64).random_())
    threshold, scale_bits = _constants(p, dtype)
    noise = np.empty(numel, dtype=type(scale_bits))
    blocks = -(-numel // BLOCK)
    workers = min(blocks, torch.get_num_threads())
    if workers <= 1:
        for b in range(blocks):
            _fill(noise, key, threshold, scale_bits, b)
    else:
        for f in [_pool(workers).submit(_fill, noise, key, threshold, scale_bits, b) for b in range(blocks)]:
            f.result()
    return torch.from_numpy(noise).view(dtype)


def numpy_masks(x: torch.Tensor, p: float) -> bool:
    """Whether `dropout(x, p, True)` draws its mask with `keep_noise` (else F.dropout's)."""
    return (x.device.type == "cpu" and _state["masks"] == "numpy" and 0 < p < 1
            and not torch.compiler.is_compiling())


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training), with numpy keep-masks on CPU (module docstring)."""
    if not training or p == 0 or x.numel() == 0:
        return x
    if not numpy_masks(x, p):
        return F.dropout(x, p, True)
    return x * keep_noise(x.numel(), p, x.dtype).view(x.shape)  # torch's _dropout_impl: input * noise


class Dropout(torch.nn.Module):
    """nn.Dropout with `dropout`'s CPU masks (the encoders' named dropout modules, as transformers has them)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
