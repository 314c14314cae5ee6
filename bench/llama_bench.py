"""Training throughput of our Llama vs transformers.LlamaForCausalLM (same config, weights and batches).

One training step = forward + summed cross-entropy (ours: `target=`, as the trainer calls it) + backward + AdamW
step. The two models alternate step by step
(bench.common.interleave: the order flips every round, after one warmup step each) in one process, so machine load
affects both alike; tokens/s come from the median step time. HF runs its default attention (SDPA),
as ours does. MFU = matmul FLOPs (6 x weights + attention) / step time / a measured square-matmul peak.

    python -m bench --only llama_bench [--quick]      or      python -m bench.llama_bench [--quick]
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

from bench.common import interleave, load, matmul_peak, median_time, peak_mem, spread_note
from biogpt_train.models.llama import Llama, LlamaConfig

# (name, config, batch, seq, min rounds, max rounds)
SMALL = ("llama_small (4L d256 GQA 8/4, V32k)",
         LlamaConfig(vocab_size=32000, embed_dim=256, layers=4, heads=8, kv_heads=4, ffn_dim=688,
                     max_positions=1024), 2, 256, 5, 15)
TINY = ("llama_tiny (2L d64 GQA 4/2, V1k)",
        LlamaConfig(vocab_size=1000, embed_dim=64, layers=2, heads=4, kv_heads=2, ffn_dim=172, max_positions=256),
        4, 128, 5, 15)


def _step_fn(model, is_hf: bool, tokens, targets, dtype):
    """One training update (forward, summed CE, backward, AdamW) of our model or its transformers twin."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == torch.bfloat16 \
        else contextlib.nullcontext

    def step():
        with autocast():
            if is_hf:
                logits = model(tokens).logits
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), reduction="sum")
            else:  # as the trainer calls it: lm_head fused with the CE (no [B, T, V] fp32 logits)
                loss = model(tokens, target=targets, ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def train_flops_per_token(cfg: LlamaConfig, seq: int) -> float:
    """Matmul FLOPs of one trained token (3 x forward): q/o (d x d), k/v (d x kv_dim), SwiGLU (3 x d x ffn),
    lm_head (V x d), plus attention scores and weighted sum over the full square (nanoGPT's count)."""
    d, kv = cfg.embed_dim, cfg.kv_heads * cfg.head_dim
    weights = cfg.layers * (2 * d * d + 2 * d * kv + 3 * d * cfg.ffn_dim) + cfg.vocab_size * d
    return 3 * (2 * weights + cfg.layers * 4 * seq * d)


def _hf_pair(cfg: LlamaConfig):
    """Our Llama and a LlamaForCausalLM holding the same weights (our parameter names are HF's)."""
    import transformers

    ours = Llama(cfg)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.ffn_dim,
        max_position_embeddings=cfg.max_positions, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=0, use_cache=False,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg)
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours.train(), hf.train()


def bench_config(name, cfg, batch, seq, min_rounds, max_rounds, dtype) -> dict:
    torch.manual_seed(0)
    ours, hf = _hf_pair(cfg)
    tokens = torch.randint(3, cfg.vocab_size, (batch, seq))
    targets = torch.randint(3, cfg.vocab_size, (batch, seq))
    steps = {"ours": _step_fn(ours, False, tokens, targets, dtype), "hf": _step_fn(hf, True, tokens, targets, dtype)}
    for fn in steps.values():  # warmup: optimizer state, first-touch allocation, oneDNN primitive caches
        fn()
    res = interleave(steps, torch.device("cpu"), min_rounds=min_rounds, max_rounds=max_rounds, max_seconds=120)
    med = {k: median_time(v) for k, v in res["runs"].items()}
    return {"name": name, "dtype": "bf16 autocast" if dtype == torch.bfloat16 else "fp32", "batch": batch,
            "seq": seq, "tok_s": {k: batch * seq / v for k, v in med.items()},
            "mem": {k: peak_mem(v) for k, v in res["runs"].items()}, "rounds": res["rounds"],
            "spread": max(res["spread"].values()), "flops": train_flops_per_token(cfg, seq) * batch * seq,
            "step_s": med}


def run(quick: bool = False) -> str:
    cpu = torch.device("cpu")
    peaks = {torch.float32: matmul_peak(torch.float32, cpu), torch.bfloat16: matmul_peak(torch.bfloat16, cpu)}
    rows = []
    for name, cfg, batch, seq, lo, hi in [TINY] + ([] if quick else [SMALL]):
        for dtype in (torch.float32, torch.bfloat16):
            r = bench_config(name, cfg, batch, seq, lo, hi, dtype)
            mfu = {k: r["flops"] / r["step_s"][k] / peaks[dtype] for k in ("ours", "hf")}
            rows.append(
                f"| {r['name']} | {r['dtype']} | {batch}x{seq} | {r['tok_s']['ours']:,.0f} | {r['tok_s']['hf']:,.0f} "
                f"| **{r['tok_s']['ours'] / r['tok_s']['hf']:.2f}** | {100 * mfu['ours']:.1f}% | {100 * mfu['hf']:.1f}% "
                f"| {r['mem']['ours']:.2f} | {r['mem']['hf']:.2f} | {r['rounds']} | {spread_note(r['spread'])} "
                f"| {load()} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join([
        "## llama: training tokens/s vs transformers LlamaForCausalLM",
        "",
        f"Forward + backward + AdamW step, same weights and batches; tok/s from the median of interleaved steps "
        f"after warmup; {torch.get_num_threads()} threads; mem = peak memory the step adds (GB); spread = "
        f"interquartile range / median (the larger side); load = 1-minute load average / CPUs. Matmul peak measured here: fp32 "
        f"{peaks[torch.float32] / 1e9:,.1f} GFLOP/s, bf16 {peaks[torch.bfloat16] / 1e9:,.1f} GFLOP/s.",
        "",
        "| config | precision | batch x seq | ours tok/s | HF tok/s | ours / HF | ours MFU | HF MFU | ours mem "
        "| HF mem | rounds | spread | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
