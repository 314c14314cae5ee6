"""Encoder QA training throughput: our QAModel + the trainer's `qa` objective vs transformers'
ElectraForQuestionAnswering (its built-in loss), same weights, same batches, same AdamW, in the same process.

One step = forward, (CE(start) + CE(end)) / 2 averaged over the batch, backward, AdamW step. Batches are random
ids shaped like SQuAD features ([CLS] question [SEP] context [SEP], right-padded to the longest in the batch,
lengths drawn between half and all of max_seq_length). Our step and HF's alternate step by step; the table gives
the median step time after one warmup step of each, as tokens/s counting non-pad tokens.

    python -m bench --only encoder_bench [--quick]      or      python -m bench.encoder_bench [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

# (name, EncoderConfig shape, batch, max_seq_length, timed steps)
CASES = [("electra-small shape", dict(embedding_size=128, embed_dim=256, layers=12, heads=4, ffn_dim=1024), 8, 384, 5),
         ("biom-electra-base shape", dict(embedding_size=768, embed_dim=768, layers=12, heads=12, ffn_dim=3072), 4, 512,
          3)]
QUICK_CASES = [("electra-small shape", dict(embedding_size=128, embed_dim=256, layers=4, heads=4, ffn_dim=1024), 4,
                256, 3)]
VOCAB = 28895


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(n, batch, seq, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
        T = int(lengths.max())
        ids = torch.randint(5, VOCAB, (batch, T), generator=g)
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        ids = ids * mask
        types = torch.zeros_like(ids)
        types[:, 40:] = 1
        types *= mask
        start = torch.randint(41, seq // 2, (batch,), generator=g)
        out.append({k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                                                      start_positions=start, end_positions=start + 3).items()})
        out[-1]["ntokens"] = batch
    return out


def _pair(shape, device):
    import transformers

    from biogpt_train.models.electra import EncoderConfig, QAModel

    cfg = EncoderConfig(vocab_size=VOCAB, max_positions=512, **shape)
    ours = QAModel(cfg).to(device).train()
    hf_cfg = transformers.ElectraConfig(vocab_size=VOCAB, embedding_size=cfg.embedding_size, hidden_size=cfg.embed_dim,
                                        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                                        intermediate_size=cfg.ffn_dim, max_position_embeddings=512,
                                        attn_implementation="sdpa")
    hf = transformers.ElectraForQuestionAnswering(hf_cfg).to(device).train()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")] and not unexpected, (missing, unexpected)
    return ours, hf


def bench_case(shape, batch, seq, steps, device):
    from biogpt_train.train.objectives import qa_loss

    ours, hf = _pair(shape, device)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-5)
    batches = _batches(steps + 1, batch, seq, device)

    def step_ours(b):
        opt_ours.zero_grad(set_to_none=True)
        (qa_loss(ours, b, device) / b["ntokens"]).backward()
        opt_ours.step()

    def step_hf(b):
        opt_hf.zero_grad(set_to_none=True)
        hf(**{k: v for k, v in b.items() if k != "ntokens"}).loss.backward()
        opt_hf.step()

    times = {"ours": [], "hf": []}
    for i, b in enumerate(batches):
        for name, fn in (("ours", step_ours), ("hf", step_hf)):
            _sync(device)
            t = time.perf_counter()
            fn(b)
            _sync(device)
            if i > 0:  # the first step of each is warmup
                times[name].append(time.perf_counter() - t)
    tokens = statistics.median(int(b["attention_mask"].sum()) for b in batches[1:])
    return {k: tokens / statistics.median(v) for k, v in times.items()}


def run(quick: bool = False) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = ["## encoder: QA training tokens/s vs transformers ElectraForQuestionAnswering", "",
             f"Device {device}, fp32, AdamW; median step after 1 warmup, interleaved; non-pad tokens.", "",
             "| shape | batch x max_seq_length | ours tok/s | HF tok/s | ours / HF |", "|---|---|---:|---:|---:|"]
    for name, shape, batch, seq, steps in (QUICK_CASES if quick else CASES):
        r = bench_case(shape, batch, seq, steps, device)
        lines.append(f"| {name} ({shape['layers']} x {shape['embed_dim']}) | {batch} x {seq} | {r['ours']:.0f} "
                     f"| {r['hf']:.0f} | {r['ours'] / r['hf']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
