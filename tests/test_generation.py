"""Decoding: exact fairseq SequenceGenerator semantics, equality with transformers, batched == unbatched.

Tiny random models in float64 (so that batched and unbatched forwards cannot flip an argmax by rounding). The final
LayerNorm gets random weights (a freshly initialised tied-embedding LM just repeats its input token) and a bias
towards </s>, so that hypotheses end at different lengths.
"""

import math

import pytest
import torch

from biogpt_train.generation.generator import Hypothesis, generate, generate_nbest
from tests.helpers import EOS, PAD, tiny_lm, write_dict

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PREFIXES = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13, 14, 15], [16, 17]]


def make_model(seed=1, eos_boost=1.0, vocab=48, max_positions=128):
    return tiny_lm(vocab, max_positions=max_positions, seed=seed, eos_boost=eos_boost, dtype=torch.float64)


@pytest.fixture(scope="module")
def model():
    return make_model()


def to_hf(model):
    """The same weights in transformers' BioGptForCausalLM (key map decoder.* -> biogpt.*, reference §2.2)."""
    from transformers import BioGptConfig, BioGptForCausalLM

    c = model.cfg
    hf_cfg = BioGptConfig(
        vocab_size=c.vocab_size, hidden_size=c.embed_dim, num_hidden_layers=c.layers, num_attention_heads=c.heads,
        intermediate_size=c.ffn_dim, max_position_embeddings=c.max_positions, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, activation_dropout=0.0, layerdrop=0.0,
        layer_norm_eps=1e-5, scale_embedding=True, pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS,
        tie_word_embeddings=True,
    )
    hf = BioGptForCausalLM(hf_cfg).to(torch.float64).eval()
    state = {}
    for key, value in model.state_dict().items():
        if key == "decoder.version":
            continue
        state["output_projection.weight" if key == "decoder.output_projection.weight"
              else "biogpt." + key[len("decoder."):]] = value
    hf.load_state_dict(state, strict=True)
    return hf


def hf_generate(hf, prefix, **kwargs):
    """HF starts from the same </s>; fairseq never picks <pad>, HF needs suppress_tokens for that."""
    out = hf.generate(torch.tensor([[EOS] + prefix]), eos_token_id=EOS, pad_token_id=PAD, suppress_tokens=[PAD],
                      do_sample=False, **kwargs)
    return out


def strip(seq):
    assert seq[0] == EOS
    seq = seq[1:]
    return seq[: seq.index(EOS)] if EOS in seq else seq


# ---------------------------------------------------------------------------------------------------------------
# A literal, slow transcription of fairseq's SequenceGenerator for one sentence: no KV cache (the whole sequence is
# re-run each step), Python lists, and beams that can only carry -inf dropped instead of kept.
def fairseq_reference(model, prefix, *, beam, max_len, min_len=1, lenpen=1.0, ngram=0, fp32_topk=False):
    """``fp32_topk``: keep the cumulative scores in float32 and choose candidates with ``torch.topk`` over
    ``lprobs + score``, as fairseq's BeamSearch.step does (exact for beam 1, where its view is [1, V])."""
    V = model.cfg.vocab_size
    prefix = prefix[:max_len]
    beams = [([EOS], 0.0)]  # step 0 expands only the first beam
    finished = []
    for step in range(max_len + 1):
        cands = []
        for b, (toks, score) in enumerate(beams):
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([toks]))[0, -1], -1).tolist()
            if step >= max_len:
                allowed = {EOS}
            elif step < len(prefix):
                allowed = {prefix[step]}
            else:
                allowed = set(range(V)) - {PAD}
                if step < min_len:
                    allowed.discard(EOS)
                if ngram:
                    key = toks[len(toks) - ngram + 1:] if ngram > 1 else []
                    for i in range(len(toks) - ngram + 1):
                        if toks[i:i + ngram - 1] == key:
                            allowed.discard(toks[i + ngram - 1])
            if fp32_topk:
                row = torch.full((V,), -math.inf)
                idx = torch.tensor(sorted(allowed))
                row[idx] = torch.tensor(lp, dtype=torch.float32)[idx] + torch.tensor(score, dtype=torch.float32)
                cands.append(row)
            else:
                cands += [(score + lp[v], b, v) for v in sorted(allowed)]
        if fp32_topk:
            flat = torch.cat(cands)
            values, indices = flat.topk(min(2 * beam, flat.numel() - 1))
            cands = [(x, i // V, i % V) for x, i in zip(values.tolist(), indices.tolist()) if x > -math.inf]
        cands = sorted(cands, key=lambda c: -c[0])[: 2 * beam]
        for score, b, v in cands[:beam]:
            if v == EOS and len(finished) < beam:
                finished.append(Hypothesis(beams[b][0][1:], score / (step + 1) ** lenpen))
        if len(finished) == beam or step == max_len:
            break
        beams = [(beams[b][0] + [v], score) for score, b, v in cands if v != EOS][:beam]
    return sorted(finished, key=lambda h: -h.score)


def assert_same_nbest(got, want):
    assert [h.tokens for h in got] == [h.tokens for h in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-9)


@pytest.mark.parametrize("opts", [
    dict(beam=1, max_len=30),
    dict(beam=4, max_len=30),
    dict(beam=3, max_len=25, lenpen=2.0, min_len=12),
    dict(beam=4, max_len=25, lenpen=0.5, ngram=2),
    dict(beam=2, max_len=6),  # a short limit: the forced </s> ends most hypotheses
])
def test_matches_fairseq_reference(model, opts):
    kwargs = dict(beam=opts["beam"], max_len_b=opts["max_len"], min_len=opts.get("min_len", 1),
                  lenpen=opts.get("lenpen", 1.0), no_repeat_ngram_size=opts.get("ngram", 0))
    got = generate_nbest(model, PREFIXES, **kwargs)
    for prefix, hyps in zip(PREFIXES, got):
        assert_same_nbest(hyps, fairseq_reference(model, prefix, **opts))


# --- transformers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix,min_len,ngram", [
    ([], 1, 2), ([9, 10, 11, 12, 13, 14, 15], 1, 3), ([16, 17], 1, 2),  # end in </s> after 35-45 tokens
    ([8], 1, 0), ([9, 10, 11, 12, 13, 14, 15], 1, 0),  # run to the limit
    ([5, 6, 7], 45, 0), ([8], 50, 3),  # would stop at once without min_len
])
def test_greedy_equals_transformers(model, prefix, min_len, ngram):
    hf = to_hf(model)
    new = 60
    want = strip(hf_generate(hf, prefix, num_beams=1, max_new_tokens=new, min_length=min_len + 1,  # HF counts </s>
                             no_repeat_ngram_size=ngram)[0].tolist())
    got = generate(model, [prefix], max_len_b=len(prefix) + new, min_len=min_len, no_repeat_ngram_size=ngram)[0]
    assert got == want
    assert len(got) >= len(prefix) + 32  # a real comparison, not an early </s>


@pytest.mark.parametrize("prefix,lenpen", [
    ([], 1.0), ([], 2.0), ([], 0.5), ([], 0.0), ([6, 7], 0.0), ([11, 12, 13, 14], 0.0),
])
def test_beam_equals_transformers_where_semantics_coincide(prefix, lenpen):
    """HF (num_beams, early_stopping=True) is fairseq's beam search except: HF scores only the generated tokens and
    normalises by the generated length (fairseq: prefix included), and at max length HF keeps unfinished beams
    (fairseq forces </s>). So: no prefix, or lenpen 0 (then the prefix adds the same constant to every
    hypothesis), and hypotheses that all end before the limit."""
    model = make_model(seed=1, eos_boost=1.2)  # hypotheses of 1 to 23 tokens
    hf = to_hf(model)
    k, new = 4, 40
    out = hf_generate(hf, prefix, num_beams=k, num_return_sequences=k, early_stopping=True, length_penalty=lenpen,
                      max_new_tokens=new, output_scores=True, return_dict_in_generate=True)
    ours = generate_nbest(model, [prefix], beam=k, lenpen=lenpen, max_len_b=len(prefix) + new)[0]
    assert all(len(h.tokens) < len(prefix) + new for h in ours)  # precondition: every hypothesis ended in </s>
    assert [h.tokens for h in ours] == [strip(s) for s in out.sequences.tolist()]
    if not prefix:
        # HF keeps beam scores in float32
        assert [h.score for h in ours] == pytest.approx(out.sequences_scores.tolist(), rel=1e-6)


# --- batching, cache --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(), dict(beam=4), dict(beam=3, min_len=9, no_repeat_ngram_size=2, lenpen=1.5),
    dict(min_len=10, no_repeat_ngram_size=1, max_len_b=20),
])
def test_batched_equals_unbatched(model, kwargs):
    batched = generate_nbest(model, PREFIXES, **kwargs)
    for prefix, hyps in zip(PREFIXES, batched):
        assert_same_nbest(hyps, generate_nbest(model, [prefix], **kwargs)[0])


def forward_shapes(model, fn):
    """(fn(), the token shapes of every model forward it made)."""
    shapes = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: shapes.append(tuple(args[0].shape)),
                                             with_kwargs=True)
    try:
        return fn(), shapes
    finally:
        handle.remove()


def test_prefix_goes_through_the_cache_once_then_one_token_per_step(model):
    _, shapes = forward_shapes(model, lambda: generate(model, [[5, 6, 7, 8], [9, 10]], beam=2, max_len_b=12,
                                                       min_len=12))
    assert shapes[0] == (2, 3)  # [</s>] + the 2 positions both prefixes share, one pass
    assert all(s[1] == 1 for s in shapes[1:])
    assert len(shapes) == 1 + 12 - 2  # then one step per remaining position (the last one scores </s>)


@pytest.mark.parametrize("kwargs", [dict(), dict(sampling=True, seed=3), dict(sampling=True, topk=5, seed=3)])
def test_tokens_only_decoding_skips_the_pass_that_only_scores_the_forced_eos(model, kwargs):
    # 12 positions, 2 shared by the prefixes: the prefill, then 9 steps that choose tokens; the 10th forward would
    # only score the </s> forced at the limit, which generate() does not return
    prefixes = [[5, 6, 7, 8], [9, 10]]
    nbest, with_score = forward_shapes(model, lambda: generate_nbest(model, prefixes, max_len_b=12, min_len=12,
                                                                     **kwargs))
    tokens, without = forward_shapes(model, lambda: generate(model, prefixes, max_len_b=12, min_len=12, **kwargs))
    assert (len(with_score), len(without)) == (1 + 12 - 2, 1 + 12 - 2 - 1)
    assert tokens == [h[0].tokens for h in nbest] and all(len(t) == 12 for t in tokens)
    # hypotheses that end before the limit keep their score; those cut at it get NaN without the scoring pass
    mixed = generate_nbest(model, PREFIXES, max_len_b=9, scores=False, **kwargs)
    full = generate_nbest(model, PREFIXES, max_len_b=9, **kwargs)
    assert [h[0].tokens for h in mixed] == [h[0].tokens for h in full]
    for m, f in zip(mixed, full):
        assert math.isnan(m[0].score) if len(f[0].tokens) == 9 else m[0].score == f[0].score
    assert any(len(f[0].tokens) < 9 for f in full) and any(len(f[0].tokens) == 9 for f in full)


# --- constraints ---------------------------------------------------------------------------------------------------
def test_prefix_is_forced_and_returned(model):
    for prefix, hyp in zip(PREFIXES, generate(model, PREFIXES, beam=2, max_len_b=30)):
        assert hyp[: len(prefix)] == prefix
        assert EOS not in hyp and PAD not in hyp


def test_min_len_counts_the_prefix():
    model = make_model(eos_boost=10.0)  # </s> wins wherever it is allowed
    for prefix in PREFIXES:
        for min_len in (0, 1, 5, 10):
            assert len(generate(model, [prefix], max_len_b=60, min_len=min_len)[0]) == max(min_len, len(prefix))
            assert len(generate(model, [prefix], beam=3, max_len_b=60, min_len=min_len)[0]) >= min_len


def test_max_len_counts_the_prefix(model):
    prefix = [9, 10, 11, 12, 13, 14, 15]
    for beam in (1, 3):
        assert len(generate(model, [prefix], beam=beam, max_len_b=10, min_len=10)[0]) == 10
        # a prefix longer than the limit is cut, as fairseq forces it only below max_len
        assert generate(model, [prefix], beam=beam, max_len_b=4, min_len=0)[0] == prefix[:4]
    # max_positions - 1 bounds it too (the leading </s> takes a position), and so does the model's own size
    assert len(generate(model, [prefix], max_len_b=1024, max_positions=16, min_len=15)[0]) == 15
    assert len(generate(model, [prefix], max_len_b=1024, min_len=127)[0]) == 127  # model max_positions=128


def test_no_repeat_ngram(model):
    for n in (2, 3):
        for beam in (1, 3):
            for prefix, hyp in zip(PREFIXES, generate(model, PREFIXES, beam=beam, no_repeat_ngram_size=n,
                                                      max_len_b=60, min_len=40)):
                seq = [EOS] + hyp
                seen = set()
                for end in range(n, len(seq) + 1):
                    gram = tuple(seq[end - n:end])
                    assert end <= len(prefix) + 1 or gram not in seen, (n, beam, prefix, hyp)
                    seen.add(gram)
    plain = generate(model, [[8]], max_len_b=60)[0]  # without the ban, bigrams do repeat
    assert any(plain[i:i + 2] == plain[j:j + 2] for i in range(len(plain)) for j in range(i + 1, len(plain) - 1))


def test_sampling_is_seeded(model):
    kw = dict(sampling=True, max_len_b=50)
    a = generate(model, PREFIXES, seed=3, **kw)
    assert a == generate(model, PREFIXES, seed=3, **kw)
    assert a != generate(model, PREFIXES, seed=4, **kw)
    assert generate(model, PREFIXES, seed=5, temperature=0.7, topk=5, **kw) == \
        generate(model, PREFIXES, seed=5, temperature=0.7, topk=5, **kw)
    for prefix, hyp in zip(PREFIXES, a):
        assert hyp[: len(prefix)] == prefix
    # top-1 and a top-p that keeps only the most likely token are greedy
    greedy = generate(model, PREFIXES, max_len_b=50)
    assert generate(model, PREFIXES, seed=0, topk=1, **kw) == greedy
    assert generate(model, PREFIXES, seed=0, topp=1e-6, **kw) == greedy


def test_sampling_respects_topk(model):
    # with topk=2 every free token is one of the two most likely at its step
    prefix = [5, 6]
    hyp = generate(model, [prefix], sampling=True, topk=2, seed=1, max_len_b=40, min_len=40)[0]
    seq = [EOS] + hyp
    with torch.no_grad():
        logits = model(torch.tensor([seq]))[0]
    logits[:, PAD] = -math.inf
    logits[:, EOS] = -math.inf  # min_len forbids </s> everywhere here
    for pos in range(len(prefix), len(hyp)):
        assert seq[pos + 1] in logits[pos].topk(2).indices.tolist()


def test_topp_keeps_the_token_that_crosses_the_threshold():
    from biogpt_train.generation.generator import _sample

    # fairseq: keep the tokens whose cumulative probability is below topp, plus the one that crosses it
    lprobs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(2000, 4)
    g = torch.Generator().manual_seed(0)
    for topp, allowed in ((0.6, {0, 1}), (0.5, {0}), (0.81, {0, 1, 2}), (0.4, {0})):
        drawn = set(_sample(lprobs, 0, topp, g).tolist())
        assert drawn == allowed, topp
    assert set(_sample(lprobs, 2, 0.0, g).tolist()) == {0, 1}  # top-k


def test_model_mode_is_restored(model):
    model.train()
    try:
        generate(model, [[5]], max_len_b=5)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("kwargs,match", [
    (dict(prefixes=[[5, EOS, 6]]), "</s>"),
    (dict(prefixes=[[5, PAD]]), "<pad>"),
    (dict(prefixes=[[5, 48]]), "out of range"),
    (dict(beam=2, sampling=True), "beam=1"),
    (dict(topk=5), "sampling=True"),
    (dict(sampling=True, topk=5, topp=0.9), "either"),
    (dict(beam=24), "2\\*beam"),
    (dict(min_len=50, max_len_b=20), "min_len"),
    (dict(temperature=0.0), "temperature"),
])
def test_clear_errors(model, kwargs, match):
    prefixes = kwargs.pop("prefixes", [[5]])
    with pytest.raises(ValueError, match=match):
        generate(model, prefixes, **kwargs)


def test_empty_batch(model):
    assert generate(model, []) == []


# --- command line / decode_file -----------------------------------------------------------------------------------
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# every lowercase word encodes without <unk>: single letters (word-final or continued) plus the merges' results
WORDS = [".", ",", "...", "the", "th@@", "ce@@", "cel@@", "cell@@", *LETTERS, *(c + "@@" for c in LETTERS)]


@pytest.fixture
def task_files(tmp_path):
    """A tiny dict.txt / bpecodes, a native checkpoint fine-tuned with 3 learned prompt tokens, source lines."""
    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary

    write_dict(tmp_path / "dict.txt", WORDS)
    (tmp_path / "bpecodes").write_text("c e 50\nce l 40\ncel l 30\nt h 20\nth e</w> 10\n", encoding="utf-8")
    dictionary = Dictionary.load(tmp_path / "dict.txt")
    base = len(dictionary)
    for k in (1, 2, 3):
        dictionary.add_symbol(f"learned{k}")
    model = make_model(vocab=len(dictionary), max_positions=64).float()
    save_native(tmp_path / "ckpt.pt", model, dictionary,
                cfg={"task": {"learned_prompt": 3, "max_source_positions": 6}})
    lines = ["the cells .", "a cat", "", "the cat is the cell of the cat ."]
    (tmp_path / "test.x").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return tmp_path, model, base, lines


def test_cli_task_decoding_writes_one_line_per_example(task_files):
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer
    from biogpt_train.generation.cli import main

    d, model, base, lines = task_files
    out = d / "test.detok"
    # prompt and max_source_positions come from the checkpoint's task config; the dictionary from the checkpoint
    assert main(["task", "--checkpoint", str(d / "ckpt.pt"), "--input", str(d / "test.x"), "--output", str(out),
                 "--bpecodes", str(d / "bpecodes"), "--max-len-b", "30", "--batch-size", "3", "--device", "cpu"]) == 0
    got = out.read_text(encoding="utf-8").split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)

    # the same lines by hand: Moses + BPE, ids + </s>, truncation to 6 with '...', prompt, forced decoding
    tok = Tokenizer.from_files(d / "dict.txt", d / "bpecodes")
    for k in (1, 2, 3):
        tok.dictionary.add_symbol(f"learned{k}")
    prompt = [base, base + 1, base + 2]
    for line, text in zip(lines, got):
        src = tok.encode(line)
        if len(src) > 6:
            src = src[:5] + [tok.dictionary.index("...")]
        hyp = generate(model, [src + prompt], max_len_b=30, max_positions=64)[0]
        assert text == tok.decode(hyp)
        assert "learned1 learned2 learned3" in text
    assert got[0].startswith("the cells. learned1 learned2 learned3")  # BPE removed, detokenised
    assert got[3].startswith("the cat i... learned1 learned2 learned3")  # source cut to 6 ids, the last '...'
    assert "<unk>" not in "".join(got)

    # explicit --dict (without the learned words: they are appended) and --learned-prompt give the same output
    out2 = d / "test2.detok"
    main(["task", "--checkpoint", str(d / "ckpt.pt"), "--input", str(d / "test.x"), "--output", str(out2),
          "--bpecodes", str(d / "bpecodes"), "--dict", str(d / "dict.txt"), "--learned-prompt", "3",
          "--max-source-positions", "6", "--max-len-b", "30", "--device", "cpu"])
    assert out2.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")
    assert len(Dictionary.load(d / "dict.txt")) == base  # the dict file itself is untouched


def test_decode_file_inputs_and_checkpoint_formats(task_files):
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.indexed_dataset import write_dataset
    from biogpt_train.data.tokenizer import Tokenizer
    from biogpt_train.generation.decode import decode_file

    d, model, base, lines = task_files
    decode_file(d / "ckpt.pt", d / "test.x", d / "text.detok", bpecodes=d / "bpecodes", max_len_b=30, device="cpu")
    want = (d / "text.detok").read_text()
    # the binarised source (ids + </s>, as fairseq-preprocess writes {split}.x-y.x) needs no BPE codes
    tok = Tokenizer.from_files(d / "dict.txt", d / "bpecodes")
    write_dataset(d / "test.x-y.x", [tok.encode(line) + [EOS] for line in lines], len(tok.dictionary))
    decode_file(d / "ckpt.pt", d / "test.x-y.x", d / "bin.detok", input_format="bin", max_len_b=30, device="cpu")
    assert (d / "bin.detok").read_text() == want
    # BPE'd lines (BioGPT's *.tok.bpe.x)
    (d / "test.bpe").write_text("".join(line + "\n" for line in tok.bpe_encode_batch(lines)), encoding="utf-8")
    decode_file(d / "ckpt.pt", d / "test.bpe", d / "bpe.detok", input_format="bpe", max_len_b=30, device="cpu")
    assert (d / "bpe.detok").read_text() == want
    # a fairseq checkpoint.pt (no dictionary inside: dict.txt beside it; learned prompt from cfg.task)
    fairseq_dir = d / "fairseq"
    fairseq_dir.mkdir()
    (fairseq_dir / "dict.txt").write_bytes((d / "dict.txt").read_bytes())
    torch.save({"cfg": {"model": {"decoder_attention_heads": model.cfg.heads},
                        "task": {"learned_prompt": 3, "max_source_positions": 6}},
                "model": model.state_dict()}, fairseq_dir / "checkpoint.pt")
    decode_file(fairseq_dir / "checkpoint.pt", d / "test.x", d / "fairseq.detok", bpecodes=d / "bpecodes",
                max_len_b=30, device="cpu")
    assert (d / "fairseq.detok").read_text() == want
    assert len(Dictionary.load(d / "dict.txt")) == base


def test_cli_errors_are_clear(task_files):
    from biogpt_train.checkpoint.io import CheckpointError
    from biogpt_train.generation.decode import decode_file

    d, *_ = task_files
    with pytest.raises(CheckpointError, match="vocabulary mismatch"):  # 2 prompt tokens for a 3-token model
        decode_file(d / "ckpt.pt", d / "test.x", d / "o", dict_path=d / "dict.txt", bpecodes=d / "bpecodes",
                    learned_prompt=2, device="cpu")
    with pytest.raises(ValueError, match="BPE codes"):
        decode_file(d / "ckpt.pt", d / "test.x", d / "o", device="cpu")


def test_cli_free_text(task_files, capsys):
    from biogpt_train.generation.cli import main

    d, *_ = task_files
    main(["text", "--checkpoint", str(d / "ckpt.pt"), "--bpecodes", str(d / "bpecodes"), "--prompt", "the cells",
          "--beam", "2", "--min-len", "8", "--max-len-b", "12", "--device", "cpu"])
    printed = capsys.readouterr().out.strip().split("\n")
    assert len(printed) == 1 and printed[0].startswith("the cells")
    assert len(printed[0].split()) >= 4


def test_cli_decoding_grows_the_dictionary_as_training_does(task_files):
    """A fairseq checkpoint trained with prefix=true and a manual prompt with an unknown word: decoding grows
    dict.txt with the training rule (<seqsep> first, then the unknown word), so ids match the embedding rows."""
    from omegaconf import OmegaConf

    from biogpt_train.data.splits import build_dictionary
    from biogpt_train.generation.decode import load_for_decoding

    d, _, base, _ = task_files
    task = {"manual_prompt": "the zeta", "prefix": True, "max_source_positions": 6}
    model = make_model(vocab=base + 2, max_positions=64).float()
    fairseq_dir = d / "fairseq_prefix"
    fairseq_dir.mkdir()
    (fairseq_dir / "dict.txt").write_bytes((d / "dict.txt").read_bytes())
    torch.save({"cfg": {"model": {"decoder_attention_heads": model.cfg.heads}, "task": task},
                "model": model.state_dict()}, fairseq_dir / "checkpoint.pt")
    _, dictionary, prompt, _ = load_for_decoding(fairseq_dir / "checkpoint.pt", device="cpu")
    assert dictionary.symbols[base:] == ["<seqsep>", "zeta"] and prompt == [dictionary.index("the"), base + 1]
    train_cfg = OmegaConf.create({"task": dict(task, data=str(fairseq_dir), learned_prompt=0, sep_token="<seqsep>",
                                               learned_prompt_pattern="learned", add_unknown_prompt_words=True)})
    assert build_dictionary(train_cfg).symbols == dictionary.symbols


def test_cli_dtype_auto_follows_biogpt_inference(task_files, caplog):
    """--dtype auto (default): BioGPT's inference.py halves the model when cfg.common.fp16 (fairseq --fp16 /
    --memory-efficient-fp16; ours: trainer.fp16_weights), on CUDA; fp32 otherwise, and on CPU (with a note)."""
    import argparse

    from biogpt_train.generation.cli import main
    from biogpt_train.generation.decode import decoding_dtype, load_for_decoding

    fp16_cfgs = [{"common": {"fp16": True}}, argparse.Namespace(fp16=True),
                 {"trainer": {"precision": "fp16", "fp16_weights": "master"}}]
    fp32_cfgs = [None, {"common": {"fp16": False}}, {"common": {"amp": True}},
                 {"trainer": {"precision": "fp16", "fp16_weights": "off"}}, {"trainer": {"precision": "fp32"}}]
    assert [decoding_dtype("auto", c, "cuda") for c in fp16_cfgs] == ["float16"] * 3
    assert [decoding_dtype("auto", c, "cuda") for c in fp32_cfgs] == ["float32"] * 5
    with caplog.at_level("INFO", logger="biogpt_train"):
        assert decoding_dtype("auto", fp16_cfgs[0], "cpu") == "float32"
    assert "decoding in fp32 on cpu" in caplog.text
    assert decoding_dtype("fp16", None, "cpu") == decoding_dtype("float16", None, "cpu") == "float16"
    with pytest.raises(ValueError, match="dtype must be auto"):
        decoding_dtype("half", None, "cpu")
    d, model, _, _ = task_files
    fairseq_dir = d / "fairseq_fp16"
    fairseq_dir.mkdir()
    (fairseq_dir / "dict.txt").write_bytes((d / "dict.txt").read_bytes())
    torch.save({"cfg": {"model": {"decoder_attention_heads": model.cfg.heads}, "common": {"fp16": True},
                        "task": {"learned_prompt": 3, "max_source_positions": 6}},
                "model": model.state_dict()}, fairseq_dir / "checkpoint.pt")
    m, *_ = load_for_decoding(fairseq_dir / "checkpoint.pt", device="cpu")
    assert m.decoder.embed_tokens.weight.dtype == torch.float32
    m, *_ = load_for_decoding(fairseq_dir / "checkpoint.pt", device="cpu", dtype="float16")
    assert m.decoder.embed_tokens.weight.dtype == torch.float16
    out = d / "fp16.detok"  # the CLI's default is auto
    assert main(["task", "--checkpoint", str(fairseq_dir / "checkpoint.pt"), "--input", str(d / "test.x"),
                 "--output", str(out), "--bpecodes", str(d / "bpecodes"), "--max-len-b", "20", "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_cli_text_on_an_hf_directory_finds_merges_txt(task_files, capsys):
    from biogpt_train.checkpoint.io import export_hf
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.generation.cli import main

    d, model, base, _ = task_files
    dictionary = Dictionary.load(d / "dict.txt")
    for k in (1, 2, 3):
        dictionary.add_symbol(f"learned{k}")
    hf = export_hf(model, dictionary, d / "bpecodes", d / "hf")
    args = ["--prompt", "the cells", "--beam", "2", "--min-len", "8", "--max-len-b", "12", "--device", "cpu"]
    assert main(["text", "--checkpoint", str(hf), *args]) == 0  # no --bpecodes: merges.txt is the codes file
    from_hf = capsys.readouterr().out
    assert main(["text", "--checkpoint", str(d / "ckpt.pt"), "--bpecodes", str(d / "bpecodes"), *args]) == 0
    assert from_hf == capsys.readouterr().out and from_hf.startswith("the cells")


def test_cli_bad_input_is_one_line_without_python_names(task_files, tmp_path, capsys):
    from biogpt_train.generation.cli import main

    d, *_ = task_files
    assert main(["text", "--checkpoint", str(tmp_path / "missing.pt"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --checkpoint {tmp_path / 'missing.pt'}: no such file") and err.count("\n") == 1
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bpecodes").write_bytes((d / "bpecodes").read_bytes())
    assert main(["text", "--checkpoint", str(tmp_path / "broken.pt"), "--prompt", "x", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'broken.pt'}: file is none of the formats" in err and "Traceback" not in err
    # a checkpoint without BPE codes beside it: the flag to use, not a Python argument name
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "ckpt.pt").write_bytes((d / "ckpt.pt").read_bytes())
    assert main(["task", "--checkpoint", str(tmp_path / "alone" / "ckpt.pt"), "--input", str(d / "test.x"),
                 "--output", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--bpecodes FILE" in err and "input_is_bpe" not in err and "dict_path" not in err
    with pytest.raises(SystemExit):
        main(["text", "--help"])
    assert "DICT_PATH" not in capsys.readouterr().out


def test_cli_task_decoding_shows_progress(task_files, caplog):
    import logging

    from biogpt_train.generation.cli import main

    d, *_ = task_files
    with caplog.at_level(logging.INFO, logger="biogpt_train"):
        assert main(["task", "--checkpoint", str(d / "ckpt.pt"), "--input", str(d / "test.x"), "--output",
                     str(d / "o.detok"), "--max-len-b", "30", "--batch-size", "2", "--device", "cpu"]) == 0
    assert "BPE codes: " in caplog.text  # found beside the checkpoint
    lines = [r.getMessage() for r in caplog.records if "sentences (" in r.getMessage()]
    assert lines[0].startswith("generate: 2/4 sentences (50%) | ") and "tokens/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("generate: 4/4 sentences (100%)")


def test_cli_and_pipeline_build_the_same_prefixes_in_prefix_mode(task_files, monkeypatch):
    """A checkpoint trained with task.prefix: the generate CLI forces `prompt source <seqsep>`, as the pipeline's
    generate stage does (one build_prefixes for both)."""
    from omegaconf import OmegaConf

    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.generation import decode
    from biogpt_train.generation.cli import main
    from biogpt_train.pipeline.evaluate import _prefixes

    d, _, base, lines = task_files
    dictionary = Dictionary.load(d / "dict.txt")
    dictionary.add_symbol("<seqsep>")
    for k in (1, 2, 3):
        dictionary.add_symbol(f"learned{k}")
    model = make_model(vocab=len(dictionary), max_positions=64).float()
    task = {"learned_prompt": 3, "max_source_positions": 6, "prefix": True, "sep_token": "<seqsep>"}
    save_native(d / "prefix.pt", model, dictionary, cfg={"task": task})
    seen = []
    real = decode.decode_prefixes
    monkeypatch.setattr(decode, "decode_prefixes", lambda m, prefixes, **kw: seen.extend(prefixes) or real(
        m, prefixes, **kw))
    assert main(["task", "--checkpoint", str(d / "prefix.pt"), "--input", str(d / "test.x"), "--output",
                 str(d / "p.detok"), "--bpecodes", str(d / "bpecodes"), "--max-len-b", "30", "--device", "cpu"]) == 0
    from biogpt_train.data.tokenizer import Tokenizer

    tok = Tokenizer(dictionary, d / "bpecodes")
    sources = [dictionary.encode_line(tok.bpe_encode(line), append_eos=True) for line in lines]
    cfg = OmegaConf.create({"task": {**task, "manual_prompt": None, "learned_prompt_pattern": "learned"}})
    expected = _prefixes(cfg, dictionary, sources)
    sep, learned = dictionary.index("<seqsep>"), [dictionary.index(f"learned{k}") for k in (1, 2, 3)]
    assert all(p[:3] == learned and p[-1] == sep for p in expected)  # BioGPT's prefix layout
    assert seen == expected


# --- greedy near-ties: fairseq's cumulative float32 top-k ------------------------------------------------------
class NearTieLM(torch.nn.Module):
    """Logits depend only on the position: a forced prefix of very unlikely tokens drives the cumulative score to
    about -1000 (a float32 ulp of ~1e-4 there), then every free step has two tokens 1e-6 apart at the top."""

    V, PREFIX, FREE = 12, 10, 8

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(vocab_size=self.V, max_positions=64)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the generator reads the device from a parameter
        g = torch.Generator().manual_seed(0)
        table = torch.rand(64, self.V, generator=g) * 2 - 5  # free tokens in [-5, -3]
        table[:, EOS] = -50.0
        self.prefix = [4 + (s % 8) for s in range(self.PREFIX)]
        for s, t in enumerate(self.prefix):
            table[s, t] = -100.0
        for s in range(self.PREFIX, self.PREFIX + self.FREE):
            a, b = 4 + (3 * s) % 8, 4 + (3 * s + 1 + s % 3) % 8  # the larger one alternates low/high index
            hi, lo = (a, b) if s % 2 else (b, a)
            table[s, hi], table[s, lo] = 0.0, -1e-6
        self.table = table

    def make_cache(self, batch_size, max_len):
        from types import SimpleNamespace

        return SimpleNamespace(length=0, reorder=lambda index, start=0: None)

    def forward(self, tokens, cache=None):
        start = 0 if cache is None else cache.length
        if cache is not None:
            cache.length += tokens.size(1)
        logits = self.table[start : start + tokens.size(1)]
        return logits.unsqueeze(0).expand(tokens.size(0), -1, -1).clone()


def test_greedy_near_ties_resolve_as_fairseq_beam1_step():
    model = NearTieLM()
    n = model.PREFIX + model.FREE
    literal = fairseq_reference(model, model.prefix, beam=1, max_len=n, min_len=n, fp32_topk=True)[0].tokens
    fairseq = generate(model, [model.prefix], max_len_b=n, min_len=n)[0]
    argmax = generate(model, [model.prefix], max_len_b=n, min_len=n, greedy_tiebreak="argmax")[0]
    assert fairseq == literal
    lp = torch.log_softmax(model.table, -1)
    assert all(argmax[s] == int(lp[s].argmax()) for s in range(model.PREFIX, n))  # the larger raw log-prob
    assert fairseq != argmax  # some near-tie really went the other way
    # the double-precision reference (exact sums) agrees with argmax: the difference is float32 rounding alone
    assert fairseq_reference(model, model.prefix, beam=1, max_len=n, min_len=n)[0].tokens == argmax


def test_greedy_tiebreak_option_is_checked(model):
    with pytest.raises(ValueError, match="greedy_tiebreak"):
        generate(model, [[5]], greedy_tiebreak="first")


def test_cut_prefixes_and_unk_heavy_input_are_said_not_silent(task_files, caplog):
    """A source longer than max_source_positions, a prefix longer than the model's positions, and input whose
    words the dictionary mostly lacks (a wrong dict.txt/bpecodes pair) each give a warning in generate."""
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer
    from biogpt_train.generation.decode import decode_lines

    d, model, _, _ = task_files
    dictionary = Dictionary.load(d / "dict.txt")
    for k in (1, 2, 3):
        dictionary.add_symbol(f"learned{k}")
    tok = Tokenizer(dictionary, d / "bpecodes")
    with caplog.at_level("WARNING", logger="biogpt_train"):
        decode_lines(model, dictionary, ["the cat is the cell of the cat ."], max_source_positions=4, tokenizer=tok,
                     max_len_b=20)
    assert "1 of 1 sources are longer than max_source_positions=4" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="biogpt_train"):
        generate(model, [[5] * 70], max_len_b=1024)  # the model has 64 positions
    assert "1 of 1 prefixes are longer than the length limit 63" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="biogpt_train"):
        decode_lines(model, dictionary, ["ÄÖÜ ßøå ÆØÅ ÞÐ"], max_source_positions=6, tokenizer=tok, max_len_b=20)
    assert "encode to <unk>" in caplog.text
