"""Training throughput of TransformerLM vs transformers.BioGptForCausalLM (same config, weights and batch).

One training step = forward + cross-entropy + backward + AdamW step. The two models alternate step by step
(interleaved, after warmup) in one process, so machine load affects both alike; the median step time is
reported. MFU = model matmul FLOPs / step time / measured matmul peak (a large square matmul timed here).

    python -m bench --only model_bench [--quick]      or      python -m bench.model_bench [--quick]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from biogpt_train.models.presets import get_preset
from biogpt_train.models.biogpt import ModelConfig, TransformerLM

# (name, config, batch, seq, warmup steps, timed steps per model)
BENCH_SMALL = ("small (4L d256 V8k)", ModelConfig(vocab_size=8192, embed_dim=256, layers=4, heads=4, ffn_dim=1024,
                                                  max_positions=512), 2, 256, 2, 10)
BENCH_BIOGPT = ("biogpt 347M", get_preset("biogpt"), 1, 512, 1, 3)


def train_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    """Matmul FLOPs of one trained token: 3 x forward (backward = 2 x forward), nanoGPT/PaLM style.

    Forward per token: 2 x (matmul weights: 4d^2 + 2 d ffn per layer, plus the V x d output projection)
    + attention scores and weighted sum 2 x 2 x seq x d per layer (full square, as nanoGPT counts).
    """
    d = cfg.embed_dim
    weights = cfg.layers * (4 * d * d + 2 * d * cfg.ffn_dim) + cfg.vocab_size * d
    return 3 * (2 * weights + cfg.layers * 4 * seq * d)


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` (best of `reps`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warmup
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _hf_pair(cfg: ModelConfig):
    """Our model and a BioGptForCausalLM holding the same weights."""
    import transformers

    ours = TransformerLM(cfg)
    hf_cfg = transformers.BioGptConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn_dim, max_position_embeddings=cfg.max_positions,
        hidden_act="gelu", scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout, use_cache=False,
    )
    hf = transformers.BioGptForCausalLM(hf_cfg)
    sd = {("output_projection.weight" if k.endswith("output_projection.weight") else "biogpt." + k[8:]): v
          for k, v in ours.state_dict().items() if k != "decoder.version"}
    hf.load_state_dict(sd, strict=True)
    return ours.train(), hf.train()


def _step_fn(model, is_hf: bool, tokens, targets, dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == torch.bfloat16 \
        else contextlib.nullcontext

    def step():
        with autocast():
            logits = model(tokens).logits if is_hf else model(tokens)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), reduction="sum")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_config(name, cfg, batch, seq, warmup, reps, dtype) -> dict:
    torch.manual_seed(0)
    ours, hf = _hf_pair(cfg)
    tokens = torch.randint(4, cfg.vocab_size, (batch, seq))
    targets = torch.randint(4, cfg.vocab_size, (batch, seq))
    steps = {"ours": _step_fn(ours, False, tokens, targets, dtype), "hf": _step_fn(hf, True, tokens, targets, dtype)}
    times = {k: [] for k in steps}
    for i in range(warmup + reps):
        # interleaved, and the order flips every round so neither model always runs right after the other
        for key in (("ours", "hf") if i % 2 == 0 else ("hf", "ours")):
            t = time.perf_counter()
            steps[key]()
            if i >= warmup:
                times[key].append(time.perf_counter() - t)
    del ours, hf, steps
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {"name": name, "dtype": "bf16 autocast" if dtype == torch.bfloat16 else "fp32", "batch": batch,
            "seq": seq, "tok_s": {k: batch * seq / v for k, v in med.items()},
            "best_ratio": best["hf"] / best["ours"],
            "flops": train_flops_per_token(cfg, seq) * batch * seq, "step_s": med}


def run(quick: bool = False) -> str:
    peaks = {torch.float32: matmul_peak(torch.float32), torch.bfloat16: matmul_peak(torch.bfloat16)}
    configs = [BENCH_SMALL] + ([] if quick else [BENCH_BIOGPT])
    rows = []
    for name, cfg, batch, seq, warmup, reps in configs:
        for dtype in (torch.float32, torch.bfloat16):
            r = bench_config(name, cfg, batch, seq, warmup, reps, dtype)
            peak = peaks[dtype]
            mfu = {k: r["flops"] / r["step_s"][k] / peak for k in ("ours", "hf")}
            rows.append(
                f"| {r['name']} | {r['dtype']} | {batch}x{seq} | {r['tok_s']['ours']:,.0f} | {r['tok_s']['hf']:,.0f} "
                f"| {r['tok_s']['ours'] / r['tok_s']['hf']:.2f} | {r['best_ratio']:.2f} | {100 * mfu['ours']:.1f}% "
                f"| {100 * mfu['hf']:.1f}% |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join([
        "## model: training tokens/s vs transformers BioGptForCausalLM",
        "",
        f"Forward + backward + AdamW step; tok/s from the median of interleaved steps after warmup "
        f"(the best-step ratio is less sensitive to other load on the machine); {torch.get_num_threads()} "
        f"threads. Matmul peak measured here: fp32 {peaks[torch.float32] / 1e9:,.1f} GFLOP/s, "
        f"bf16 {peaks[torch.bfloat16] / 1e9:,.1f} GFLOP/s. MFU counts matmul FLOPs (6 x weights + attention).",
        "",
        "| config | precision | batch x seq | ours tok/s | HF tok/s | ours / HF (median) | ours / HF (best step) "
        "| ours MFU | HF MFU |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
