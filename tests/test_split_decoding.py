"""Decoding a whole split in length-sorted batches (generation/decode.py length_batches, decode_prefixes): the same
hypotheses as one-by-one decoding, greedy and beam, through decode_prefixes, the pipeline's `generate` stage and
the generate CLI, in input order.

Prefixes of different lengths share a batch: the generator feeds the common part in one forward and forces the
rest token by token while shorter ones already generate; the tests check that such batches occur.
"""

from __future__ import annotations

import pytest
import torch

from biogpt_train.generation.decode import decode_prefixes, length_batches
from biogpt_train.generation.generator import generate
from tests.helpers import tiny_lm, write_dict

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_length_batches_sorts_longest_first_and_bounds_sentences_and_tokens():
    lengths = [3, 9, 1, 9, 5, 7, 2]
    assert length_batches(lengths, batch_size=3) == [[1, 3, 5], [4, 0, 6], [2]]  # ties keep input order
    # padded tokens: len(batch) * (longest + 1) <= max_tokens
    assert length_batches(lengths, batch_size=16, max_tokens=20) == [[1, 3], [5, 4], [0, 6, 2]]
    assert length_batches([30, 2], batch_size=4, max_tokens=10) == [[0], [1]]  # too long: alone
    assert sorted(i for b in length_batches(lengths, 2, 12) for i in b) == list(range(len(lengths)))
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match="positive"):
        length_batches(lengths, batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        length_batches(lengths, max_tokens=0)


def test_length_batches_max_length_gap_keeps_far_lengths_apart():
    lengths = [100, 98, 60, 97, 30, 59]
    assert length_batches(lengths, batch_size=8) == [[0, 1, 3, 2, 5, 4]]  # fairseq's batches: no gap limit
    assert length_batches(lengths, batch_size=8, max_length_gap=3) == [[0, 1, 3], [2, 5], [4]]
    assert length_batches(lengths, batch_size=8, max_length_gap=0) == [[0], [1], [3], [2], [5], [4]]
    with pytest.raises(ValueError, match="max_length_gap"):
        length_batches(lengths, max_length_gap=-1)


def test_max_length_gap_changes_batches_not_outputs():
    model = tiny_lm(60, max_positions=64, seed=3, eos_boost=1.5, dtype=torch.float32)
    prefixes = varied_prefixes(13, 60, seed=4)
    free, wide = forward_widths(model, lambda: decode_prefixes(model, prefixes, batch_size=8, eos=2, pad=1,
                                                               max_len_b=40))
    capped, narrow = forward_widths(model, lambda: decode_prefixes(model, prefixes, batch_size=8, eos=2, pad=1,
                                                                   max_len_b=40, max_length_gap=2))
    assert capped == free
    assert len([w for w in narrow if w[1] > 1]) > len([w for w in wide if w[1] > 1])  # more, closer batches


def varied_prefixes(n: int, vocab: int, seed: int, low: int = 1, high: int = 30) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(4, vocab, (k,), generator=g).tolist() for k in lengths]


def forward_widths(model, fn):
    """Token widths of every model call during fn() (the first call of a batch is its common prefix + 1)."""
    widths = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(tuple(args[0].shape)),
                                             with_kwargs=True)
    try:
        result = fn()
    finally:
        handle.remove()
    return result, widths


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kwargs", [dict(max_len_b=40), dict(beam=3, max_len_b=40, lenpen=1.2),
                                    dict(min_len=25, no_repeat_ngram_size=2, max_len_b=36)])
def test_length_sorted_batches_equal_one_by_one(dtype, kwargs):
    model = tiny_lm(60, max_positions=64, seed=3, eos_boost=1.5, dtype=dtype)
    prefixes = varied_prefixes(13, 60, seed=4)
    one_by_one = [generate(model, [p], **kwargs)[0] for p in prefixes]
    batched, widths = forward_widths(model, lambda: decode_prefixes(model, prefixes, batch_size=4, max_tokens=90,
                                                                    eos=2, pad=1, **kwargs))
    assert batched == one_by_one  # and in input order
    assert all(h[: len(p)] == p for h, p in zip(batched, prefixes))
    # each batch: one forward over [</s>] + the common prefix, then one token per step; lengths are mixed, so
    # the longer prefixes' tails were forced step by step
    batches = length_batches([len(p) for p in prefixes], 4, 90)
    lengths = [[len(prefixes[i]) for i in b] for b in batches]
    assert [w for w in widths if w[1] > 1] == [(len(b), min(k) + 1) for b, k in zip(batches, lengths)]
    assert sum(max(k) - min(k) for k in lengths) > 10
    assert len({len(b) for b in batches}) > 1  # the token budget made the long batches smaller


# --- the pipeline's generate stage and the CLI ------------------------------------------------------------------
def pipeline_rows(n: int):
    import random

    from tests.test_evaluate import WORDS

    rng = random.Random(5)
    words = [w for w in WORDS if w not in ("...",)]
    return [(str(100 + i), " ".join(rng.choice(words) for _ in range(rng.randint(1, 14))),
             "the answer to the question given the context is yes.") for i in range(n)]


@pytest.mark.parametrize("beam", [1, 2])
def test_pipeline_generate_length_batches_equal_one_by_one(tmp_path, beam):
    from biogpt_train.pipeline import evaluate
    from tests.test_evaluate import make_cfg, save_model, write_prepared

    rows = pipeline_rows(11)
    data = write_prepared(tmp_path / "data", {"valid": rows, "train": rows[:2]})
    cfg = make_cfg("pubmedqa", data, tmp_path)
    cfg.task.learned_prompt = 2
    cfg.task.max_source_positions = 12
    cfg.generation.beam = beam
    run_dir = tmp_path / "run"
    save_model(run_dir, n_prompt=2, max_positions=40)
    out = evaluate.output_paths(cfg, run_dir, "valid")
    texts = {}
    for batch_size, max_tokens in ((1, None), (4, None), (16, 40)):
        cfg.generation.batch_size, cfg.generation.max_tokens = batch_size, max_tokens
        cfg.evaluation.reuse = False
        evaluate.generate(cfg, run_dir)
        texts[batch_size] = (out["bpe"].read_text(encoding="utf-8"), out["detok"].read_text(encoding="utf-8"))
    assert texts[1] == texts[4] == texts[16]
    assert out["pmid"].read_text().split() == [r[0] for r in rows]  # input order
    sources = [line.split(" learned1")[0] for line in texts[1][0].splitlines()]
    assert len({len(s.split()) for s in sources}) > 3  # prefixes of many lengths


@pytest.fixture
def cli_files(tmp_path):
    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary
    from tests.test_generation import WORDS

    write_dict(tmp_path / "dict.txt", WORDS)
    (tmp_path / "bpecodes").write_text("c e 50\nce l 40\ncel l 30\nt h 20\nth e</w> 10\n", encoding="utf-8")
    dictionary = Dictionary.load(tmp_path / "dict.txt")
    dictionary.add_symbol("learned1")
    model = tiny_lm(len(dictionary), max_positions=64, seed=6, eos_boost=1.5)
    save_native(tmp_path / "ckpt.pt", model, dictionary, cfg={"task": {"learned_prompt": 1,
                                                                       "max_source_positions": 30}})
    import random

    rng = random.Random(7)
    words = ["the", "cells", "a", "cat", "is", "of", ".", ","]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(9)]
    (tmp_path / "test.x").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return tmp_path, lines


@pytest.mark.parametrize("beam", ["1", "3"])
def test_cli_length_batches_equal_one_by_one(cli_files, beam):
    from biogpt_train.generation.cli import main

    d, lines = cli_files
    outputs = []
    for batch in (["--batch-size", "1"], ["--batch-size", "4"], ["--batch-size", "9", "--max-tokens", "30"],
                  ["--batch-size", "9", "--max-length-gap", "-1"], ["--batch-size", "9", "--max-length-gap", "3"]):
        out = d / f"out{len(outputs)}.detok"
        assert main(["task", "--checkpoint", str(d / "ckpt.pt"), "--input", str(d / "test.x"), "--output",
                     str(out), "--max-len-b", "50", "--beam", beam, "--device", "cpu", *batch]) == 0
        outputs.append(out.read_text(encoding="utf-8"))
    assert len(set(outputs)) == 1
    decoded = outputs[0].splitlines()
    assert len(decoded) == len(lines)
    assert all(text.startswith(line.split()[0]) for text, line in zip(decoded, lines))  # input order
