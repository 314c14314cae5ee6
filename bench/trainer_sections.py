"""One update section by section (forward / loss / backward / normalise + norm / optimizer), ours vs HF.

    python -m bench.trainer_sections EXPERIMENT BATCH PRECISION THREADS REPS     e.g. bench_small 4 bf16 1 3

Ours: the pieces of `Trainer.train_step` (body forward, fused projection + CE with its gradients, backward,
normalisation + norm, optimizer); HF: BioGptForCausalLM body, output projection + CE, backward, the same
normalisation, torch.optim.AdamW. 1 thread: process CPU time (not inflated by a contended core); more: wall time.
Allocator per side as in trainer_bench (SAME=1: both keep freed memory). Medians of REPS interleaved updates.
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.trainer_bench import _data, hf_model, SEQ
from biogpt_train import distributed
from biogpt_train.config import compose
from biogpt_train.data.iterators import group
from biogpt_train.models.loss import linear_cross_entropy
from biogpt_train.train.precision import autocast
from biogpt_train.train.trainer import Trainer

exp, batch, precision, threads, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
clock = time.process_time if threads == 1 else time.perf_counter
tmp = Path(tempfile.mkdtemp())
data = _data(tmp, batch * SEQ * (reps + 3))
cfg = compose([f"+experiment={exp}", f"task.data={data}", f"data.max_tokens={batch * SEQ}",
               f"trainer.precision={precision}", "trainer.max_update=0", f"paths.runs={tmp}",
               "logging.tensorboard=false", "logging.jsonl="])
torch.manual_seed(0)
tr = Trainer(cfg, tmp / "run", distributed.init())
dev = tr.device
batches = [g[0] for _, g in zip(range(reps + 1), group(tr.train_itr.next_epoch_itr(), 1))]
hf = hf_model(tr.raw_model).train()
o = cfg.optim
hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-7, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
model = tr.raw_model
pad = 1

import os
from bench.trainer_bench import glibc_default_allocator
from biogpt_train.train.allocator import keep_freed_memory
SAME = os.environ.get('SAME') == '1'
def ours(sample, T):
    keep_freed_memory()
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    model.train(); tr.optimizer.zero_grad(set_to_none=True)
    t0 = clock()
    with autocast(precision, dev):
        x = model(tokens, pad_mask=False, features_only=True)
        t1 = clock()
        loss = linear_cross_entropy(x, model.decoder.output_projection.weight, target, pad)
    t2 = clock()
    loss.backward()
    t3 = clock()
    grads = [p.grad for p in tr.params if p.grad is not None]
    torch._foreach_mul_(grads, torch.tensor(1.0 / sample["ntokens"]))
    norm = tr._grad_norm_and_clip(grads); float(norm)
    t4 = clock()
    tr.optimizer.step()
    t5 = clock()
    for k, v in zip(("fwd", "loss", "bwd", "norm", "opt"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
        T.setdefault(k, []).append(v)

def theirs(sample, T):
    SAME or glibc_default_allocator()
    tokens, target = sample["net_input"]["src_tokens"], sample["target"]
    hf_opt.zero_grad(set_to_none=True)
    t0 = clock()
    with autocast(precision, dev):
        h = hf.biogpt(input_ids=tokens, attention_mask=tokens.ne(1)).last_hidden_state
        t1 = clock()
        logits = hf.output_projection(h)
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=1, reduction="sum")
    t2 = clock()
    loss.backward()
    t3 = clock()
    grads = [p.grad for p in hf.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, 1.0 / sample["ntokens"])
    float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    t4 = clock()
    hf_opt.step()
    t5 = clock()
    for k, v in zip(("fwd", "loss", "bwd", "norm", "opt"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
        T.setdefault(k, []).append(v)

A, B = {}, {}
ours(batches[0], {}); theirs(batches[0], {})
for i in range(reps):
    s = batches[i + 1]
    if i % 2: ours(s, A); theirs(s, B)
    else: theirs(s, B); ours(s, A)
med = lambda xs: statistics.median(xs)
print(f"{exp} {batch}x{SEQ} {precision} threads={threads} reps={reps} clock={'process' if threads==1 else 'wall'}")
tot_a = tot_b = 0
for k in A:
    a, b = med(A[k]), med(B[k]); tot_a += a; tot_b += b
    print(f"  {k:5s} ours {a:7.3f}  hf {b:7.3f}  hf/ours {b/a:5.2f}")
print(f"  total ours {tot_a:7.3f}  hf {tot_b:7.3f}  ratio {tot_b/tot_a:5.2f}")
