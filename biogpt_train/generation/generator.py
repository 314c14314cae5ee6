"""Greedy, beam-search and sampling decoding with a forced prefix and a KV cache (reference §4, §6).

The semantics are fairseq's ``SequenceGenerator`` (v0.12) as BioGPT's ``inference.py`` drives it:

* A sequence starts with ``</s>``; step ``s`` chooses the token at position ``s + 1``. The prefix (source + prompt)
  is forced: at a forced step every other token gets -inf and the forced token keeps its real log-prob, which
  counts in the hypothesis score.
* ``max_len = min(max_len_b, max_positions - 1)`` counts the prefix; at step ``max_len`` only ``</s>`` is allowed,
  so a hypothesis (prefix + generated, without the ``</s>`` marks) has at most ``max_len`` tokens and a prefix
  longer than that is cut to ``max_len``.
* ``<pad>`` is never chosen; ``</s>`` is forbidden while ``step < min_len`` (so ``min_len`` counts the prefix too);
  ``no_repeat_ngram_size`` bans a token that would repeat an n-gram of the sequence so far (prefix included).
* Log-probs are ``log_softmax(logits / temperature)`` in float32, not renormalised after masking.
* Beam search: the 2·beam best (hypothesis, token) continuations by cumulative log-prob; those ending in ``</s>``
  among the first ``beam`` are finalised with score ``cum / (len + 1) ** lenpen`` (len + 1 counts the ``</s>``)
  while the sentence has fewer than ``beam`` finished ones; the next beams are the best ``beam`` continuations
  not ending in ``</s>``. A sentence stops when it has ``beam`` finished hypotheses (fairseq's early stop) or at
  ``max_len``; its finished hypotheses are sorted by score. While a prefix is forced only one beam is alive (the
  others start at -inf, fairseq's "first step uses the first beam only").
* Greedy (``beam == 1``) is fairseq's beam search with one beam: the token with the best CUMULATIVE float32 score
  ``fl(score + lprob)`` (prefix included, ~ -10^3), picked by ``topk(2)`` as ``BeamSearch.step`` does. Two tokens
  whose log-probs differ by less than half an ulp of the cumulative score (~3e-5 at -10^3) get the same candidate
  score and ``topk``'s order decides between them; ``greedy_tiebreak="argmax"`` picks the larger raw log-prob
  instead (first index on exact ties), which differs from fairseq only in such near-ties. Rounding is monotonic,
  so no other choice can differ.
* Sampling (``beam == 1``): top-p (fairseq's rule: the smallest set whose cumulative probability reaches ``topp``),
  or top-k, or the full distribution, from a ``torch.Generator`` seeded with ``seed``.

Deliberate differences from fairseq, all in corner cases fairseq handles inconsistently:
* ``min_len`` is applied per sentence; fairseq skips it for the whole batch while any prefix in the batch is still
  being forced, which makes its batched output depend on the batch. Here batched == unbatched.
* The n-gram ban never overrides a forced prefix token (fairseq would leave the row all -inf).
* Beam search requires ``vocab_size > 2 * beam`` (fairseq's candidate bookkeeping only differs below that).
* A prefix may not contain ``</s>`` or ``<pad>`` (an error instead of fairseq's implicit truncation / "free" slot).

Efficiency: every prefix shares positions ``0..m`` (``m`` = the shortest prefix), so ``[</s>] + prefix[:m]`` goes
through the cache in one forward (chunked to bound the logits' memory); the remaining prefix tokens are forced
step by step, which is exact because sequences contain no pads. Finished sentences leave the batch.
"""

from __future__ import annotations

import logging
import math
from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from biogpt_train.generation import kernels

logger = logging.getLogger("biogpt_train")
NEG_INF = float("-inf")
# At most this many float32 logits are alive during the prefix pass (~128 MiB); longer prefixes go in chunks.
_PREFILL_LOGITS_BUDGET = 1 << 25


class Hypothesis(NamedTuple):
    tokens: List[int]  # prefix + generated tokens, without the leading and the final </s>
    # sum of log-probs (prefix, generated tokens and </s>) / (len(tokens) + 1) ** lenpen; NaN under scores=False
    score: float


def generate(model, prefixes: Sequence[Sequence[int]], **options) -> List[List[int]]:
    """Decode one hypothesis per prefix: ``prefix ⧺ generated`` (no leading/trailing ``</s>``), best beam first.

    ``options`` are ``generate_nbest``'s (beam, max_len_b, min_len, lenpen, sampling, ...); they are listed once,
    there, so the two entry points cannot drift apart."""
    return [hyps[0].tokens for hyps in generate_nbest(model, prefixes, scores=False, **options)]


def generate_nbest(
    model,
    prefixes: Sequence[Sequence[int]],
    *,
    beam: int = 1,
    max_len_b: int = 1024,
    min_len: int = 1,
    lenpen: float = 1.0,
    no_repeat_ngram_size: int = 0,
    sampling: bool = False,
    temperature: float = 1.0,
    topk: int = 0,
    topp: float = 0.0,
    max_positions: int = 1024,
    seed: Optional[int] = None,
    greedy_tiebreak: str = "fairseq",
    fast_kernels: bool = False,
    eos: int = 2,
    pad: int = 1,
    bos: Optional[int] = None,
    scores: bool = True,
) -> List[List[Hypothesis]]:
    """Like ``generate`` but returns every finished hypothesis per prefix with its score, best first
    (up to ``beam`` of them; exactly one for greedy and sampling). Decoding reads ``bos`` first: None is ``eos``
    (fairseq's and BioGPT's ``</s>``); Llama-family models start from ``<s>`` (the tokenizer's prefix_token_id).

    ``fast_kernels``: run the model's linear layers through prepacked oneDNN kernels (CPU, float32; faster for
    several rows per step: batches, beams). They sum in another order than the default kernels, so tokens may
    differ in near-ties; off by default (generation/kernels.py, docs/FIDELITY.md).

    ``scores=False`` (what ``generate`` passes): greedy and sampling skip the forward pass that would only score
    the ``</s>`` forced at the length limit (the tokens are known by then), and the hypotheses it would have scored
    get score NaN. The tokens are the same either way; beam search always scores (it ranks by score)."""
    vocab_size = model.cfg.vocab_size
    prefixes = [_check_prefix(i, p, vocab_size, eos, pad) for i, p in enumerate(prefixes)]
    _check_options(beam, max_len_b, min_len, no_repeat_ngram_size, sampling, temperature, topk, topp, vocab_size)
    if greedy_tiebreak not in ("fairseq", "argmax"):
        raise ValueError(f"greedy_tiebreak must be 'fairseq' or 'argmax', got {greedy_tiebreak!r}")
    # fairseq: min(max_len_a * src_len + max_len_b, max_decoder_positions - 1) with max_len_a = 0
    max_len = min(max_len_b, min(max_positions, model.cfg.max_positions) - 1)
    if min_len > max_len:
        raise ValueError(f"min_len={min_len} is larger than the length limit {max_len} "
                         f"(min(max_len_b={max_len_b}, max_positions - 1))")
    if fast_kernels and not kernels.available(model):
        raise ValueError("fast_kernels applies to float32 models on CPU (with oneDNN); this model is "
                         f"{next(model.parameters()).dtype} on {next(model.parameters()).device}: drop fast_kernels")
    if not prefixes:
        return []
    long = sum(len(p) > max_len for p in prefixes)
    if long:  # fairseq forces the prefix only for steps < max_len: the rest is never read
        logger.warning("generate: %d of %d prefixes are longer than the length limit %d (min(max_len_b, "
                       "max_positions - 1)) and were cut", long, len(prefixes), max_len)
    prefixes = [p[:max_len] for p in prefixes]

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), kernels.packed_linears(model, enabled=fast_kernels), \
                kernels.chunked_linears(model):  # exact; a no-op under packed kernels
            search = _Search(model, prefixes, max_len, min_len, lenpen, no_repeat_ngram_size, temperature, eos, pad,
                             eos if bos is None else bos)
            if beam == 1:
                generator = None
                if sampling:
                    generator = torch.Generator(device=search.device)
                    if seed is None:
                        generator.seed()  # non-deterministic, without touching the global RNG
                    else:
                        generator.manual_seed(seed)
                return search.single(sampling, topk, topp, generator, greedy_tiebreak == "fairseq", scores)
            return search.beam(beam)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------------------
def _check_prefix(i: int, prefix: Sequence[int], vocab_size: int, eos: int, pad: int) -> List[int]:
    try:
        prefix = [int(t) for t in prefix]
    except (TypeError, ValueError):
        raise TypeError(f"prefix {i} must be a sequence of token ids, got {prefix!r:.80}") from None
    for pos, t in enumerate(prefix):
        if t in (eos, pad) or not 0 <= t < vocab_size:
            what = {eos: "</s>", pad: "<pad>"}.get(t, f"out of range for vocab_size {vocab_size}")
            raise ValueError(f"prefix {i} has token id {t} ({what}) at position {pos}; a prefix is the source + "
                             f"prompt ids without the leading </s>")
    return prefix


def _check_options(beam, max_len_b, min_len, ngram, sampling, temperature, topk, topp, vocab_size):
    if not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam must be a positive integer, got {beam!r}")
    if beam > 1 and vocab_size <= 2 * beam:
        raise ValueError(f"beam search keeps 2*beam candidates: vocab_size {vocab_size} must exceed 2*beam={2 * beam}")
    if sampling and beam != 1:
        raise ValueError("sampling draws one sample per prefix: use beam=1")
    if max_len_b < 1:
        raise ValueError(f"max_len_b must be >= 1, got {max_len_b}")
    if min_len < 0 or ngram < 0:
        raise ValueError(f"min_len and no_repeat_ngram_size must be >= 0, got {min_len} and {ngram}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if topk < 0 or not 0.0 <= topp <= 1.0:
        raise ValueError(f"need topk >= 0 and 0 <= topp <= 1, got topk={topk}, topp={topp}")
    if (topk or topp) and not sampling:
        raise ValueError("topk / topp only apply with sampling=True")
    if topk and topp:
        raise ValueError("give either topk or topp, not both (fairseq would silently ignore topk)")


class _Search:
    """Decoding state shared by the single-hypothesis and beam paths."""

    def __init__(self, model, prefixes, max_len, min_len, lenpen, ngram, temperature, eos, pad, bos):
        self.model, self.prefixes = model, prefixes
        self.max_len, self.min_len, self.lenpen, self.ngram = max_len, min_len, lenpen, ngram
        self.temperature, self.eos, self.pad, self.bos = temperature, eos, pad, bos
        self.device = next(model.parameters()).device
        self.common = min(len(p) for p in prefixes)  # positions shared by all: one forward pass
        width = max(len(p) for p in prefixes)
        # forced[i, s] = the token step s must produce for sentence i, pad once its prefix has ended
        forced = torch.full((len(prefixes), width + 1), pad, dtype=torch.long)
        for i, p in enumerate(prefixes):
            forced[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        self.forced = forced.to(self.device)

    # -- model calls ----------------------------------------------------------------------------------------
    def lprobs(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):  # fairseq normalises in float32
            logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return F.log_softmax(logits, dim=-1)

    def prefill(self):
        """Feed ``[bos] + prefix[:common]`` (BioGPT: bos = </s>) for every sentence through a new cache.

        Returns (cache, histories [B, max_len + 2], log-probs for step ``common`` [B, V], score of the forced
        tokens [B])."""
        B, m = len(self.prefixes), self.common
        tokens = torch.full((B, self.max_len + 2), self.pad, dtype=torch.long, device=self.device)
        tokens[:, 0] = self.bos
        tokens[:, 1 : m + 1] = self.forced[:, :m]
        cache = self.model.make_cache(B, self.max_len + 1)
        chunk = max(1, _PREFILL_LOGITS_BUDGET // (B * self.model.cfg.vocab_size))
        score = None
        for start in range(0, m + 1, chunk):
            end = min(start + chunk, m + 1)
            lp = self.lprobs(self.model(tokens[:, start:end], cache=cache))  # position t predicts t + 1
            if score is None:  # the log-probs' dtype (float32 unless the model is float64), as fairseq's buffer
                score = lp.new_zeros(B)
            targets = tokens[:, start + 1 : min(end + 1, m + 1)]
            picked = lp[:, : targets.size(1)].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for j in range(picked.size(1)):  # one rounding per step, in fairseq's order (not a tree sum)
                score = score + picked[:, j]
        return cache, tokens, lp[:, -1], score

    def constrain(self, lprobs, step, tokens, sents):
        """Apply fairseq's per-step rules in place to ``lprobs`` [R, V] for rows of sentences ``sents`` [R]
        whose histories are ``tokens[:, : step + 1]``. Returns the forced tokens [R] (pad where free)."""
        lprobs[:, self.pad] = NEG_INF
        forced = self.forced[sents, min(step, self.forced.size(1) - 1)]
        if step >= self.max_len:  # only </s> at the length limit
            eos_lp = lprobs[:, self.eos].clone()
            lprobs.fill_(NEG_INF)
            lprobs[:, self.eos] = eos_lp
            return forced.fill_(self.pad)
        is_forced = forced.ne(self.pad)
        forced_lp = lprobs.gather(1, forced.unsqueeze(1))
        if step < self.min_len:
            lprobs[:, self.eos] = NEG_INF
        if self.ngram:
            _ban_repeated_ngrams(lprobs, tokens[:, : step + 1], self.ngram)
        if is_forced.any():
            rows = is_forced.nonzero().squeeze(1)
            lprobs[rows] = NEG_INF
            lprobs[rows, forced[rows]] = forced_lp[rows, 0]
        return forced

    def finish_score(self, cum: float, length: int) -> float:
        """fairseq's normalisation; ``length`` counts the final </s> (and the prefix), not the leading one."""
        return cum / length**self.lenpen

    # -- greedy / sampling ----------------------------------------------------------------------------------
    def single(self, sampling, topk, topp, generator, cumulative: bool = True,
               final_score: bool = True) -> List[List[Hypothesis]]:
        cache, tokens, lprobs, score = self.prefill()
        sents = torch.arange(len(self.prefixes), device=self.device)  # sentence of each live row
        out: List[Optional[List[Hypothesis]]] = [None] * len(self.prefixes)
        step = self.common
        while True:
            forced = self.constrain(lprobs, step, tokens, sents)
            if step >= self.max_len:  # only </s> is left (sampling it could underflow to probability 0)
                nxt = torch.full_like(forced, self.eos)
            elif sampling:
                nxt = forced.clone()
                free = forced.eq(self.pad).nonzero().squeeze(1)
                if free.numel():
                    nxt[free] = _sample(lprobs[free], topk, topp, generator)
            elif cumulative:  # fairseq BeamSearch.step with one beam: top-2 of the cumulative scores, take the first
                nxt = (lprobs + score.unsqueeze(1)).topk(2, dim=1).indices[:, 0]
            else:
                nxt = lprobs.argmax(-1)
            score = score + lprobs.gather(1, nxt.unsqueeze(1)).squeeze(1)
            done = nxt.eq(self.eos)
            if done.any():
                for row in done.nonzero().squeeze(1).tolist():
                    hyp = tokens[row, 1 : step + 1].tolist()
                    out[int(sents[row])] = [Hypothesis(hyp, self.finish_score(score[row].item(), step + 1))]
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                sents, tokens, score, nxt = sents[keep], tokens[keep], score[keep], nxt[keep]
                cache.reorder(keep)
            tokens[:, step + 1] = nxt
            step += 1
            if step >= self.max_len and not final_score:  # only </s> is left; a forward pass would just score it
                for row, sent in enumerate(sents.tolist()):
                    out[sent] = [Hypothesis(tokens[row, 1 : step + 1].tolist(), math.nan)]
                break
            lprobs = self.lprobs(self.model(nxt.unsqueeze(1), cache=cache)[:, -1])
        return out

    # -- beam search ----------------------------------------------------------------------------------------
    def beam(self, k: int) -> List[List[Hypothesis]]:
        B, V = len(self.prefixes), self.model.cfg.vocab_size
        cache, tokens, lprobs, forced_score = self.prefill()
        # k rows per sentence; only the first is alive until the prefix is over (the others score -inf)
        expand = torch.arange(B, device=self.device).repeat_interleave(k)
        cache.reorder(expand)
        shared = cache.length  # [bos] + prefix[:common], written by the prefill for all k rows of a sentence
        tokens, lprobs = tokens[expand], lprobs[expand]
        scores = torch.full((B, k), NEG_INF, dtype=lprobs.dtype, device=self.device)
        scores[:, 0] = forced_score
        scores = scores.view(-1)
        sents = torch.arange(B, device=self.device)  # sentence of each live group of k rows
        finished: List[List[Hypothesis]] = [[] for _ in range(B)]
        offsets = torch.arange(2 * k, device=self.device)
        for step in range(self.common, self.max_len + 1):
            self.constrain(lprobs, step, tokens, sents.repeat_interleave(k))
            S = sents.numel()
            cand = (lprobs + scores.unsqueeze(1)).view(S, k * V)
            cand_scores, cand_idx = cand.topk(2 * k, dim=1)
            cand_beams, cand_tokens = cand_idx // V, cand_idx % V
            cand_rows = cand_beams + torch.arange(S, device=self.device).unsqueeze(1) * k
            is_eos = cand_tokens.eq(self.eos) & cand_scores.ne(NEG_INF)

            # finalise </s> continuations among the top k, while the sentence has room
            norm = cand_scores[:, :k] / (step + 1) ** self.lenpen
            for s, j in is_eos[:, :k].nonzero().tolist():
                sent = sents[s].item()
                if len(finished[sent]) < k:
                    hyp = tokens[cand_rows[s, j], 1 : step + 1].tolist()
                    finished[sent].append(Hypothesis(hyp, norm[s, j].item()))
            if step == self.max_len:
                break
            done = torch.tensor([len(finished[s]) == k for s in sents.tolist()], device=self.device)
            if done.all():
                break

            # next beams: the best k continuations that do not end in </s>
            active = (is_eos.long() * (2 * k) + offsets).topk(k, dim=1, largest=False).indices
            keep = (~done).nonzero().squeeze(1)
            active = active[keep]
            rows = cand_rows[keep].gather(1, active).view(-1)
            new_tokens = cand_tokens[keep].gather(1, active).view(-1)
            scores = cand_scores[keep].gather(1, active).view(-1)
            # within a sentence every beam holds the same prefill positions: only later ones move
            cache.reorder(rows, start=shared if keep.numel() == sents.numel() else 0)
            sents = sents[keep]
            tokens = tokens[rows]
            tokens[:, step + 1] = new_tokens
            lprobs = self.lprobs(self.model(new_tokens.unsqueeze(1), cache=cache)[:, -1])
        # Python's sort is stable, as fairseq's: equal scores keep their finishing order
        return [sorted(hyps, key=lambda h: h.score, reverse=True) for hyps in finished]


def _ban_repeated_ngrams(lprobs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Set -inf on every token that would complete an n-gram already present in ``history`` [R, T].

    fairseq's rule: the key is the last n-1 tokens; every earlier occurrence of the key bans its follower.
    The history includes the leading </s>, as fairseq's token buffer does."""
    T = history.size(1)
    if T < n:
        return
    if n == 1:
        lprobs.scatter_(1, history, NEG_INF)
        return
    key = history[:, T - n + 1 :]  # [R, n-1]
    windows = history[:, : T - 1].unfold(1, n - 1, 1)  # [R, T-n+1, n-1], starts 0..T-n
    followers = history[:, n - 1 :]  # [R, T-n+1]
    rows, cols = (windows == key.unsqueeze(1)).all(-1).nonzero(as_tuple=True)
    if rows.numel():
        lprobs[rows, followers[rows, cols]] = NEG_INF


def _sample(lprobs: torch.Tensor, topk: int, topp: float, generator) -> torch.Tensor:
    """fairseq ``Sampling.step`` for one beam: probabilities are exp(lprobs) (not renormalised after masking)."""
    if topp > 0:
        probs, order = lprobs.exp().sort(dim=-1, descending=True)
        below = probs.cumsum(-1).lt(topp)
        # keep the tokens strictly below topp plus the one that crosses it
        last = below.sum(-1, keepdim=True).clamp(max=probs.size(-1) - 1)
        keep = below.scatter(-1, last, True)
        probs = probs.masked_fill(~keep, 0.0)
    elif topk > 0:
        top_lp, order = lprobs.topk(min(topk, lprobs.size(-1)), dim=-1)
        probs = top_lp.exp()
    else:
        probs, order = lprobs.exp(), None
    choice = torch.multinomial(probs, 1, generator=generator)
    if order is not None:
        choice = order.gather(-1, choice)
    return choice.squeeze(1)
