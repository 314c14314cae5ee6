"""BioGPT fine-tuning examples ``[source ; prompt ; target </s>]`` (biogpt-reference §5.2,
``LanguageModelPromptDataset`` of ``microsoft/BioGPT/src``).

Per example (``src``/``tgt`` items are stored with a trailing ``</s>``):

- source truncation: if ``len(src) - 1 > max_source_positions`` keep ``src[:max_source_positions + 1]`` with
  ``[-2] = '...'`` and ``[-1] = </s>``;
- target truncation: ``max_target_length = max_target_positions - max_source_positions - len(prompt)`` (one less
  with ``prefix``); a longer target keeps its first ``max_target_length`` ids with ``[-2] = '...'``, ``[-1] = </s>``;
- sentence = ``source[:-1] ⧺ prompt ⧺ target`` (``prompt ⧺ source[:-1] ⧺ <sep> ⧺ target`` with ``prefix``);
- batch: ``target = pad_right(sentence)``; ``src_tokens = pad_right([</s>] ⧺ sentence[:-1])`` (``bos`` instead of
  ``</s>`` when given: Llama sequences start with ``<s>``); ``ntokens`` = non-pad target tokens;
- size for batching = ``min(len(src) - 1, max_src) + min(len(tgt), max_tgt)`` (prompt not counted).

BioGPT computes the loss on every non-pad token (source and prompt included); ``mask_source_loss=True`` is an
opt-in deviation that sets the source/prompt(/sep) target positions to pad.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from biogpt_train.data.batching import ordered_indices
from biogpt_train.data.lm_dataset import pad_right


def prompt_ids(dictionary: Any, manual_prompt: str | None = None, learned_prompt: int | None = None,
               learned_prompt_pattern: str = "learned") -> list[int]:
    """Prompt ids as BioGPT's ``setup_prompt``: ``encode_line(manual_prompt)`` or ``learned1 .. learnedN``.

    The learned symbols must already be in the dictionary (``add_symbol``); an id that maps to ``<unk>`` raises.
    A vocabulary that encodes text (a SentencePiece ``TokenizerVocab``) encodes the manual prompt as text.
    """
    if manual_prompt and learned_prompt:
        raise ValueError("manual_prompt and learned_prompt are mutually exclusive")
    if manual_prompt and hasattr(dictionary, "encode"):
        return [int(i) for i in dictionary.encode(manual_prompt)]
    if manual_prompt:
        words = manual_prompt.split()
    elif learned_prompt:
        words = [f"{learned_prompt_pattern}{k}" for k in range(1, int(learned_prompt) + 1)]
    else:
        return []
    ids = [int(dictionary.index(w)) for w in words]
    unk = int(dictionary.unk())
    missing = [w for w, i in zip(words, ids) if i == unk]
    if missing:
        raise ValueError(f"prompt words not in the dictionary (would be <unk>): {missing[:5]}; "
                         "add learned prompt symbols with Dictionary.add_symbol before building the prompt")
    return ids


def max_target_length(max_target_positions: int, max_source_positions: int, prompt_len: int,
                      prefix: bool = False) -> int:
    """``max_target_positions - max_source_positions - prompt_len`` (``- 1`` with ``prefix``): 1024-640-9 = 375."""
    return max_target_positions - max_source_positions - prompt_len - (1 if prefix else 0)


def truncate_source(src: Sequence[int], max_source_positions: int, ellipsis_id: int, eos: int = 2) -> np.ndarray:
    """BioGPT source truncation of an item stored with its trailing ``</s>``: at most ``max_src`` ids + ``</s>``."""
    src = np.array(src, dtype=np.int64).reshape(-1)
    if len(src) - 1 > max_source_positions:
        src = src[: max_source_positions + 1]
        src[-2], src[-1] = ellipsis_id, eos
    return src


def truncate_target(tgt: Sequence[int], max_target_len: int, ellipsis_id: int, eos: int = 2) -> np.ndarray:
    """BioGPT target truncation: at most ``max_target_len`` ids, the last two being ``'...'`` and ``</s>``."""
    tgt = np.array(tgt, dtype=np.int64).reshape(-1)
    if len(tgt) > max_target_len:
        tgt = tgt[:max_target_len]
        tgt[-2], tgt[-1] = ellipsis_id, eos
    return tgt


def make_sentence(source: np.ndarray, prompt: Sequence[int], target: np.ndarray, *, eos: int = 2,
                  prefix: bool = False, sep_id: int | None = None) -> tuple[np.ndarray, int]:
    """``(sentence, n_context)``: BioGPT's ``make_sentence`` and how many leading ids are source/prompt/sep."""
    source = np.asarray(source, dtype=np.int64)
    if len(source) and source[-1] == eos:
        source = source[:-1]
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    target = np.asarray(target, dtype=np.int64)
    if prefix:
        if sep_id is None:
            raise ValueError("prefix=True needs sep_id (the id of the separator token, '<seqsep>' in BioGPT)")
        context = np.concatenate([prompt, source, np.asarray([sep_id], dtype=np.int64)])
    else:
        context = np.concatenate([source, prompt])
    return np.concatenate([context, target]), len(context)


def build_inference_prefix(source: Sequence[int], prompt: Sequence[int], *, max_source_positions: int,
                           ellipsis_id: int, eos: int = 2, prefix: bool = False,
                           sep_id: int | None = None) -> list[int]:
    """Forced decoding prefix ``source(truncated, no </s>) ⧺ prompt`` (``prompt ⧺ source ⧺ <sep>`` with ``prefix``).

    ``source`` may or may not end in ``</s>`` (one is appended before truncation, as binarisation does).
    Decoding itself starts from ``</s>``, which is not part of the returned prefix.
    """
    src = list(source)
    if not src or src[-1] != eos:
        src.append(eos)
    src = truncate_source(src, max_source_positions, ellipsis_id, eos)
    sentence, n_context = make_sentence(src, prompt, np.zeros(0, dtype=np.int64), eos=eos, prefix=prefix,
                                        sep_id=sep_id)
    return sentence[:n_context].tolist()


def collate_prompt(samples: list[dict], pad: int = 1, eos: int = 2, bos: int | None = None) -> dict:
    """Batch of prompt samples (``{"id", "sentence", "n_context", ...}``); ``{}`` for an empty list (dummy batch).

    Inputs start with ``bos`` (default ``eos``, fairseq's). Samples with ``"loss_mask_len"`` > 0 get that many
    leading target positions set to pad.
    """
    start = eos if bos is None else bos
    if not samples:
        return {}
    sentences = [np.asarray(s["sentence"], dtype=np.int64) for s in samples]
    target = pad_right(sentences, pad)
    inputs = [np.concatenate([[start], s[:-1]]) if len(s) else s for s in sentences]  # collate_tokens(move_eos...)
    src_tokens = pad_right(inputs, pad)
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    for row, s in enumerate(samples):
        k = int(s.get("loss_mask_len", 0))
        if k:
            target[row, :k] = pad
    return {
        "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
        "nsentences": len(samples),
        "ntokens": int(target.ne(pad).sum()),
        "net_input": {"src_tokens": src_tokens, "src_lengths": lengths},
        "target": target,
    }


class PromptDataset:
    """Fine-tuning pairs over two indexed datasets (or lists of id lists), each item ending in ``</s>``.

    ``ds[i] = {"id", "source", "target", "sentence", "n_context", "loss_mask_len"}``; ``ds.sizes`` for batching;
    ``ds.ordered_indices(seed)`` = BioGPT's permutation + stable sort by size; ``ds.collater(samples)``.
    """

    def __init__(
        self,
        src: Any,
        tgt: Any,
        prompt: Sequence[int] = (),
        *,
        ellipsis_id: int,
        max_source_positions: int = 384,
        max_target_positions: int = 1024,
        prefix: bool = False,
        sep_id: int | None = None,
        mask_source_loss: bool = False,
        shuffle: bool = True,
        eos: int = 2,
        pad: int = 1,
        bos: int | None = None,
    ):
        if len(src) != len(tgt):
            raise ValueError(f"source has {len(src)} items but target has {len(tgt)}")
        if prefix and sep_id is None:
            raise ValueError("prefix=True needs sep_id")
        if max_source_positions < 1:
            raise ValueError(f"max_source_positions must be >= 1, got {max_source_positions}")
        self.src, self.tgt = src, tgt
        self.prompt = [int(x) for x in prompt]
        self.ellipsis_id = int(ellipsis_id)
        self.max_source_positions = int(max_source_positions)
        self.max_target_length = max_target_length(max_target_positions, max_source_positions, len(self.prompt),
                                                   prefix)
        if self.max_target_length < 2:
            raise ValueError(
                f"max target length {self.max_target_length} = max_target_positions {max_target_positions} - "
                f"max_source_positions {max_source_positions} - prompt {len(self.prompt)}"
                f"{' - 1 (prefix)' if prefix else ''} leaves no room for a target plus '...' and </s>"
            )
        self.prefix, self.sep_id = prefix, sep_id
        self.mask_source_loss = mask_source_loss
        self.shuffle = shuffle
        self.eos, self.pad, self.bos = eos, pad, bos  # bos: first input token (None: eos, as BioGPT)
        src_sizes = _sizes(src)
        tgt_sizes = _sizes(tgt)
        self.sizes = (np.minimum(src_sizes - 1, self.max_source_positions)
                      + np.minimum(tgt_sizes, self.max_target_length)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> dict:
        source = truncate_source(self.src[i], self.max_source_positions, self.ellipsis_id, self.eos)
        target = truncate_target(self.tgt[i], self.max_target_length, self.ellipsis_id, self.eos)
        sentence, n_context = make_sentence(source, self.prompt, target, eos=self.eos, prefix=self.prefix,
                                            sep_id=self.sep_id)
        return {
            "id": int(i),
            "source": source,
            "target": target,
            "sentence": sentence,
            "n_context": n_context,
            "loss_mask_len": n_context if self.mask_source_loss else 0,
        }

    def num_tokens(self, i: int) -> int:
        return int(self.sizes[i])

    def ordered_indices(self, seed: int | None) -> np.ndarray:
        return ordered_indices(self.sizes, seed, shuffle=self.shuffle, tie_break="stable")

    def collater(self, samples: list[dict]) -> dict:
        return collate_prompt(samples, self.pad, self.eos, self.bos)

    def inference_prefix(self, i: int) -> list[int]:
        """Forced generation prefix for example ``i`` (its target is ignored)."""
        return build_inference_prefix(self.src[i], self.prompt, max_source_positions=self.max_source_positions,
                                      ellipsis_id=self.ellipsis_id, eos=self.eos, prefix=self.prefix,
                                      sep_id=self.sep_id)


def _sizes(ds: Any) -> np.ndarray:
    sizes = getattr(ds, "sizes", None)
    if sizes is None:
        sizes = [len(x) for x in ds]
    return np.asarray(sizes, dtype=np.int64).reshape(-1)
