"""Encoder QA training throughput: our QAModel + the trainer's `qa` objective vs transformers'
ElectraForQuestionAnswering (its built-in loss), same weights, same batches, same AdamW, in the same process.

One step = forward, (CE(start) + CE(end)) / 2 averaged over the batch, backward, AdamW step. Batches are random
ids shaped like SQuAD features ([CLS] question [SEP] context [SEP], right-padded to the longest in the batch,
lengths drawn between half and all of max_seq_length; one such batch for every round, so the spread measures the
machine, not the batch). Our step and HF's alternate step by step (bench.common.interleave); the table gives the median step time after one warmup step of each, as tokens/s counting
non-pad tokens, with the spread, the step's peak memory and the machine's load.

    python -m bench --only encoder_bench [--quick]      or      python -m bench.encoder_bench [--quick]
"""

from __future__ import annotations

import sys

import torch

from bench.common import interleave, load, median_time, peak_mem, spread_note

# (name, EncoderConfig shape, batch, max_seq_length, max rounds)
CASES = [("electra-small shape", dict(embedding_size=128, embed_dim=256, layers=12, heads=4, ffn_dim=1024), 8, 384, 9),
         ("biom-electra-base shape", dict(embedding_size=768, embed_dim=768, layers=12, heads=12, ffn_dim=3072), 4, 512,
          3)]
QUICK_CASES = [("electra-small shape", dict(embedding_size=128, embed_dim=256, layers=4, heads=4, ffn_dim=1024), 4,
                256, 3)]
VOCAB = 28895


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
    (b,) = _batches(1, batch, seq, device)

    def step_ours(b):
        opt_ours.zero_grad(set_to_none=True)
        (qa_loss(ours, b, device) / b["ntokens"]).backward()
        opt_ours.step()

    def step_hf(b):
        opt_hf.zero_grad(set_to_none=True)
        hf(**{k: v for k, v in b.items() if k != "ntokens"}).loss.backward()
        opt_hf.step()

    runners = {"ours": lambda: step_ours(b), "hf": lambda: step_hf(b)}
    for fn in runners.values():  # warmup
        fn()
    res = interleave(runners, device, min_rounds=min(3, steps), max_rounds=steps, max_seconds=120)
    tokens = int(b["attention_mask"].sum())
    return {"tok_s": {k: tokens / median_time(v) for k, v in res["runs"].items()},
            "mem": {k: peak_mem(v) for k, v in res["runs"].items()}, "rounds": res["rounds"],
            "spread": max(res["spread"].values())}


def run(quick: bool = False) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = ["## encoder: QA training tokens/s vs transformers ElectraForQuestionAnswering", "",
             f"Device {device}, fp32, AdamW; median step after 1 warmup, interleaved; non-pad tokens; mem = peak "
             "memory the step adds (GB); spread = interquartile range / median (the larger side); load = 1-minute "
             "load average / CPUs.", "",
             "| shape | batch x max_seq_length | ours tok/s | HF tok/s | ours / HF | ours mem | HF mem | rounds "
             "| spread | load |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, shape, batch, seq, steps in (QUICK_CASES if quick else CASES):
        r = bench_case(shape, batch, seq, steps, device)
        tok = r["tok_s"]
        lines.append(f"| {name} ({shape['layers']} x {shape['embed_dim']}) | {batch} x {seq} | {tok['ours']:.0f} "
                     f"| {tok['hf']:.0f} | **{tok['ours'] / tok['hf']:.2f}** | {r['mem']['ours']:.2f} "
                     f"| {r['mem']['hf']:.2f} | {r['rounds']} | {spread_note(r['spread'])} | {load()} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
