"""One update section by section (forward / loss / backward / normalise + norm / optimizer), ours vs HF.

    python -m bench.trainer_sections EXPERIMENT BATCH PRECISION THREADS REPS     e.g. bench_small 4 bf16 1 3

Ours: the pieces of `Trainer.train_step` (body forward, fused projection + CE with its gradients, backward,
normalisation + norm, optimizer; the body and the loss called apart, so without the tied-gradient hand-off of
`model(tokens, target=)`, models/loss.py tied_embedding); HF: BioGptForCausalLM body, output projection + CE,
backward, the same normalisation, torch.optim.AdamW. 1 thread: process CPU time (not inflated by a contended
core); more: wall time. Allocator per side as in trainer_bench (SAME_ALLOCATOR=1: both keep freed memory).
Medians of REPS updates, the order alternating, after one warmup update each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.trainer_bench import SAME_ALLOCATOR, SEQ, build, glibc_default_allocator
from biogpt_train.models.loss import linear_cross_entropy
from biogpt_train.train.allocator import keep_freed_memory
from biogpt_train.train.precision import autocast

SECTIONS = ("fwd", "loss", "bwd", "norm", "opt")
PAD = 1


def ours_update(trainer, sample, precision: str, clock) -> list[float]:
    """Seconds of each section of our update (the trainer's own pieces, in its order)."""
    keep_freed_memory()
    model, device = trainer.raw_model, trainer.device
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    model.train()
    trainer.optimizer.zero_grad(set_to_none=True)
    t = [clock()]
    with autocast(precision, device):
        x = model(tokens, pad_mask=False, features_only=True)
        t.append(clock())
        loss = linear_cross_entropy(x, model.decoder.output_projection.weight, target, PAD)
    t.append(clock())
    loss.backward()
    t.append(clock())
    grads = [p.grad for p in trainer.params if p.grad is not None]
    torch._foreach_mul_(grads, torch.tensor(1.0 / sample["ntokens"]))
    float(trainer._grad_norm_and_clip(grads))
    t.append(clock())
    trainer.optimizer.step()
    t.append(clock())
    return [b - a for a, b in zip(t, t[1:])]


def hf_update(hf, hf_opt, sample, precision: str, device, clock) -> list[float]:
    """Seconds of each section of a transformers update (as trainer_bench's HF side)."""
    if not SAME_ALLOCATOR:
        glibc_default_allocator()
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    hf_opt.zero_grad(set_to_none=True)
    t = [clock()]
    with autocast(precision, device):
        h = hf.biogpt(input_ids=tokens, attention_mask=tokens.ne(PAD)).last_hidden_state
        t.append(clock())
        logits = hf.output_projection(h)
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=PAD,
                           reduction="sum")
    t.append(clock())
    loss.backward()
    t.append(clock())
    grads = [p.grad for p in hf.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, 1.0 / sample["ntokens"])
    float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    t.append(clock())
    hf_opt.step()
    t.append(clock())
    return [b - a for a, b in zip(t, t[1:])]


def main(argv: list[str]) -> None:
    exp, batch, precision, threads, reps = argv[0], int(argv[1]), argv[2], int(argv[3]), int(argv[4])
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    trainer, groups, hf, hf_opt = build(exp, batch, precision, Path(tempfile.mkdtemp()), reps + 1)
    samples = [g[0] for g in groups]
    sides = {"ours": lambda s: ours_update(trainer, s, precision, clock),
             "hf": lambda s: hf_update(hf, hf_opt, s, precision, trainer.device, clock)}
    for update in sides.values():  # warmup
        update(samples[0])
    times = {k: [] for k in sides}
    for i, sample in enumerate(samples[1:]):
        for k in (("ours", "hf") if i % 2 else ("hf", "ours")):
            times[k].append(sides[k](sample))
    med = {k: [statistics.median(col) for col in zip(*v)] for k, v in times.items()}
    print(f"{exp} {batch}x{SEQ} {precision} threads={threads} reps={reps} "
          f"clock={'process' if threads == 1 else 'wall'}")
    for name, a, b in zip(SECTIONS, med["ours"], med["hf"]):
        print(f"  {name:5s} ours {a:7.3f}  hf {b:7.3f}  hf/ours {b / a:5.2f}")
    total = {k: sum(v) for k, v in med.items()}
    print(f"  total ours {total['ours']:7.3f}  hf {total['hf']:7.3f}  ratio {total['hf'] / total['ours']:5.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
