"""Decoding throughput: our generator vs transformers' ``generate`` on the same weights, same process.

Greedy and beam 5, batch 1 and 8. Every sentence gets a random 16-token prefix (forced: [</s>] + prefix is the
input for both) and exactly ``new`` generated tokens (min length = max length, so neither stops early); tokens/s
counts generated tokens per sentence (a beam hypothesis counts once). The two implementations alternate run by run
after a warmup, so machine load affects both alike; the median is reported.

    python -m bench --only generation_bench [--quick]      or      python -m bench.generation_bench [--quick]
"""

from __future__ import annotations

import sys

import torch

from bench.common import interleave, load, median_time, spread_note

from biogpt_train.generation.generator import generate
from biogpt_train.models.presets import get_preset
from biogpt_train.models.biogpt import ModelConfig, TransformerLM

EOS, PAD = 2, 1
PREFIX = 16
# (name, config, new tokens, timed runs per implementation)
TINY = ("tiny (2L d128 V8k)", ModelConfig(vocab_size=8192, embed_dim=128, layers=2, heads=4, ffn_dim=512,
                                           max_positions=512, dropout=0.0, attention_dropout=0.0), 32, 3)
SMALL = ("small (6L d512 V42k)", get_preset("small"), 64, 3)
# the 347M shape the issue also names: ~1.4 GB of fp32 weights read per step, so fewer tokens and rounds
BIOGPT = ("biogpt (24L d1024 V42k)", get_preset("biogpt"), 16, 2)


def _hf_copy(model: TransformerLM):
    """BioGptForCausalLM with the same weights (fairseq decoder.* -> biogpt.*, reference §2.2)."""
    import transformers

    c = model.cfg
    hf = transformers.BioGptForCausalLM(transformers.BioGptConfig(
        vocab_size=c.vocab_size, hidden_size=c.embed_dim, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        intermediate_size=c.ffn_dim, max_position_embeddings=c.max_positions, hidden_act="gelu",
        scale_embedding=True, pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, activation_dropout=0.0, layerdrop=0.0,
    ))
    sd = {("output_projection.weight" if k == "decoder.output_projection.weight" else "biogpt." + k[8:]): v
          for k, v in model.state_dict().items() if k != "decoder.version"}
    hf.load_state_dict(sd, strict=True)
    return hf.to(next(model.parameters()).device).eval()


def _runners(model, hf, prefixes, beam, new, out):
    device = next(model.parameters()).device
    inputs = torch.tensor([[EOS] + p for p in prefixes], device=device)
    limit = PREFIX + new

    def ours():
        out["ours"] = generate(model, prefixes, beam=beam, max_len_b=limit, min_len=limit)
        assert all(len(h) == limit for h in out["ours"])

    def fast():  # packs the weights in every call, as a single generate() call does
        out["fast"] = generate(model, prefixes, beam=beam, max_len_b=limit, min_len=limit, fast_kernels=True)

    def theirs():
        extra = {"early_stopping": True} if beam > 1 else {}  # fairseq's stop rule
        seqs = hf.generate(inputs, num_beams=beam, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                           eos_token_id=EOS, pad_token_id=PAD, suppress_tokens=[PAD], **extra)
        assert seqs.shape[1] == 1 + limit
        out["hf"] = seqs[:, 1:].tolist()

    runners = {"ours": ours, "hf": theirs}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        runners["fast"] = fast
    return runners


def _same_rate(a: list[list[int]], b: list[list[int]]) -> str:
    """'yes' when every sequence is equal, else the share of equal generated tokens up to the first difference."""
    if a == b:
        return "yes"
    same = total = 0
    for x, y in zip(a, b):
        total += len(y) - PREFIX
        for s, t in zip(x[PREFIX:], y[PREFIX:]):
            if s != t:
                break
            same += 1
    return f"no ({100 * same / total:.0f}% before the first difference)"


def bench(name, cfg, new, reps, device) -> list[str]:
    torch.manual_seed(0)
    model = TransformerLM(cfg).to(device).eval()
    hf = _hf_copy(model)
    rows = []
    for beam in (1, 5):
        for batch in (1, 8):
            prefixes = torch.randint(4, cfg.vocab_size, (batch, PREFIX)).tolist()
            outputs = {}
            runners = _runners(model, hf, prefixes, beam, new, outputs)
            for fn in runners.values():  # warmup
                fn()
            res = interleave(runners, device, min_rounds=reps, max_rounds=3 * reps, max_seconds=60)
            tok_s = {k: batch * new / median_time(v) for k, v in res["runs"].items()}
            # greedy is defined identically (fp32); HF's beam scores only generated tokens, so beams may differ
            same = "yes" if outputs["ours"] == outputs["hf"] else ("no" if beam == 1 else "n/a")
            fast = "n/a | n/a | n/a"
            if "fast" in tok_s:  # tokens of the fast kernels: equal to the default's (greedy: also HF's)?
                fast_same = _same_rate(outputs["fast"], outputs["ours"])
                fast = f"{tok_s['fast']:,.0f} | **{tok_s['fast'] / tok_s['hf']:.2f}** | {fast_same}"
            rows.append(f"| {name} | {'greedy' if beam == 1 else f'beam {beam}'} | {batch} | {tok_s['ours']:,.0f} "
                        f"| {tok_s['hf']:,.0f} | **{tok_s['ours'] / tok_s['hf']:.2f}** | {same} | {fast} | "
                        f"{res['rounds']} | {spread_note(max(res['spread'].values()))} | {load()} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def run(quick: bool = False) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # one decoding step is many tiny ops: on a shared CPU, intra-op threads mostly add contention
        torch.set_num_threads(1)
    rows = []
    all_threads = device.type == "cpu" and threads > 1 and not quick  # what generate() gets in a default process
    try:
        for name, cfg, new, reps in [TINY] + ([] if quick else [SMALL, BIOGPT]):
            rows += bench(name, cfg, new, reps, device)
        if all_threads:
            torch.set_num_threads(threads)
            name, cfg, new, reps = SMALL
            rows += bench(f"{name}, {threads} threads", cfg, new, reps, device)
    finally:
        torch.set_num_threads(threads)
    where = torch.cuda.get_device_name() if device.type == "cuda" else (
        "CPU, 1 thread" + (f" (the small preset again at this process's {threads} threads, as a default "
                           "process decodes)" if all_threads else ""))
    return "\n".join([
        "## decoding: tokens/s vs transformers generate",
        "",
        f"{where}, fp32, KV cache in both. Prefix {PREFIX} tokens (forced), then exactly the stated number of new "
        f"tokens (tiny: {TINY[2]}, small: {SMALL[2]}, biogpt: {BIOGPT[2]}); generated tokens per second, beam "
        "hypotheses counted once; medians of alternating runs after a warmup (until the spread is < 10% or 60 s). "
        "Greedy breaks near-ties as fairseq (cumulative fp32 top-k); 'same tokens' compares the greedy outputs with "
        "HF's. 'fast' is "
        "generate(fast_kernels=True) (prepacked oneDNN linears, packing included in every call; another fp32 "
        "summation order), timed in the same rounds; 'fast = default' compares its tokens with ours (default).",
        "",
        "| config | search | batch | ours tok/s | HF tok/s | ours / HF | same tokens | fast tok/s | fast / HF "
        "| fast = default | rounds | spread | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
