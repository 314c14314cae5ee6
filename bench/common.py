"""What every benchmark row records: interleaved A/B timing with medians and a spread rule, a matmul peak
measured in the same run, the step's peak memory, and the machine's state (threads, load) beside each number."""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time

import torch

SPREAD_TARGET = 0.10  # repeat rounds until the interquartile range of each side is under 10% of its median


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load() -> str:
    """1-minute load average / CPUs: other work on the machine while a number was taken."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def matmul_peak(dtype: torch.dtype, device: torch.device, reps: int = 3) -> float:
    """FLOP/s of a square matmul in `dtype` (bf16 on CPU goes through oneDNN/AMX where present), best of reps."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use():
    """glibc's bytes in use (heap + mmap'd blocks; < 1 us a call), or None off glibc >= 2.33. RSS cannot measure a
    step once freed blocks stay in the heap (trainer.cpu_keep_freed_memory): it would no longer rise."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        m = fn()
        return m.uordblks + m.hblkhd
    return in_use


_IN_USE = _malloc_in_use() or (_rss_bytes if os.path.exists("/proc/self/statm") else None)


def timed(fn, device: torch.device, memory: bool = False) -> tuple[float, float]:
    """(seconds, peak extra memory in GB, or 0.0 unless `memory`) of one call. GPU: allocator peak; CPU: the peak
    of glibc's bytes in use (RSS where glibc's mallinfo2 is missing) above their level before the call, sampled
    every millisecond (what the step itself allocates: activations, logits, gradients). The CPU sampler is a third
    thread that takes glibc's arena lock: it slowed a 2-thread biogpt fp32 update from 6.3 to 8.1 s (measured), so
    a call that samples memory is never one whose time is reported (`interleave` makes a separate one)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t, (torch.cuda.max_memory_allocated(device) - base) / 2**30
    if not memory:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, 0.0
    base = peak = _IN_USE() if _IN_USE else 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _IN_USE())

    sampler = threading.Thread(target=sample, daemon=True) if base else None
    if sampler:
        sampler.start()
    t = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t
    done.set()
    if sampler:
        sampler.join()
        peak = max(peak, _IN_USE())
    return elapsed, (peak - base) / 2**30


def iqr_spread(xs: list[float]) -> float:
    if len(xs) < 4:
        return (max(xs) - min(xs)) / statistics.median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)


def interleave(runners: dict, device: torch.device, *, min_rounds: int, max_rounds: int, max_seconds: float,
               before_round=None, measure=timed) -> dict:
    """One untimed call per runner that measures its peak memory, then every runner once per round, alternating the
    order, until each side's spread < SPREAD_TARGET (after min_rounds) or max_rounds / max_seconds.
    Returns {name: [(seconds, mem_gb), ...]}, 'rounds', 'spread'. `measure(runner, device, memory) -> (seconds,
    mem_gb)`; runners that time themselves (another process) pass their own."""
    mem = {k: measure(runner, device, True)[1] for k, runner in runners.items()}
    out = {k: [] for k in runners}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds:
        if before_round is not None:
            before_round()
        keys = list(runners) if rounds % 2 == 0 else list(reversed(runners))
        for k in keys:
            out[k].append((measure(runners[k], device, False)[0], mem[k]))
        rounds += 1
        spreads = {k: iqr_spread([t for t, _ in v]) for k, v in out.items()}
        if rounds >= min_rounds and (max(spreads.values()) < SPREAD_TARGET
                                     or time.perf_counter() - start > max_seconds):
            break
    return {"runs": out, "rounds": rounds, "spread": spreads}


def median_time(runs) -> float:
    return statistics.median(t for t, _ in runs)


def peak_mem(runs) -> float:
    return max(m for _, m in runs)


def spread_note(spread: float) -> str:
    return f"{100 * spread:.0f}%" + ("" if spread < SPREAD_TARGET else " (not < 10%)")
