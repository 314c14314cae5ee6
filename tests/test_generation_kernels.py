"""Decoding fast paths: the double-buffered KV cache reorder, and `fast_kernels` (prepacked oneDNN linears).

The cache reorder is exact (it only moves values): checked against a plain gather. `fast_kernels` sums in another
order than F.linear, so it is checked for what it promises: logits within float32 rounding of the default,
batched == unbatched token for token, the modules restored afterwards, and a clear error where it does not apply.
"""

import pytest
import torch

from biogpt_train.generation import kernels
from biogpt_train.generation.generator import generate, generate_nbest
from biogpt_train.models.biogpt import KVCache
from biogpt_train.models.llama import Llama, LlamaConfig
from tests.helpers import tiny_lm

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PREFIXES = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13, 14, 15], [16, 17]]
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@pytest.fixture(scope="module")
def model():
    return tiny_lm(64, max_positions=128, seed=3, eos_boost=1.0, dtype=torch.float32)


# --- KV cache reorder -----------------------------------------------------------------------------------------
def _filled(cache):
    return cache.k[:, :, :, : cache.length].clone(), cache.v[:, :, :, : cache.length].clone()


def test_reorder_sequence_equals_a_plain_gather():
    """Growth (beam expand), within-group permutations that skip shared positions, and shrinking (a sentence
    leaves) in a row: every step equals gathering the reference rows."""
    torch.manual_seed(0)
    L, H, hd, k = 2, 3, 4, 3
    cache = KVCache(L, 2, H, 20, hd)
    ref_k = torch.randn(L, 2, H, 20, hd)
    ref_v = torch.randn(L, 2, H, 20, hd)

    def append(t):
        for layer in range(L):
            cache.update(layer, ref_k[layer, :, :, cache.length : cache.length + t],
                         ref_v[layer, :, :, cache.length : cache.length + t])
        cache.length += t

    append(5)  # prefill: 5 positions shared by the beams of each sentence after the expand
    expand = torch.tensor([0, 0, 0, 1, 1, 1])
    cache.reorder(expand)
    ref_k, ref_v = ref_k[:, expand], ref_v[:, expand]
    shared = cache.length
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        append(1)
        ref_k[:, :, :, : cache.length] = cache.k[:, :, :, : cache.length]  # new positions differ per row
        ref_v[:, :, :, : cache.length] = cache.v[:, :, :, : cache.length]
        if step == 3:  # sentence 0 finishes: its rows leave, positions are no longer shared row for row
            index, start = torch.tensor([3, 5, 4]), 0
        else:
            groups = cache.batch_size // k
            index = torch.cat([gi * k + torch.randint(0, k, (k,), generator=g) for gi in range(groups)])
            start = shared
        cache.reorder(index, start=start)
        ref_k, ref_v = ref_k[:, index], ref_v[:, index]
        k_now, v_now = _filled(cache)
        assert torch.equal(k_now, ref_k[:, :, :, : cache.length])
        assert torch.equal(v_now, ref_v[:, :, :, : cache.length])
    with pytest.raises(ValueError, match="start=99 must be within"):
        cache.reorder(torch.tensor([0]), start=99)


def test_cache_views_keep_their_shape():
    cache = KVCache(2, 3, 4, 10, 8)
    assert cache.k.shape == cache.v.shape == (2, 3, 4, 10, 8)
    cache.reorder(torch.tensor([2, 0]))
    assert cache.k.shape == (2, 2, 4, 10, 8) and cache.batch_size == 2


# --- fast_kernels ------------------------------------------------------------------------------------------------
@needs_onednn
def test_packed_linears_match_default_logits_and_restore_the_model(model):
    tokens = torch.tensor([[2, 5, 6, 7, 8, 9]])
    with torch.inference_mode():
        ref = model(tokens)
        with kernels.packed_linears(model):
            fast = model(tokens)
            with kernels.packed_linears(model):  # nested: no second packing
                assert torch.equal(model(tokens), fast)
        after = model(tokens)
    assert (fast - ref).abs().max() <= 1e-5
    assert torch.equal(after, ref)
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_onednn
def test_packed_rows_do_not_depend_on_the_batch_or_the_hint():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2048, 300)
    x = torch.randn(12, 2048)
    outs = []
    for hint in (1, 2, 8, 64):
        with torch.inference_mode(), kernels.packed_linears(lin, rows_hint=hint):
            outs += [lin(x), torch.cat([lin(x[i : i + 1]) for i in range(12)]), lin(x[:5])]
    for out in outs:
        assert torch.equal(out[:5], outs[0][:5])


@needs_onednn
def test_packed_step_rows_do_not_depend_on_the_batch(model):
    """A cached decoding step gives each row the same bits alone or in a batch (one, two or five rows)."""
    torch.manual_seed(0)
    prefix = torch.randint(3, 64, (5, 6))
    nxt = torch.randint(3, 64, (5, 1))

    def step(rows):
        cache = model.make_cache(len(rows), 8)
        model(prefix[rows], cache=cache)
        return model(nxt[rows], cache=cache)

    with torch.inference_mode(), kernels.packed_linears(model):
        batch = step([0, 1, 2, 3, 4])
        for r in range(5):
            assert torch.equal(step([r]), batch[r : r + 1])
        assert torch.equal(step([1, 3]), batch[[1, 3]])


@needs_onednn
@pytest.mark.parametrize("kwargs", [dict(), dict(beam=4), dict(beam=3, min_len=9, no_repeat_ngram_size=2)])
def test_fast_kernels_batched_equals_unbatched_and_default(model, kwargs):
    fast = generate_nbest(model, PREFIXES, fast_kernels=True, **kwargs)
    for prefix, hyps in zip(PREFIXES, fast):
        alone = generate_nbest(model, [prefix], fast_kernels=True, **kwargs)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-5)
    default = generate_nbest(model, PREFIXES, **kwargs)
    assert [[h.tokens for h in hs] for hs in fast] == [[h.tokens for h in hs] for hs in default]
    assert [h.score for hs in fast for h in hs] == pytest.approx([h.score for hs in default for h in hs], abs=1e-4)


@needs_onednn
def test_fast_kernels_on_a_llama_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=70, embed_dim=32, layers=2, heads=4, kv_heads=2, ffn_dim=64, max_positions=64)
    llama = Llama(cfg).eval()
    prefixes = [[5, 6, 7], [9, 10]]
    opts = dict(beam=2, max_len_b=14, min_len=14, eos=2, pad=0, bos=1)
    assert generate(llama, prefixes, fast_kernels=True, **opts) == generate(llama, prefixes, **opts)


@pytest.mark.parametrize("bias", [False, True])
def test_chunked_linear_gives_f_linear_bits(bias, monkeypatch):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 9000, bias=bias)  # 4096-row blocks of 1 MiB: two full blocks and a tail
    with torch.inference_mode():
        xs = {n: torch.randn(n, 1, 64) for n in (1, 2, 5, 8, 15, 16)}
        ref = {n: lin(x) for n, x in xs.items()}
        with kernels.chunked_linears(lin):  # 2.3 MB of weights: cache-resident, left alone
            assert "forward" not in lin.__dict__
        monkeypatch.setattr(kernels, "_CACHED_BYTES", 0)
        with kernels.chunked_linears(lin):
            assert "forward" in lin.__dict__
            for n, x in xs.items():
                assert torch.equal(lin(x), ref[n])
    assert "forward" not in lin.__dict__
    assert kernels.chunks_are_exact(8, 64, 4096, bias, torch.float32)


@pytest.mark.parametrize("kwargs", [dict(), dict(beam=3, min_len=9), dict(beam=4, max_len_b=12)])
def test_decoding_with_and_without_chunked_linears_is_identical(monkeypatch, kwargs):
    """Tiny model, blocks made small (64 rows) so the 200-word output projection is split: same tokens and the
    same score bits as single F.linear calls (float32 and the float64 of the generation tests)."""
    import contextlib

    exact = kernels.chunks_are_exact
    for dtype in (torch.float32, torch.float64):
        m = tiny_lm(200, max_positions=64, seed=7, eos_boost=1.0, dtype=dtype)
        monkeypatch.setattr(kernels, "_CHUNK_BYTES", 64 * 32 * m.decoder.embed_tokens.weight.element_size())
        monkeypatch.setattr(kernels, "_CACHED_BYTES", 0)
        calls = []
        monkeypatch.setattr(kernels, "chunks_are_exact", lambda *a: calls.append(a) or exact(*a))
        chunked = generate_nbest(m, PREFIXES, **kwargs)
        assert calls and all(c[1:3] == (32, 64) for c in calls)  # the projection really went in 64-row blocks
        with monkeypatch.context() as mp:
            mp.setattr(kernels, "chunked_linears", lambda model: contextlib.nullcontext())
            plain = generate_nbest(m, PREFIXES, **kwargs)
        assert chunked == plain


def test_fast_kernels_is_refused_where_it_does_not_apply(model):
    with pytest.raises(ValueError, match="fast_kernels applies to float32 models on CPU"):
        generate(model.double(), [[5]], fast_kernels=True)
    model.float()


def test_fast_kernels_is_an_option_of_the_cli_and_the_config():
    from biogpt_train.config.schema import GenerationConfig
    from biogpt_train.generation.cli import _gen_kwargs
    from biogpt_train.pipeline.evaluate import GENERATION_KEYS
    from types import SimpleNamespace

    assert GenerationConfig().fast_kernels is False and "fast_kernels" in GENERATION_KEYS
    a = SimpleNamespace(beam=1, max_len_b=5, min_len=1, lenpen=1.0, no_repeat_ngram_size=0, sampling=False,
                        temperature=1.0, topk=0, topp=0.0, seed=None, fast_kernels=True)
    assert _gen_kwargs(a)["fast_kernels"] is True
