"""Keep freed large CPU buffers for reuse instead of handing them back to the OS after every use.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmap'd pages and unmaps them on
free, so every large training tensor (the [rows, V] logits chunk, the [V, d] embedding and output-projection
gradients, 4 x 8 x 512 x 512 attention scores...) pays its page faults again at every update: ~50 ms per 174 MB
on this project's CPU machine, 20-25% of a small-preset bf16 update (bench/results/train.md). Raising the mmap
and trim thresholds keeps those blocks in the heap, where the next update reuses them. Numerics are untouched;
the process keeps its peak heap instead of returning it between updates. No-op off glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("biogpt_train")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_LARGEST = 2**31 - 1  # mallopt takes an int


def set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's mmap and trim thresholds (bytes; process-wide); True when the C library accepted both."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to set
        return False
    return all(mallopt(opt, ctypes.c_int(value)) == 1
               for opt, value in ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)))


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse (process-wide); True when it accepted both settings."""
    ok = set_thresholds(_LARGEST, _LARGEST)
    if not ok:
        logger.info("trainer.cpu_keep_freed_memory: this C library refused mallopt; large buffers stay mmap'd")
    return ok
