"""Full trainer update throughput: biogpt_train's `Trainer.train_step` vs transformers' BioGptForCausalLM.

One update = what `python -m biogpt_train` does per update: forward, summed token cross-entropy, backward, the
global-token normalisation of the gradients, the gradient norm (read on the host, as the non-finite check does)
and the AdamW step (fairseq Adam settings). The HF model gets the same weights, the same batches, the same optimizer
(built by the same `build_optimizer`) and the same loss normalisation, in the same process. Our side is the real
Trainer built from the Hydra config on a synthetic prepared dataset (random ids, BioGPT's 42,384-entry vocabulary,
512-token blocks). Median step time after one warmup step, ours and HF interleaved step by step; the 347M model
gets a single timed step and runs HF after ours (both at once do not fit a shared CPU box's memory).
MFU = matmul FLOPs (6 x weights + attention; `bench.model_bench.train_flops_per_token`) / step time / the peak of
a square matmul on the same device and dtype, measured right before each timed step.

    python -m bench --only trainer_bench [--quick]      or      python -m bench.trainer_bench [--quick]
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.model_bench import _hf_pair, train_flops_per_token
from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.data.indexed_dataset import write_dataset
from biogpt_train.data.iterators import group
from biogpt_train.train.optim import build_optimizer, set_lr
from biogpt_train.train.precision import autocast
from biogpt_train.train.trainer import Trainer

VOCAB = 42384
SEQ = 512
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (preset, sequences per batch, timed steps after 1 warmup step)
CASES = [("small", 2, 3), ("biogpt", 1, 1)]
QUICK_CASES = [("small", 1, 2)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, reps: int = 5) -> float:
    """FLOP/s of a square matmul in `dtype` on `device` (best of `reps`)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _dataset(root: Path, tokens: int) -> Path:
    """A prepared LM directory of random ids: dict.txt with VOCAB-4 symbols, train/valid .bin/.idx."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(VOCAB - 4)), encoding="utf-8")
    rng = np.random.RandomState(0)
    doc = lambda n: (rng.randint(4, VOCAB, size=n).tolist() + [2])  # noqa: E731
    write_dataset(root / "train", [doc(SEQ - 1) for _ in range(tokens // SEQ)], VOCAB)
    write_dataset(root / "valid", [doc(SEQ - 1)], VOCAB)
    return root


def _time(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _hf_update(model, optimizer, sample, precision: str, device: torch.device) -> None:
    """The trainer's update semantics on the HF model (summed CE, grads / tokens, norm, step)."""
    optimizer.zero_grad(set_to_none=True)
    tokens = sample["net_input"]["src_tokens"].to(device)
    target = sample["target"].to(device)
    with autocast(precision, device):
        logits = model(input_ids=tokens, attention_mask=tokens.ne(1)).logits
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=1, reduction="sum")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, 1.0 / sample["ntokens"])
    float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    optimizer.step()


def bench_case(preset: str, batch: int, timed: int, precision: str, tmp: Path) -> dict:
    steps = 1 + timed
    data = _dataset(tmp / "data", batch * SEQ * (steps + 1))
    cfg = compose([f"model={preset}", f"task.data={data}", f"task.tokens_per_sample={SEQ}",
                   f"data.max_tokens={batch * SEQ}", f"trainer.precision={precision}", "trainer.max_update=0",
                   "pipeline.stages=[train]", f"paths.runs={tmp}", "logging.tensorboard=false", "logging.jsonl=",
                   "lr_scheduler.warmup_updates=1000"])
    torch.manual_seed(0)
    trainer = Trainer(cfg, tmp / "run", distributed.init())
    device, dtype = trainer.device, DTYPES[precision]
    groups = [g for _, g in zip(range(steps), group(trainer.train_itr.next_epoch_itr(), 1))]
    tokens = statistics.median(g[0]["ntokens"] for g in groups[1:])
    flops = train_flops_per_token(trainer.model_config, SEQ) * tokens
    ours, hf = _hf_pair(trainer.model_config)  # HF model with the same initial weights as ours
    trainer.raw_model.load_state_dict(ours.state_dict())
    del ours
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    # ours and HF alternate step by step so machine load hits both alike; the 347M pair would not fit twice in a
    # shared CPU box's memory, so there HF runs after ours is freed. Each timed step is paired with a matmul peak
    # measured just before it, so MFU stays meaningful when the load changes between the two.
    interleave = n_params < 100e6
    hf_step = None

    def make_hf():
        model = hf.to(device).train()
        optimizer = build_optimizer(model, cfg.optim, device)
        set_lr(optimizer, 1e-7)
        return lambda g: _hf_update(model, optimizer, g[0], precision, device)

    def timed_step(fn) -> tuple[float, float]:
        peak = matmul_peak(dtype, device, reps=3)
        return _time(fn, device), peak

    runs = {"ours": [], "hf": []}
    if interleave:
        hf_step = make_hf()
    for g in groups:
        runs["ours"].append(timed_step(lambda: trainer.train_step(g, 1)))
        if interleave:
            runs["hf"].append(timed_step(lambda: hf_step(g)))
    del trainer
    gc.collect()
    if not interleave:
        hf_step = make_hf()
        for g in groups:
            runs["hf"].append(timed_step(lambda: hf_step(g)))
    del hf, hf_step
    gc.collect()
    runs = {k: v[1:] for k, v in runs.items()}  # drop the warmup step
    return {
        "params": n_params,
        "tok_s": {k: tokens / statistics.median(t for t, _ in v) for k, v in runs.items()},
        "mfu": {k: statistics.median(flops / t / peak for t, peak in v) for k, v in runs.items()},
        "peak": statistics.median(peak for v in runs.values() for _, peak in v),
    }


def run(quick: bool = False) -> str:
    device = distributed.init().device
    rows = []
    for preset, batch, timed in QUICK_CASES if quick else CASES:
        for precision in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                r = bench_case(preset, batch, timed, precision, Path(tmp))
            tok, mfu = r["tok_s"], r["mfu"]
            rows.append(
                f"| {preset} ({r['params'] / 1e6:.0f}M) | {precision} | {batch}x{SEQ} | {timed} | "
                f"{tok['ours']:,.0f} | {tok['hf']:,.0f} | {tok['ours'] / tok['hf']:.2f} | {100 * mfu['ours']:.1f}% | "
                f"{100 * mfu['hf']:.1f}% | {mfu['ours'] / mfu['hf']:.2f} | {r['peak'] / 1e9:,.0f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    threads = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    return "\n".join([
        "## trainer: full update tokens/s and MFU vs transformers BioGptForCausalLM",
        "",
        f"Device: {device} ({threads}). One update = forward + summed CE + backward + grads / tokens + grad norm + "
        "AdamW (fairseq settings); ours is `Trainer.train_step` built from the Hydra config, HF gets the same "
        "weights, batches and optimizer. Medians over the timed steps (after 1 warmup step). MFU = matmul FLOPs / "
        "step time / the peak of a square matmul (same device and dtype) measured just before that step; on a "
        "shared machine the MFU ratio is the load-robust comparison.",
        "",
        "| model | precision | batch x seq | timed steps | ours tok/s | HF tok/s | ours / HF | ours MFU | HF MFU | "
        "MFU ours / HF | peak GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
