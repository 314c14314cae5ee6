"""Decoding a whole task split: length-sorted batches vs one by one, ours and transformers' ``generate``.

A split of prompts of 200-900 tokens (PubMedQA's test prompts are ~900), greedy, the same random weights for
both. The final LayerNorm's bias is pushed towards </s> (as the tests' tiny models) so that the answers end by
themselves after a few to a few dozen tokens, as task answers do; the length limit (1023 = max_positions - 1)
is never reached. Rows, timed as one pass over the split each and alternated round by round:

* ours, batched: ``decode_prefixes`` (length-sorted batches of ``batch_size`` sentences, ``max_tokens`` padded
  prefix tokens, prefixes within ``generation.max_length_gap``'s default of the longest), the path of the
  generate stage and the generate CLI;
* ours, fairseq's batches: the same without the gap limit (``max_length_gap=None``);
* ours, one by one: ``generate`` per prompt;
* HF one by one: ``BioGptForCausalLM.generate`` per prompt ([</s>] + prompt, greedy, <pad> suppressed);
* HF batched: the same length-sorted batches, left-padded with an attention mask (generate derives the positions
  from the mask).

'same' compares every row's tokens with ours one by one (exact greedy: all must be equal).

    python -m bench --only split_bench [--quick]      or      python -m bench.split_bench [--quick]
"""

from __future__ import annotations

import sys

import torch

from bench.common import interleave, load, median_time, spread_note
from bench.generation_bench import EOS, PAD, _hf_copy

from biogpt_train.config.schema import GenerationConfig
from biogpt_train.generation.decode import decode_prefixes, length_batches
from biogpt_train.generation.generator import generate
from biogpt_train.models.biogpt import ModelConfig, TransformerLM
from biogpt_train.models.presets import get_preset

GAP = GenerationConfig.max_length_gap  # what the generate stage and the CLI use by default
# (name, config, prompts, shortest, longest, batch_size, max_tokens, </s> boost, timed rounds)
SMALL = get_preset("small", dropout=0.0, attention_dropout=0.0)
# PubMedQA's 500 test prompts (question + contexts, BioGPT's BPE): median 281 tokens, 16 consecutive ones in length
# order span 7 tokens (measured on ../shared/data/PubMedQA/test_set_inputs.json); 32 prompts over 270-292 are a
# slice of a split with that density (a little sparser). The 200-900 split is the far-apart worst case.
FULL = [("small, PubMedQA-like lengths", SMALL, 32, 270, 292, 16, 8192, 4.0, 2),
        ("small, lengths 200-900", SMALL, 16, 200, 900, 8, 8192, 4.0, 2)]
QUICK = ("tiny (2L d128 V8k)", ModelConfig(vocab_size=8192, embed_dim=128, layers=2, heads=4, ffn_dim=512,
                                           max_positions=1024, dropout=0.0, attention_dropout=0.0),
         24, 100, 400, 8, 2048, 4.5, 2)


def make_model(cfg, eos_boost: float, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    model = TransformerLM(cfg).eval()
    with torch.no_grad():  # a random tied-embedding LM repeats its input: random final LayerNorm, </s> bias
        model.decoder.layer_norm.weight.normal_()
        e = model.decoder.embed_tokens.weight[EOS]
        model.decoder.layer_norm.bias += eos_boost * e / e.dot(e)
    return model


def prompts(n: int, low: int, high: int, vocab: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=g).tolist()
    return [torch.randint(4, vocab, (k,), generator=g).tolist() for k in lengths]


def _runners(model, hf, prefixes, batch_size, max_tokens, out):
    limit = model.cfg.max_positions - 1
    batches = length_batches([len(p) for p in prefixes], batch_size, max_tokens, GAP)
    hf_kw = dict(do_sample=False, num_beams=1, eos_token_id=EOS, pad_token_id=PAD, suppress_tokens=[PAD])

    def ours_batched():
        out["ours batched"] = decode_prefixes(model, prefixes, batch_size=batch_size, max_tokens=max_tokens,
                                              max_length_gap=GAP, max_len_b=limit, eos=EOS, pad=PAD)

    def ours_fairseq_batches():
        out["ours, no gap limit"] = decode_prefixes(model, prefixes, batch_size=batch_size, max_tokens=max_tokens,
                                                    max_len_b=limit, eos=EOS, pad=PAD)

    def ours_one():
        out["ours 1-by-1"] = [generate(model, [p], max_len_b=limit, eos=EOS, pad=PAD)[0] for p in prefixes]

    def hf_one():
        res = []
        for p in prefixes:
            seq = hf.generate(torch.tensor([[EOS] + p]), max_length=limit + 1, **hf_kw)[0, 1:].tolist()
            res.append(seq[: seq.index(EOS)] if EOS in seq else seq)
        out["HF 1-by-1"] = res

    def hf_batched():
        res = [None] * len(prefixes)
        for idx in batches:
            width = max(len(prefixes[i]) for i in idx) + 1
            ids = torch.full((len(idx), width), PAD, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):  # left padding
                seq = [EOS] + prefixes[i]
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
            # the longest row may grow to the limit; every row stops at its own </s>
            seqs = hf.generate(ids, attention_mask=mask, max_new_tokens=limit + 1 - width, **hf_kw)
            for row, i in enumerate(idx):
                seq = seqs[row, width:].tolist()
                res[i] = prefixes[i] + (seq[: seq.index(EOS)] if EOS in seq else seq)
        out["HF batched"] = res

    return {"ours batched": ours_batched, "ours, no gap limit": ours_fairseq_batches, "ours 1-by-1": ours_one, "HF 1-by-1": hf_one, "HF batched": hf_batched}


def bench(name, cfg, n, low, high, batch_size, max_tokens, boost, rounds) -> tuple[list[str], str]:
    model = make_model(cfg, boost)
    hf = _hf_copy(model)
    prefixes = prompts(n, low, high, cfg.vocab_size)
    outputs: dict = {}
    runners = _runners(model, hf, prefixes, batch_size, max_tokens, outputs)
    res = interleave(runners, torch.device("cpu"), min_rounds=rounds, max_rounds=rounds, max_seconds=0)
    ref = outputs["ours 1-by-1"]
    new = [len(h) - len(p) for h, p in zip(ref, prefixes)]
    base = median_time(res["runs"]["ours 1-by-1"])
    rows = []
    for key, runs in res["runs"].items():
        t = median_time(runs)
        same = sum(a == b for a, b in zip(outputs[key], ref))
        rows.append(f"| {name} | {key} | {t:.1f} | {n / t:.2f} | {sum(new) / t:.1f} | **{base / t:.2f}** | "
                    f"{same}/{n} | {res['rounds']} | {spread_note(res['spread'][key])} | {load()} |")
        print(rows[-1], file=sys.stderr, flush=True)
    batches = length_batches([len(p) for p in prefixes], batch_size, max_tokens, GAP)
    spread = sum(max(len(prefixes[i]) for i in b) - min(len(prefixes[i]) for i in b) for b in batches)
    note = (f"{name}: {n} prompts of {low}-{high} tokens ({sum(map(len, prefixes))} in all), "
            f"{sum(new)} generated (per prompt {min(new)}-{max(new)}); batch_size {batch_size}, max_tokens "
            f"{max_tokens}, max_length_gap {GAP}: {len(batches)} batches, {spread} forced steps after the batches' "
            "common prefixes.")
    return rows, note


def run(quick: bool = False) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: single-thread numbers compare cleanly
    try:
        results = [bench(*case) for case in ([QUICK] if quick else FULL)]
        rows = [row for r, _ in results for row in r]
        note = "\n\n".join(n for _, n in results)
    finally:
        torch.set_num_threads(threads)
    return "\n".join([
        "## whole-split decoding: length-sorted batches vs one by one (greedy)",
        "",
        "CPU, 1 thread, fp32, random weights with a </s> bias (answers end by themselves). One pass over the split "
        "per row and round, rows alternated; median seconds. 'vs ours 1-by-1' = its time / the row's time; "
        "'same' = prompts whose tokens equal ours one by one.",
        "",
        note,
        "",
        "| config | decoding | s / split | prompts/s | new tok/s | vs ours 1-by-1 | same | rounds | spread | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
