"""Extractive QA data path for the encoder family: SQuAD-format JSON -> examples -> windowed features, and model
logits -> answer texts (n-best) again.

Reading (``read_squad``): SQuAD v1.1 and v2.0 JSON. ``is_impossible`` questions get no answers (v2's
``plausible_answers`` are ignored). Every answer must satisfy ``context[answer_start:answer_start+len(text)] ==
text``; a question with a misaligned or malformed answer is skipped: the first one is logged by id, and a summary
with the count and some ids follows at the end.

Features (``make_features``) follow Google BERT's ``run_squad.py`` / HF's legacy ``run_squad.py`` (which the
ELECTRA and BioM-ELECTRA fine-tuning code also use), with character offsets as in HF ``run_qa.py``:

- input ``[CLS] question [SEP] context-window [SEP]``; token_type_ids 0 up to the first ``[SEP]``, 1 after;
- the question is cut to ``max_query_length`` tokens, as run_squad does; if what is left plus the 3 special tokens
  fills ``max_seq_length``, that is an error naming the question;
- a context longer than ``max_seq_length - len(question) - 3`` tokens is split into windows whose starts are
  ``doc_stride`` tokens apart (the BERT meaning: the *step*; HF ``run_qa.py`` passes ``doc_stride`` to the
  tokenizer as the *overlap* instead: overlap o there equals step ``window - o`` here); the last window ends at the
  context end;
- each context token is "max context" in the window where min(left, right context) + 0.01 * window length is
  largest (first such window on ties); post-processing only lets an answer *start* there;
- training targets: the answer's first and last token (the tokens overlapping the answer's characters), as
  positions in the window; index 0 ([CLS]) when the question is impossible or the answer is not wholly inside
  the window. Training uses the first gold answer.

The tokenizer is any object with ``encode_with_offsets(text) -> (ids, offsets)`` (word pieces only, no special
tokens; ``offsets[i] = (start, end)`` character span of piece i in ``text``) and ``cls_id``, ``sep_id``,
``pad_id``.

Post-processing (``postprocess``) is the legacy ``compute_predictions_logits`` with offsets for the text: per
window the ``n_best_size`` best start and end logits (over the window's real tokens; ties: lower index first); a
span is kept when both ends are context tokens of that window, the start is max-context there, ``end >= start``
and it is at most ``max_answer_length`` tokens long. All windows' spans are sorted by start+end logit (stable);
duplicate texts are dropped; the answer text is ``context[start_char:end_char]``. With ``version_2`` the null
span (CLS) of the window with the lowest null score joins the list, ``null_odds`` = null score − best non-null
score, and the prediction is "" when ``null_odds > null_score_diff_threshold``. As in the legacy code a list
holding only the null answer (or nothing) gets a nonce ``"empty"`` entry with logits 0. Probabilities are a
softmax over the n-best totals.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

logger = logging.getLogger(__name__)


class SquadDataError(ValueError):
    """A SQuAD-format file or record cannot be used (the message names the file or question id)."""


@dataclass
class Example:
    id: str
    question: str
    context: str
    answers: list[dict] = field(default_factory=list)  # every gold {"text", "answer_start"}; [] if impossible
    is_impossible: bool = False


@dataclass
class Feature:
    """One window of one example. Lists are unpadded; ``collate`` pads."""
    example_index: int
    example_id: str
    input_ids: list[int]
    context_start: int                 # position of the window's first context token
    doc_start: int                     # index of that token among the example's context tokens
    offsets: list[tuple[int, int]]     # character span of each context token of the window
    max_context: list[bool]            # per context token of the window: is this its max-context window
    start_position: int = 0            # training target positions in input_ids (0 = [CLS] = no answer)
    end_position: int = 0

    @property
    def token_type_ids(self) -> list[int]:
        return [0] * self.context_start + [1] * (len(self.input_ids) - self.context_start)

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    @property
    def offset_mapping(self) -> list[Optional[tuple[int, int]]]:
        """Per position: the character span for context tokens, None for [CLS], question and [SEP] tokens."""
        n = len(self.input_ids) - self.context_start - len(self.offsets)
        return [None] * self.context_start + list(self.offsets) + [None] * n


# --------------------------------------------------------------------------------------------------- reading


def _answer_ok(context: str, answer) -> bool:
    if not isinstance(answer, dict):
        return False
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool) or start < 0:
        return False
    return context[start:start + len(text)] == text


def squad_examples(data: dict, source: str = "<squad json>") -> list[Example]:
    """Examples from a loaded SQuAD v1.1/v2.0 dict (see ``read_squad``)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadDataError(f'{source}: not a SQuAD file (expected {{"data": [{{"paragraphs": [...]}}]}})')
    examples, bad = [], []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise SquadDataError(f"{source}: a paragraph has no context string")
            for qa in paragraph.get("qas", []):
                qid, question = qa.get("id"), qa.get("question")
                if not isinstance(qid, str) or not isinstance(question, str):
                    raise SquadDataError(f"{source}: a question lacks an id or question string (id {qid!r})")
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa.get("answers", [])
                if not isinstance(answers, list) or not all(_answer_ok(context, a) for a in answers):
                    if not bad:
                        logger.warning("%s: question %s: answer text not found at answer_start in its context; "
                                       "skipping it (a count follows)", source, qid)
                    bad.append(qid)
                    continue
                answers = [{"text": a["text"], "answer_start": a["answer_start"]} for a in answers]
                examples.append(Example(qid, question, context, answers, impossible))
    if bad:
        logger.warning("%s: skipped %d of %d questions whose answer does not match context[answer_start:...] "
                       "(e.g. %s)", source, len(bad), len(bad) + len(examples), ", ".join(bad[:5]))
    if not examples:
        raise SquadDataError(f"{source}: no usable question" + (f" ({len(bad)} skipped)" if bad else ""))
    return examples


def read_squad(path) -> list[Example]:
    """SQuAD v1.1 / v2.0 JSON file -> examples, in file order (bad records skipped, see the module docstring)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SquadDataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return squad_examples(data, str(path))


# --------------------------------------------------------------------------------------------------- features


def _windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window, BERT's loop: step ``min(length, stride)``, the last reaches the end."""
    spans, start = [], 0
    while start < n_tokens:
        length = min(window, n_tokens - start)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return spans


def _max_context(spans: list[tuple[int, int]], n_tokens: int) -> list[int]:
    """For each context token, the index of its max-context window."""
    best = [-1] * n_tokens
    best_score = [-math.inf] * n_tokens
    for w, (start, length) in enumerate(spans):
        for pos in range(start, start + length):
            score = min(pos - start, start + length - 1 - pos) + 0.01 * length
            if score > best_score[pos]:
                best[pos], best_score[pos] = w, score
    return best


def _answer_tokens(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """First and last token overlapping [start_char, end_char); (-1, -1) when no token does."""
    first = next((i for i, (s, e) in enumerate(offsets) if e > start_char and s < end_char), -1)
    if first < 0:
        return -1, -1
    last = first
    while last + 1 < len(offsets) and offsets[last + 1][0] < end_char:
        last += 1
    return first, last


def make_features(examples: Sequence[Example], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                  max_query_length: int = 64, training: bool = True) -> list[Feature]:
    """Windowed features of ``examples`` (see the module docstring); with ``training`` the answer positions."""
    if doc_stride < 1 or max_query_length < 1:
        raise SquadDataError(f"doc_stride ({doc_stride}) and max_query_length ({max_query_length}) must be >= 1")
    features: list[Feature] = []
    cached_context, cached = None, None
    for index, ex in enumerate(examples):
        q_ids = list(tokenizer.encode_with_offsets(ex.question)[0])[:max_query_length]
        if ex.context != cached_context:  # SQuAD asks several questions per paragraph
            ids, offsets = tokenizer.encode_with_offsets(ex.context)
            cached_context, cached = ex.context, (list(ids), [tuple(o) for o in offsets])
        c_ids, c_offsets = cached
        tok_start = tok_end = -1
        if training and not ex.is_impossible:
            if not ex.answers:
                raise SquadDataError(f"question {ex.id}: no gold answer and not is_impossible; cannot make a "
                                     "training target (mark it is_impossible or give an answer)")
            a = ex.answers[0]
            tok_start, tok_end = _answer_tokens(c_offsets, a["answer_start"], a["answer_start"] + len(a["text"]))
        window = max_seq_length - len(q_ids) - 3
        if window < 1:
            raise SquadDataError(f"question {ex.id}: {len(q_ids)} question tokens (after max_query_length "
                                 f"{max_query_length}) + 3 special tokens leave no room for context in "
                                 f"max_seq_length {max_seq_length}; lower max_query_length")
        spans = _windows(len(c_ids), window, doc_stride)
        owner = _max_context(spans, len(c_ids))
        head = [tokenizer.cls_id] + q_ids + [tokenizer.sep_id]
        for w, (start, length) in enumerate(spans):
            f = Feature(index, ex.id, head + c_ids[start:start + length] + [tokenizer.sep_id], len(head), start,
                        c_offsets[start:start + length], [owner[p] == w for p in range(start, start + length)])
            if tok_start >= 0 and start <= tok_start and tok_end < start + length:
                f.start_position = tok_start - start + len(head)
                f.end_position = tok_end - start + len(head)
            features.append(f)
    return features


def collate(features: Sequence[Feature], pad_id: int, pad_to: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest feature (or ``pad_to``): input_ids, token_type_ids, attention_mask,
    start_positions, end_positions as int64 tensors."""
    width = max(len(f.input_ids) for f in features) if pad_to is None else pad_to
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        if n > width:
            raise SquadDataError(f"question {f.example_id}: feature of {n} tokens exceeds pad_to={width}")
        ids[row, :n] = torch.tensor(f.input_ids, dtype=torch.long)
        types[row, f.context_start:n] = 1
        mask[row, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "start_positions": torch.tensor([f.start_position for f in features], dtype=torch.long),
            "end_positions": torch.tensor([f.end_position for f in features], dtype=torch.long)}


# --------------------------------------------------------------------------------------------------- post-processing


def _as_rows(logits, features) -> list[list[float]]:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu()
    if len(logits) != len(features):
        raise ValueError(f"postprocess: {len(logits)} logit rows for {len(features)} features")
    rows = []
    for row, f in zip(logits, features):
        row = row.tolist() if isinstance(row, torch.Tensor) else list(row)
        if len(row) < len(f.input_ids):
            raise ValueError(f"postprocess: question {f.example_id}: {len(row)} logits for {len(f.input_ids)} tokens")
        rows.append([float(x) for x in row[:len(f.input_ids)]])
    return rows


def _best_indexes(logits: list[float], n: int) -> list[int]:
    return sorted(range(len(logits)), key=lambda i: logits[i], reverse=True)[:n]  # stable: ties keep lower index


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def postprocess(examples: Sequence[Example], features: Sequence[Feature], start_logits, end_logits,
                n_best_size: int = 20, max_answer_length: int = 30, version_2: bool = False,
                null_score_diff_threshold: float = 0.0):
    """Logits of ``features`` (rows aligned with them) -> ``(predictions {id: text}, nbest {id: [{text,
    probability, start_logit, end_logit}]}, null_odds {id: float})``; ``null_odds`` is empty unless
    ``version_2``."""
    starts, ends = _as_rows(start_logits, features), _as_rows(end_logits, features)
    by_example: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_example.setdefault(f.example_index, []).append(i)
    predictions, nbest_out, null_odds = {}, {}, {}
    for index, ex in enumerate(examples):
        prelim = []  # (score, start_logit, end_logit, text or None for null)
        null = None  # (score, start_logit, end_logit) of the window with the lowest null score
        for i in by_example.get(index, []):
            f, s_log, e_log = features[i], starts[i], ends[i]
            if version_2 and (null is None or s_log[0] + e_log[0] < null[0]):
                null = (s_log[0] + e_log[0], s_log[0], e_log[0])
            lo, hi = f.context_start, f.context_start + len(f.offsets)  # context positions [lo, hi)
            for s in _best_indexes(s_log, n_best_size):
                if not (lo <= s < hi and f.max_context[s - lo]):
                    continue
                for e in _best_indexes(e_log, n_best_size):
                    if not lo <= e < hi or e < s or e - s + 1 > max_answer_length:
                        continue
                    text = ex.context[f.offsets[s - lo][0]:f.offsets[e - lo][1]]
                    prelim.append((s_log[s] + e_log[e], s_log[s], e_log[e], text))
        if version_2:
            if null is None:  # no window at all: the legacy initial null score, with logits 0
                null = (1e6, 0.0, 0.0)
            prelim.append((null[1] + null[2], null[1], null[2], None))
        prelim.sort(key=lambda p: p[0], reverse=True)  # stable: ties keep window, then start, then end order

        nbest, seen = [], set()
        for _, s_logit, e_logit, text in prelim:
            if len(nbest) >= n_best_size:
                break
            if text is None:  # the null answer
                text = ""
            elif text in seen:
                continue
            seen.add(text)
            nbest.append((text, s_logit, e_logit))
        if version_2:
            if "" not in seen:
                nbest.append(("", null[1], null[2]))
            if len(nbest) == 1:
                nbest.insert(0, ("empty", 0.0, 0.0))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))
        probs = _softmax([s + e for _, s, e in nbest])
        nbest_out[ex.id] = [{"text": t, "probability": p, "start_logit": s, "end_logit": e}
                            for (t, s, e), p in zip(nbest, probs)]
        if not version_2:
            predictions[ex.id] = nbest[0][0]
            continue
        best = next((n for n in nbest if n[0]), None)  # None only if every span text is empty
        diff = null[0] - (best[1] + best[2]) if best is not None else math.inf
        null_odds[ex.id] = diff
        predictions[ex.id] = "" if diff > null_score_diff_threshold else best[0]
    return predictions, nbest_out, null_odds


def write_json(path, obj) -> Path:
    """Predictions / n-best / null-odds files as run_squad writes them (UTF-8, indented), atomically."""
    from biogpt_train.utils import atomic_write

    return atomic_write(path, json.dumps(obj, indent=4, ensure_ascii=False) + "\n")
