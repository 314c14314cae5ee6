"""The log-likelihood harness: lm-evaluation-harness's token split and scoring, checked against a direct
computation with transformers.BioGptForCausalLM on the same random weights, batched vs unbatched, greediness,
truncation, input sharing and the model interface (pad id, attention mask, max length)."""

import logging

import pytest
import torch

from biogpt_train.evaluation.loglikelihood import (LoglikelihoodError, accepts_attention_mask, encode_pairs,
                                                   loglikelihood, loglikelihood_tokens, model_max_length,
                                                   model_pad_id, split_trailing_space)
from biogpt_train.models.biogpt import ModelConfig, TransformerLM

EOS, PAD = 2, 1


class ToyTokenizer:
    """Greedy longest-match over a fixed piece list (ids from 4), so a piece can span a word boundary
    (" yes") or the context/continuation boundary ("abc"): the cases the split rule is about."""

    prefix_token_id = EOS

    def __init__(self, pieces):
        self.vocab = {p: i + 4 for i, p in enumerate(pieces)}
        self.longest = max(map(len, pieces))

    def __len__(self):
        return 4 + len(self.vocab)

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            for n in range(min(self.longest, len(text) - i), 0, -1):
                if text[i:i + n] in self.vocab:
                    ids.append(self.vocab[text[i:i + n]])
                    i += n
                    break
            else:
                raise KeyError(text[i])
        return ids


PIECES = [chr(c) for c in range(32, 127)] + ["\n", "Answer:", " yes", " no", " maybe", "abc", "Question"]
TOK = ToyTokenizer(PIECES)


def tiny_model(vocab=len(TOK), max_positions=48, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, embed_dim=32, layers=2, heads=4, ffn_dim=64, max_positions=max_positions,
                      dropout=dropout, attention_dropout=dropout)
    model = TransformerLM(cfg).eval()
    with torch.no_grad():  # biases and LayerNorms are 0/1 at init; randomise so they matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def direct(model, ctx, cont):
    """Sum of log p(cont | ctx) and greediness from one unpadded forward pass of the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont[:-1]]))[0]
    lp = logits[len(ctx) - 1:].float().log_softmax(-1)
    target = torch.tensor(cont)
    return float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


REQUESTS = [("Question: is it?\nAnswer:", " yes"), ("Question: is it?\nAnswer:", " no"),
            ("Question: is it?\nAnswer: ", "maybe"), ("abc", "def ghi"), ("", "hello"), ("x", " y"),
            ("A longer context that is here. Answer:", " no, it is not")]


# --- token split --------------------------------------------------------------------------------------------------
def test_trailing_whitespace_moves_to_the_continuation():
    assert split_trailing_space("Answer: ", "yes") == ("Answer:", " yes")
    assert split_trailing_space("Q:\n \t", "x") == ("Q:", "\n \tx")
    assert split_trailing_space("Answer:", " yes") == ("Answer:", " yes")
    assert split_trailing_space("   ", "yes") == ("", "   yes")
    v = TOK.vocab
    # without the move "Answer: " would end in its own " " token and " yes" could never be scored as one piece
    assert encode_pairs(TOK, [("Answer: ", "yes")]) == [([EOS, v["Answer:"]], [v[" yes"]])]
    assert encode_pairs(TOK, [("Answer:", " yes")]) == [([EOS, v["Answer:"]], [v[" yes"]])]


def test_split_is_by_length_of_the_encoded_context_and_empty_context_gets_the_prefix():
    v = TOK.vocab
    # encode("ab") = [a, b] but encode("abcde") = [abc, d, e]: the continuation is whole[2:] = [e], as in the
    # harness (the split is by the encoded context's length, not by content)
    assert encode_pairs(TOK, [("ab", "cde")]) == [([EOS, v["a"], v["b"]], [v["e"]])]
    assert encode_pairs(TOK, [("", "no")]) == [([EOS], [v["n"], v["o"]])]
    with pytest.raises(LoglikelihoodError, match="request 1: continuation '' encodes to no tokens"):
        encode_pairs(TOK, [("a", "b"), ("ab", "")])


def test_biogpt_tokenizer_split_and_prefix(biogpt_tokenizer_files):
    from biogpt_train.data.tokenizer import Tokenizer

    tok = Tokenizer.from_files(*biogpt_tokenizer_files)
    assert tok.prefix_token_id == 2 == tok.dictionary.eos()
    ctx = "Question: Is aspirin effective?\nAnswer:"
    (c1, x1), (c2, x2), (c3, x3) = encode_pairs(tok, [(ctx, " yes"), (ctx + " ", "yes"), (ctx, " maybe")])
    assert c1 == c2 == c3 == [2] + tok.encode(ctx)
    assert x1 == x2 == tok.encode("yes") and x3 == tok.encode("maybe")
    assert c1 + x1 == [2] + tok.encode(ctx + " yes")


@pytest.mark.slow  # transformers' tokenizer import
def test_ids_are_what_the_harness_feeds_with_biogpt_tokenizer(biogpt_tokenizer_files, tmp_path):
    """The harness's HF backend encodes with add_special_tokens on; BioGptTokenizer then prepends </s>, so its
    whole/context split gives exactly [prefix] + context ids and the continuation ids used here."""
    transformers = pytest.importorskip("transformers")
    from biogpt_train.data.tokenizer import Tokenizer, write_hf_vocab

    tok = Tokenizer.from_files(*biogpt_tokenizer_files)
    vocab, merges = write_hf_vocab(*biogpt_tokenizer_files, tmp_path)
    hf = transformers.BioGptTokenizer(str(vocab), str(merges))
    pairs = [("Abstract: Aspirin (100 mg) reduced pain.\nQuestion: Does aspirin work?\nAnswer:", " yes"),
             ("Question: Which organ pumps blood?\nA. Liver\nB. Heart\nAnswer: ", "B"), ("", "maybe")]
    for (ctx, cont), (ctx_ids, cont_ids) in zip(pairs, encode_pairs(tok, pairs)):
        ctx, cont = split_trailing_space(ctx, cont)
        whole = hf.encode(ctx + cont)
        context = hf.encode(ctx) if ctx else [hf.sep_token_id]  # the harness's empty-context rule
        assert whole[0] == hf.sep_token_id == 2
        assert (context, whole[len(context):] if ctx else hf.encode(cont, add_special_tokens=False)) == \
            (ctx_ids, cont_ids)


# --- scores ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # importing transformers' BioGPT takes most of its ~5 s
def test_scores_equal_transformers_biogpt_on_the_same_weights():
    transformers = pytest.importorskip("transformers")
    from biogpt_train.checkpoint.io import fairseq_to_hf_keys, hf_config

    model = tiny_model()
    hf = transformers.BioGptForCausalLM(transformers.BioGptConfig(**hf_config(model.cfg))).eval()
    missing, unexpected = hf.load_state_dict(fairseq_to_hf_keys(model.state_dict()), strict=False)
    assert missing == ["output_projection.weight"] and not unexpected  # tied: HF shares the embedding
    hf.tie_weights()
    assert torch.equal(hf.output_projection.weight, model.decoder.embed_tokens.weight)
    got = loglikelihood(model, TOK, REQUESTS, batch_size=4)
    for (ctx, cont), (lp, greedy) in zip(encode_pairs(TOK, REQUESTS), got):
        with torch.no_grad():
            logits = hf(torch.tensor([ctx + cont])).logits[0]
        ref = logits[len(ctx) - 1:-1].log_softmax(-1)
        target = torch.tensor(cont)
        assert lp == pytest.approx(float(ref.gather(-1, target[:, None]).sum()), abs=1e-4)
        assert greedy == bool((ref.argmax(-1) == target).all())


def test_batched_equals_unbatched_and_request_order_is_kept():
    model = tiny_model(seed=1)
    one = loglikelihood(model, TOK, REQUESTS, batch_size=1)
    for bs in (2, 3, 16):
        many = loglikelihood(model, TOK, REQUESTS, batch_size=bs)
        assert [g for _, g in many] == [g for _, g in one]
        assert max(abs(a - b) for (a, _), (b, _) in zip(many, one)) <= 1e-5
    for (ctx, cont), (lp, greedy) in zip(encode_pairs(TOK, REQUESTS), one):
        ref_lp, ref_greedy = direct(model, ctx, cont)
        assert lp == pytest.approx(ref_lp, abs=1e-5) and greedy == ref_greedy


def test_is_greedy_on_a_greedy_continuation():
    model = tiny_model(seed=2)
    ctx = [EOS, 10, 11, 12]
    seq = list(ctx)
    with torch.no_grad():
        for _ in range(4):  # greedy decoding builds the continuation the model prefers at every step
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    cont = seq[len(ctx):]
    other = cont[:-1] + [(cont[-1] + 1) % len(TOK)]
    (lp, greedy), (lp2, greedy2) = loglikelihood_tokens(model, [(ctx, cont), (ctx, other)])
    assert greedy and not greedy2 and lp > lp2
    with torch.no_grad():
        best = model(torch.tensor([seq]))[0, len(ctx) - 1:-1].log_softmax(-1).max(-1).values.sum()
    assert lp == pytest.approx(float(best), abs=1e-5)


def test_left_truncation_to_the_model_positions(caplog):
    model = tiny_model(max_positions=8, seed=3)
    ctx, cont = [EOS] + list(range(20, 32)), [40, 41, 42]
    with caplog.at_level(logging.WARNING, logger="biogpt_train"):
        (lp, greedy), = loglikelihood_tokens(model, [(ctx, cont)])
    assert "truncated from the left" in caplog.text
    window = (ctx + cont)[-9:]  # the model reads the last 8 positions: window[:-1]
    ref = direct(model, window[:-len(cont)], cont)
    assert lp == pytest.approx(ref[0], abs=1e-5) and greedy == ref[1]
    # an explicit max_length shorter than the model's positions truncates the same way
    (lp6, _), = loglikelihood_tokens(tiny_model(max_positions=48, seed=3), [(ctx, cont)], max_length=8)
    assert lp6 == pytest.approx(loglikelihood_tokens(tiny_model(max_positions=48, seed=3),
                                                     [(window[:-3], cont)])[0][0], abs=1e-5)
    with pytest.raises(LoglikelihoodError, match="continuation of 9 tokens exceeds the model's 8 positions"):
        loglikelihood_tokens(model, [(ctx, list(range(20, 29)))])


class Recorder(torch.nn.Module):
    """Wraps a model; records each call's tokens (and mask when accepted)."""

    def __init__(self, inner, accepts=None):
        super().__init__()
        self.inner, self.cfg, self.calls = inner, inner.cfg, []
        if accepts is not None:
            self.accepts_attention_mask = accepts

    def max_positions(self):
        return self.inner.max_positions()

    def forward(self, tokens, attention_mask=None):
        self.calls.append((tokens.clone(), attention_mask))
        return self.inner(tokens)


def test_identical_inputs_share_one_forward_row():
    model = tiny_model(seed=4)
    rec = Recorder(model, accepts=False)
    ctx = "Question: is it?\nAnswer:"
    reqs = [(ctx, " yes"), (ctx, " no"), (ctx, " maybe")]  # one token each: the same model input
    got = loglikelihood(rec, TOK, reqs)
    assert len(rec.calls) == 1 and rec.calls[0][0].shape[0] == 1 and rec.calls[0][1] is None
    for (c, x), (lp, _) in zip(encode_pairs(TOK, reqs), got):
        assert lp == pytest.approx(direct(model, c, x)[0], abs=1e-5)


def test_attention_mask_and_pad_for_models_that_take_one():
    model = tiny_model(seed=5)
    rec = Recorder(model, accepts=True)
    got = loglikelihood(rec, TOK, REQUESTS, batch_size=16)
    (tokens, mask), = rec.calls
    assert mask.dtype == torch.bool and torch.equal(mask, tokens.ne(PAD))  # right padding with the model's pad id
    assert mask[:, 0].all() and not mask.all()
    ref = loglikelihood(model, TOK, REQUESTS, batch_size=1)
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, ref)) <= 1e-5


def test_model_interface_detection():
    model = tiny_model()
    assert model_max_length(model) == 48 and model_pad_id(model) == 1 and not accepts_attention_mask(model)

    class Cfg:
        max_seq_len, pad_token_id = 128, None

    class Llamaish(torch.nn.Module):
        cfg = Cfg()

        def forward(self, tokens, attention_mask=None):
            return tokens

    m = Llamaish()
    assert model_max_length(m) == 128 and model_pad_id(m) == 0 and accepts_attention_mask(m)
    m.accepts_attention_mask = False  # the explicit attribute wins over the signature
    assert not accepts_attention_mask(m)
    with pytest.raises(LoglikelihoodError, match="pass max_length"):
        model_max_length(torch.nn.Linear(2, 2))


def test_training_mode_is_restored_and_dropout_is_off():
    model = tiny_model(seed=6, dropout=0.3)
    ref = loglikelihood(model.eval(), TOK, REQUESTS[:3])
    model.train()
    assert loglikelihood(model, TOK, REQUESTS[:3]) == ref
    assert model.training
