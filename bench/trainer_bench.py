"""Training update: `Trainer.train_step` (the bench_small / bench_biogpt experiments) vs transformers.

One update = forward, summed token cross-entropy, backward, gradients / tokens, gradient norm (read on the host),
AdamW step. Ours is the real Trainer composed from `+experiment=bench_small|bench_biogpt` on data_prep's synthetic
corpus (BioGPT's dict.txt when ../shared/data has it: 42,384 symbols, 512-token blocks). The reference is
`transformers.BioGptForCausalLM` with the same initial weights and batches, `torch.optim.AdamW` with its default
implementation (what a transformers user gets) and the same loss normalisation.
Each side runs in its own spawned process, as `python -m biogpt_train` and a transformers loop would: its own heap,
glibc allocator setting and RNG. The parent drives them in turn, one update each per round (the order flips every
round), until both spreads are < 10% or the time budget is spent; medians are reported. Interleaving keeps a load
change from hitting one side only (a sequential A-then-B run moved the ratio by 2x under load). The earlier design
ran both in one process: they then shared one heap, so each side's frees changed the other's page faults (small
fp32: ours 2.62 s alone, 2.75-2.91 s beside HF; biogpt fp32: HF 11.0 s alone, 9.0 s beside ours; round5.md).
MFU = matmul FLOPs (6 x weights + attention, nanoGPT's count) / median update time / the peak of a square matmul
in the same dtype measured (in the parent, both sides idle) before every round. mem = peak memory the update itself
adds (glibc's bytes in use above their level before it on CPU, bench.common.timed, in the side's process; allocator
peak on GPU); it excludes weights and optimizer state, which are the same on both sides.
CPU allocator: ours `trainer.cpu_keep_freed_memory` (on by default: glibc keeps freed large blocks,
train/allocator.py); HF glibc's defaults. `SAME_ALLOCATOR=1`: HF's process keeps freed memory too.
Dropout masks: ours draws them as the trainer does by default on CPU (numpy blocks keyed by torch's RNG,
models/dropout.py), HF with torch's serial bernoulli_; `TORCH_DROPOUT=1` gives ours torch's masks too
(`trainer.cpu_dropout_masks=torch`). `SAME_ALLOCATOR=1 TORCH_DROPOUT=1`: what the rest of our code buys.

    python -m bench --only trainer_bench [--quick]      or      python -m bench.trainer_bench [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import interleave, load, matmul_peak, median_time, peak_mem, spread_note, timed
from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.data.iterators import group
from biogpt_train.models.biogpt import ModelConfig
from biogpt_train.train.allocator import keep_freed_memory, set_thresholds
from biogpt_train.train.precision import autocast
from biogpt_train.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
BIOGPT_DICT = REPO.parent / "shared" / "data" / "tokenizer" / "BioGPT" / "dict.txt"
SEQ = 512
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (experiment, sequences per update, min rounds, max rounds, seconds budget per row)
CASES = [("bench_small", 4, 4, 12, 240), ("bench_biogpt", 1, 3, 5, 300)]
QUICK_CASES = [("bench_small", 1, 2, 4, 40)]


SAME_ALLOCATOR = os.environ.get("SAME_ALLOCATOR") == "1"
TORCH_DROPOUT = os.environ.get("TORCH_DROPOUT") == "1"


def glibc_default_allocator() -> None:
    """glibc's thresholds as a default process has them after its first large frees (the dynamic mmap threshold
    stops at 32 MiB, the trim threshold follows at twice it): what a plain transformers loop runs with."""
    set_thresholds(32 << 20, 64 << 20)


def train_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    """Matmul FLOPs of one trained token: 3 x forward; forward = 2 x (weights of the layers + the V x d output
    projection) + attention scores and weighted sum 2 x 2 x seq x d per layer (full square, as nanoGPT counts)."""
    d = cfg.embed_dim
    weights = cfg.layers * (4 * d * d + 2 * d * cfg.ffn_dim) + cfg.vocab_size * d
    return 3 * (2 * weights + cfg.layers * 4 * seq * d)


def hf_model(ours: torch.nn.Module):
    """BioGptForCausalLM with the weights of our TransformerLM (decoder.* -> biogpt.*, reference §2.2)."""
    import transformers

    c = ours.cfg
    hf = transformers.BioGptForCausalLM(transformers.BioGptConfig(
        vocab_size=c.vocab_size, hidden_size=c.embed_dim, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        intermediate_size=c.ffn_dim, max_position_embeddings=c.max_positions, hidden_act="gelu",
        scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.attention_dropout, activation_dropout=c.activation_dropout, use_cache=False,
    ))
    sd = {("output_projection.weight" if k == "decoder.output_projection.weight" else "biogpt." + k[8:]): v
          for k, v in ours.state_dict().items() if k != "decoder.version"}
    hf.load_state_dict(sd, strict=True)
    return hf


def _data(tmp: Path, tokens: int) -> Path:
    from data_prep import synthetic

    vocab_dir = BIOGPT_DICT.parent
    if not BIOGPT_DICT.is_file():  # same size as BioGPT's, made-up words
        vocab_dir = tmp / "vocab"
        vocab_dir.mkdir()
        (vocab_dir / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(42384 - 4)), encoding="utf-8")
    synthetic.run(vocab_dir, tmp / "data", train_tokens=tokens, valid_tokens=SEQ, doc_tokens=SEQ - 1)
    return tmp / "data"


def build(experiment: str, batch: int, precision: str, tmp: Path, n_batches: int, data: Path | None = None):
    """Our Trainer from `+experiment=...` on synthetic data, its first `n_batches` update groups, and the
    transformers twin (same weights) with torch's AdamW in its default implementation for the device."""
    data = data or _data(tmp, batch * SEQ * (n_batches + 1))
    cfg = compose([f"+experiment={experiment}", f"task.data={data}", f"data.max_tokens={batch * SEQ}",
                   f"trainer.precision={precision}", "trainer.max_update=0", f"paths.runs={tmp}",
                   "logging.tensorboard=false", "logging.jsonl="]
                  + (["trainer.cpu_dropout_masks=torch"] if TORCH_DROPOUT else []))
    torch.manual_seed(0)
    trainer = Trainer(cfg, tmp / "run", distributed.init())
    groups = [g for _, g in zip(range(n_batches), group(trainer.train_itr.next_epoch_itr(), 1))]
    hf = hf_model(trainer.raw_model).to(trainer.device).train()
    opt = cfg.optim
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-7, betas=tuple(opt.betas), eps=opt.eps,
                               weight_decay=opt.weight_decay)
    return trainer, groups, hf, hf_opt


def _side(name: str, experiment: str, batch: int, precision: str, tmp: Path, n_batches: int, data: Path):
    """(update(i) on batch group i, device, {params, flops per token}) for one side, in the process that runs it."""
    trainer, groups, hf, hf_opt = build(experiment, batch, precision, tmp, n_batches, data)
    device = trainer.device
    info = {"params": sum(p.numel() for p in trainer.raw_model.parameters()),
            "flops": train_flops_per_token(trainer.model_config, SEQ)}
    if name == "ours":
        del hf, hf_opt
        return (lambda i: trainer.train_step(groups[i], 1)), device, info
    del trainer
    # the Trainer set its allocator choice process-wide: HF gets glibc's defaults back (SAME_ALLOCATOR: ours)
    if device.type == "cpu":
        keep_freed_memory() if SAME_ALLOCATOR else glibc_default_allocator()

    def hf_update(i: int) -> None:
        sample = groups[i][0]
        hf_opt.zero_grad(set_to_none=True)
        tokens, target = sample["net_input"]["src_tokens"].to(device), sample["target"].to(device)
        with autocast(precision, device):
            logits = hf(input_ids=tokens, attention_mask=tokens.ne(1)).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=1,
                               reduction="sum")
        loss.backward()
        grads = [p.grad for p in hf.parameters() if p.grad is not None]
        torch._foreach_mul_(grads, 1.0 / sample["ntokens"])
        float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        hf_opt.step()
    return hf_update, device, info


def _worker(conn, name: str, args: tuple) -> None:
    """One side in its own process: build, then time `update(i)` for every (i, memory) received until None."""
    try:
        update, device, info = _side(name, *args)
        conn.send(("ready", info))
        while (cmd := conn.recv()) is not None:
            i, memory = cmd
            conn.send(("ok", timed(lambda: update(i), device, memory)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class _Sides:
    """Ours and HF, each in its own spawned process (own heap, allocator setting and RNG), driven in turn."""

    def __init__(self, args: tuple):
        ctx = mp.get_context("spawn")
        self.conns, self.procs, self.info = {}, [], {}
        for name in ("ours", "hf"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, name, args), daemon=True)
            proc.start()
            self.conns[name] = parent
            self.procs.append(proc)
        for name in self.conns:
            self.info = self._reply(name)

    def _reply(self, name: str):
        status, value = self.conns[name].recv()
        if status == "error":
            raise RuntimeError(f"trainer_bench: the {name} process failed:\n{value}")
        return value

    def update(self, name: str, i: int, memory: bool) -> tuple[float, float]:
        self.conns[name].send((i, memory))
        return self._reply(name)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=60)


def bench_case(experiment: str, batch: int, precision: str, tmp: Path, min_rounds: int, max_rounds: int,
               budget: float) -> dict:
    n_batches = max_rounds + 1  # batch 0: warmup and the memory update
    data = _data(tmp, batch * SEQ * (n_batches + 1))
    device = distributed.init().device
    sides = _Sides((experiment, batch, precision, tmp, n_batches, data))
    flops = sides.info["flops"] * batch * SEQ
    try:
        current, peaks = {"i": 0}, []

        def next_batch():
            current["i"] += 1
            peaks.append(matmul_peak(PEAK_DTYPES[precision], device))

        runners = {name: (lambda memory, name=name: sides.update(name, current["i"], memory))
                   for name in ("ours", "hf")}
        for fn in runners.values():  # warmup: first-touch allocation, optimizer state, oneDNN primitive caches
            fn(False)
        res = interleave(runners, device, min_rounds=min_rounds, max_rounds=max_rounds, max_seconds=budget,
                         before_round=next_batch, measure=lambda runner, _, memory: runner(memory))
    finally:
        sides.close()
    peak = statistics.median(peaks)
    t = {k: median_time(v) for k, v in res["runs"].items()}
    return {"params": sides.info["params"], "tok_s": {k: batch * SEQ / v for k, v in t.items()},
            "mfu": {k: flops / v / peak for k, v in t.items()}, "peak": peak,
            "mem": {k: peak_mem(v) for k, v in res["runs"].items()}, "rounds": res["rounds"],
            "spread": max(res["spread"].values())}


def run(quick: bool = False) -> str:
    device = distributed.init().device
    rows = []
    for experiment, batch, lo, hi, budget in QUICK_CASES if quick else CASES:
        for precision in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                r = bench_case(experiment, batch, precision, Path(tmp), lo, hi, budget)
            tok, mfu, mem = r["tok_s"], r["mfu"], r["mem"]
            rows.append(
                f"| {experiment} ({r['params'] / 1e6:.0f}M) | {precision} | {batch}x{SEQ} | "
                f"{r['rounds']} | {tok['ours']:,.0f} | {tok['hf']:,.0f} | "
                f"**{tok['ours'] / tok['hf']:.2f}** | {100 * mfu['ours']:.0f}% | {100 * mfu['hf']:.0f}% | "
                f"{r['peak'] / 1e9:,.0f} | {mem['ours']:.2f} | {mem['hf']:.2f} | {spread_note(r['spread'])} | "
                f"{load()} |")
            print(rows[-1], file=sys.stderr, flush=True)
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    return "\n".join([
        "## trainer: one update (forward, summed CE, backward, normalisation, norm, AdamW) vs transformers",
        "",
        f"Device: {device} ({where}). Ours: `Trainer.train_step` from `+experiment=bench_small|bench_biogpt`; HF: "
        "`BioGptForCausalLM` + `torch.optim.AdamW` (default implementation), same weights, batches and loss "
        "normalisation; each side in its own spawned process, driven in turn. CPU allocator: " + (
            "both keep freed memory (SAME_ALLOCATOR=1)" if SAME_ALLOCATOR else
        "ours keeps freed memory (trainer.cpu_keep_freed_memory), HF glibc's defaults") + ". CPU dropout masks: " + (
            "torch's bernoulli_ on both sides (TORCH_DROPOUT=1)" if TORCH_DROPOUT else
            "ours numpy blocks (trainer.cpu_dropout_masks=numpy), HF torch's bernoulli_") + ". Medians of rounds "
        "alternating ours/HF; spread = interquartile range / median (the larger "
        "side); load = 1-minute load average / CPUs at the end of the row. MFU against the square-matmul peak "
        "measured before every round (column 'peak'); mem = peak memory the update adds (GB).",
        "",
        "| experiment | precision | batch x seq | rounds | ours tok/s | HF tok/s | ours / HF | ours MFU | HF MFU | "
        "peak GFLOP/s | ours mem | HF mem | spread | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
