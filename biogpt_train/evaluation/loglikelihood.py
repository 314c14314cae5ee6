"""Log-likelihood of continuations given contexts, with lm-evaluation-harness semantics, for every decoder family.

    loglikelihood(model, tokenizer, [(context, continuation), ...]) -> [(sum of log p(continuation), is_greedy)]

Token split (the harness's ``TemplateLM._encode_pair``):
  1. trailing whitespace of the context moves to the front of the continuation ("Answer: " + "yes" is scored as
     "Answer:" + " yes"), so the word boundary belongs to the continuation;
  2. whole = encode(context + continuation), ctx = encode(context), continuation ids = whole[len(ctx):]. The split
     is by length, as the harness does: when encode(context) is not a prefix of encode(whole) the first
     continuation ids are whatever ``whole`` has there;
  3. the model reads [prefix] + whole, with ``tokenizer.prefix_token_id`` (BioGPT: ``</s>`` = 2, the token its
     sequences start with; Llama: ``<s>`` = 1). This is what the harness's HF backend feeds when the tokenizer
     adds that token itself (BioGptTokenizer prepends ``</s>``, Llama's tokenizers ``<s>``); an empty context
     gives [prefix] + encode(continuation), which is the harness's empty-context rule.
A continuation that encodes to no ids (e.g. only whitespace) is an error, as in the harness.

Scoring (the harness's ``HFLM._loglikelihood_tokens``): the input is (ctx + cont)[-(max_length + 1):][:-1], i.e.
left-truncated to the model's positions (the prefix is the first thing cut); the logits at the last len(cont)
input positions are log-softmaxed in fp32 and the continuation ids' log-probs summed; ``is_greedy`` is whether
the argmax equals the continuation at every position. A continuation longer than max_length is an error.

Batching: inputs are sorted by length, longest first (as the harness), right-padded with the model's pad id and
run ``batch_size`` at a time; results come back in request order. With right padding and causal attention a real
position never sees a pad, so batched scores equal unbatched ones (tests check 1e-5). Requests whose model input
is identical (several one-token continuations of one context: " A"/" B"/" C"/" D", " yes"/" no") share one
forward pass: the harness's one-token-continuation cache, for any identical input row.

Tokenizer interface: ``encode(text) -> list[int]`` without special tokens, ``prefix_token_id``, and optionally
``encode_batch(texts) -> list[list[int]]`` giving the same ids (used when present: BioGPT's memoises BPE).

Model interface: ``model(tokens [B, T]) -> logits [B, T, V]`` (or an object with ``.logits``).
  - pad id: ``model.cfg.padding_idx`` (BioGPT; its positions skip pads), else ``model.cfg.pad_token_id``, else 0.
    With right padding any id gives the same scores; the model's own pad lets it mask the padding.
  - attention mask: passed as ``attention_mask`` (bool [B, T], True = real token) when the model says so with an
    explicit ``model.accepts_attention_mask = True``; without that attribute, when ``model.forward`` has an
    ``attention_mask`` parameter (``inspect.signature``, checked once per call).
  - max length: ``max_length`` argument, else ``model.max_positions()`` (BioGPT), else ``model.cfg.max_positions``
    / ``max_position_embeddings`` / ``max_seq_len``.
"""

from __future__ import annotations

import inspect
import logging
from typing import List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger("biogpt_train")

Request = Tuple[str, str]  # (context, continuation)
TokenRequest = Tuple[List[int], List[int]]  # (prefix + context ids, continuation ids)


class LoglikelihoodError(ValueError):
    """A request that cannot be scored (the message names it and the remedy)."""


# --- model interface -----------------------------------------------------------------------------------------
def model_max_length(model) -> int:
    """Positions the model can read (see module docstring)."""
    fn = getattr(model, "max_positions", None)
    if callable(fn):
        return int(fn())
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    for name in ("max_positions", "max_position_embeddings", "max_seq_len"):
        value = getattr(cfg, name, None)
        if value:
            return int(value)
    raise LoglikelihoodError(f"cannot tell how many positions {type(model).__name__} reads (no max_positions(), "
                             "cfg.max_positions, max_position_embeddings or max_seq_len); pass max_length")


def model_pad_id(model) -> int:
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    for name in ("padding_idx", "pad_token_id"):
        value = getattr(cfg, name, None)
        if value is not None:
            return int(value)
    return 0  # right padding under causal attention: the id never reaches a scored position


def accepts_attention_mask(model) -> bool:
    flag = getattr(model, "accepts_attention_mask", None)
    if flag is not None:
        return bool(flag)
    try:
        return "attention_mask" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # builtins / C extensions without a signature
        return False


def _logits(model, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    out = model(tokens) if mask is None else model(tokens, attention_mask=mask)
    return out if torch.is_tensor(out) else out.logits


def _device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


# --- text -> ids ---------------------------------------------------------------------------------------------
def split_trailing_space(context: str, continuation: str) -> Tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation (the harness's rule)."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def _encode_all(tokenizer, texts: Sequence[str]) -> List[List[int]]:
    batch = getattr(tokenizer, "encode_batch", None)  # BioGPT's Tokenizer memoises BPE across a batch
    if callable(batch):
        return [list(ids) for ids in batch(list(texts))]
    return [list(tokenizer.encode(t)) for t in texts]


def encode_pairs(tokenizer, requests: Sequence[Request]) -> List[TokenRequest]:
    """(context, continuation) strings -> ([prefix] + context ids, continuation ids), the module's split rule."""
    prefix = int(tokenizer.prefix_token_id)
    pairs = [split_trailing_space(c, x) for c, x in requests]
    contexts = sorted({c for c, _ in pairs if c})
    ids = dict(zip(contexts, _encode_all(tokenizer, contexts)))  # shared contexts (multiple choice) once
    wholes = _encode_all(tokenizer, [c + x for c, x in pairs])
    out = []
    for i, ((ctx, cont), whole) in enumerate(zip(pairs, wholes)):
        ctx_ids = ids[ctx] if ctx else []
        cont_ids = whole[len(ctx_ids):]
        if not cont_ids:
            raise LoglikelihoodError(f"request {i}: continuation {requests[i][1]!r} encodes to no tokens after "
                                     f"context {_short(requests[i][0])!r}; give a non-empty continuation")
        out.append(([prefix] + ctx_ids, cont_ids))
    return out


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else "..." + text[-n:]


# --- scoring -------------------------------------------------------------------------------------------------
def loglikelihood(model, tokenizer, requests: Sequence[Request], *, batch_size: int = 16,
                  max_length: Optional[int] = None, device=None) -> List[Tuple[float, bool]]:
    """(sum of continuation log-probs, is_greedy) for every (context, continuation), in request order."""
    from biogpt_train.checkpoint.io import check_tokenizer_fits

    check_tokenizer_fits(model, tokenizer, "loglikelihood")
    return loglikelihood_tokens(model, encode_pairs(tokenizer, requests), batch_size=batch_size,
                                max_length=max_length, device=device)


def loglikelihood_tokens(model, requests: Sequence[TokenRequest], *, batch_size: int = 16,
                         max_length: Optional[int] = None, device=None) -> List[Tuple[float, bool]]:
    """Like ``loglikelihood`` on already encoded requests: context ids must start with the prefix token."""
    if batch_size < 1:
        raise LoglikelihoodError(f"batch_size must be >= 1, got {batch_size}")
    max_len = int(max_length or model_max_length(model))
    rows: dict = {}  # model input -> index of its unique row
    row_of = []
    truncated = 0
    for i, (ctx, cont) in enumerate(requests):
        if not ctx:
            raise LoglikelihoodError(f"request {i}: empty context ids; they must start with the prefix token")
        if not cont:
            raise LoglikelihoodError(f"request {i}: empty continuation ids; give at least one token to score")
        if len(cont) > max_len:
            raise LoglikelihoodError(f"request {i}: continuation of {len(cont)} tokens exceeds the model's "
                                     f"{max_len} positions; shorten it")
        whole = list(ctx) + list(cont)
        truncated += len(whole) > max_len + 1
        inp = tuple(whole[-(max_len + 1):][:-1])
        row_of.append(rows.setdefault(inp, len(rows)))
    if truncated:
        logger.warning("loglikelihood: %d of %d requests exceed %d positions; their contexts were truncated from "
                       "the left", truncated, len(requests), max_len)

    inputs = list(rows)
    users: List[List[int]] = [[] for _ in inputs]
    for i, r in enumerate(row_of):
        users[r].append(i)
    order = sorted(range(len(inputs)), key=lambda r: (-len(inputs[r]), inputs[r]))  # longest first
    dev = _device(model, device)
    pad = model_pad_id(model)
    use_mask = accepts_attention_mask(model)
    results: List[Optional[Tuple[float, bool]]] = [None] * len(requests)
    was_training = model.training
    model.eval()  # dropout off: scores must be deterministic
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                width = len(inputs[chunk[0]])
                tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
                for j, r in enumerate(chunk):
                    tokens[j, :len(inputs[r])] = torch.tensor(inputs[r], dtype=torch.long)
                mask = None
                if use_mask:
                    lengths = torch.tensor([len(inputs[r]) for r in chunk])
                    mask = (torch.arange(width)[None, :] < lengths[:, None]).to(dev)
                logits = _logits(model, tokens.to(dev), mask)
                for j, r in enumerate(chunk):
                    n_in = len(inputs[r])
                    for i in users[r]:
                        cont = requests[i][1]
                        rows_lp = logits[j, n_in - len(cont):n_in].float().log_softmax(-1)
                        target = torch.tensor(cont, dtype=torch.long, device=rows_lp.device)
                        total = rows_lp.gather(-1, target[:, None]).sum()
                        greedy = bool((rows_lp.argmax(-1) == target).all())
                        results[i] = (float(total), greedy)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


__all__ = ["loglikelihood", "loglikelihood_tokens", "encode_pairs", "split_trailing_space", "model_max_length",
           "model_pad_id", "accepts_attention_mask", "LoglikelihoodError"]
