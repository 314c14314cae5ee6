"""Decode with a BioGPT checkpoint: task inference as BioGPT's ``infer.sh``, or free text generation.

Task decoding (reference §5.2, §6): every source line becomes ``ids + </s>`` (Moses + BPE first for raw text),
is truncated to ``max_source_positions`` with the ``...`` marker, loses its ``</s>`` and gets the prompt
(``learned1 .. learnedN`` or a manual prompt) appended; that prefix is forced and decoding continues greedily (by
default) from ``</s>``. Each output line is the whole hypothesis (source + prompt words + answer) with BPE removed
and Moses-detokenised: the text of BioGPT's ``*.detok`` files, which the task scorers parse.

    python -m biogpt_train.generate task --checkpoint ckpt.pt --input data/test.x --output test.detok \\
        --bpecodes bpecodes [--dict dict.txt] [--learned-prompt 9 | --manual-prompt "..."] \\
        [--max-source-positions 640] [--input-format text|bpe|bin] [--batch-size 16] [--max-tokens N] [--beam 1 ...]
    python -m biogpt_train.generate text --checkpoint ckpt.pt --bpecodes bpecodes --dict dict.txt \\
        --prompt "COVID-19 is"            # beam 5, min_len 100, max_len_b 1024 (reference §4); stdin without --prompt

``--input-format bin`` reads a binarised ``{split}.x-y.x`` prefix of a prepared directory (the exact ids
fairseq-preprocess produced). Prompt and ``max_source_positions`` default to the checkpoint's training config
(fairseq ``cfg.task`` or ours). Python: ``decode_file``, ``decode_lines``, ``generate_text``; the pipeline stage is
``stage(cfg, run_dir)``.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import torch

from biogpt_train.generation import kernels
from biogpt_train.generation.generator import generate

logger = logging.getLogger("biogpt_train")

TEXT_DEFAULTS = dict(beam=5, min_len=100, max_len_b=1024, lenpen=1.0)  # BioGPT's text generation example


# --- loading -----------------------------------------------------------------------------------------------------
def _task_option(cfg, name: str):
    """``cfg.task.<name>`` of a training config (dict, OmegaConf or fairseq's), or ``args.<name>`` of a legacy
    fairseq checkpoint (one flat argparse Namespace); None when absent."""
    def get(obj, key):
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    task = get(cfg, "task") if cfg is not None else None
    if task is not None and not isinstance(task, str):
        return get(task, name)
    return get(cfg, name) if cfg is not None else None


DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16",
               "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def trained_in_fp16(cfg) -> bool:
    """Whether a training config kept fp16 weights: fairseq ``cfg.common.fp16`` (``--fp16`` and
    ``--memory-efficient-fp16``; legacy ``args.fp16``), ours ``trainer.precision=fp16`` with ``trainer.fp16_weights``
    (autocast fp16 keeps fp32 weights, like fairseq's ``--amp``, whose cfg says ``fp16: False``)."""
    def get(obj, key):
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    if cfg is None:
        return False
    common, trainer = get(cfg, "common"), get(cfg, "trainer")
    if trainer is not None and not isinstance(trainer, str):
        weights = get(trainer, "fp16_weights")
        return str(get(trainer, "precision")) == "fp16" and weights not in (None, False, "off")
    holder = common if common is not None and not isinstance(common, str) else cfg
    return bool(get(holder, "fp16"))


def decoding_dtype(requested: str, train_cfg, device) -> str:
    """torch dtype name for decoding. ``auto`` = BioGPT's ``inference.py``: ``model.half()`` when the checkpoint's
    training cfg says fp16 (``trained_in_fp16``), on CUDA; on CPU such a checkpoint decodes in fp32 (noted)."""
    requested = str(requested)
    if requested != "auto":
        if requested not in DTYPE_NAMES:
            raise ValueError(f"dtype must be auto, fp32, fp16 or bf16 (or float32/float16/bfloat16), not {requested!r}")
        return DTYPE_NAMES[requested]
    if not trained_in_fp16(train_cfg):
        return "float32"
    if torch.device(device).type == "cuda":
        return "float16"
    logger.info("the checkpoint trained with fp16 weights (BioGPT decodes it in fp16 on CUDA); decoding in fp32 on "
                "%s (dtype=fp16 to force)", device)
    return "float32"


def load_for_decoding(checkpoint, dict_path=None, learned_prompt: Optional[int] = None,
                      manual_prompt: Optional[str] = None, device=None, dtype: str = "auto"):
    """(model, dictionary, prompt ids, training cfg) for a checkpoint in any format.

    The dictionary is ``dict_path``, else the one stored in the checkpoint, else ``dict.txt`` beside it. It then
    grows as BioGPT's task does at inference (``add_prompt_symbols``, the rule training uses): ``<seqsep>`` first
    when the checkpoint trained with ``prefix``, then prompt words it lacks (``learned1..N``, or a manual prompt's
    unknown words) get the next ids; then it must match the embedding rows. Without prompt arguments the
    checkpoint's task config decides. ``dtype``: float32 | float16 | bfloat16, or ``auto`` (``decoding_dtype``)."""
    from biogpt_train.checkpoint import io as checkpoints
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.prompt_dataset import add_prompt_symbols

    loaded = checkpoints.read_checkpoint(checkpoint)
    if dict_path is not None:
        dictionary = Dictionary.load(dict_path)
    elif loaded.dictionary_symbols is not None:
        dictionary = checkpoints.dictionary_from_symbols(loaded.dictionary_symbols)
    else:
        dictionary = Dictionary.load(_dictionary_beside(checkpoint))
    if learned_prompt is None and manual_prompt is None:
        learned_prompt = _task_option(loaded.cfg, "learned_prompt") or None
        manual_prompt = _task_option(loaded.cfg, "manual_prompt") or None
    prompt = add_prompt_symbols(dictionary, manual_prompt, learned_prompt,
                                _task_option(loaded.cfg, "learned_prompt_pattern") or "learned",
                                bool(_task_option(loaded.cfg, "prefix")),
                                _task_option(loaded.cfg, "sep_token") or "<seqsep>")
    checkpoints.check_vocab(loaded.model_config, dictionary, dict_path or f"stored with {checkpoint}", checkpoint)
    model = checkpoints.build_model(loaded)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device=device, dtype=getattr(torch, decoding_dtype(dtype, loaded.cfg, device))).eval()
    return model, dictionary, prompt, loaded.cfg


def _dictionary_beside(checkpoint) -> Path:
    """dict.txt (or fairseq's dict.x.txt) in the checkpoint's directory."""
    for name in ("dict.txt", "dict.x.txt"):
        path = Path(checkpoint).parent / name
        if path.exists():
            return path
    raise FileNotFoundError(f"{checkpoint}: no dictionary inside and no dict.txt / dict.x.txt beside it; pass "
                            "--dict (the data-bin dict.txt the model was trained with)")


def _make_tokenizer(dictionary, bpecodes):
    if bpecodes is None:
        return None
    from biogpt_train.data.tokenizer import Tokenizer

    return Tokenizer(dictionary, bpecodes)


@functools.lru_cache(maxsize=1)
def _moses_detokenizer():
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang="en")


def plain_detokenize(bpe_line: str) -> str:
    """``Tokenizer.detokenize_bpe`` without BPE codes (ids read from a binarised dataset need none): remove
    "@@ ", then the Moses detokenizer."""
    return _moses_detokenizer().detokenize((bpe_line + " ").replace("@@ ", "").rstrip().split())


# --- task decoding -------------------------------------------------------------------------------------------
def build_prefixes(sources: Sequence[Sequence[int]], prompt: Sequence[int], dictionary,
                   max_source_positions: int, prefix: bool = False, sep_token: str = "<seqsep>") -> List[List[int]]:
    """BioGPT's inference prefix per source (ids, with or without the trailing </s>): the source truncated to
    max_source_positions with '...', then the prompt — or, for checkpoints trained with task.prefix,
    ``prompt source <seqsep>``. The one rule for the generate CLI and the pipeline's generate stage."""
    from biogpt_train.data.prompt_dataset import build_inference_prefix

    ellipsis = dictionary.index("...")
    sep = dictionary.index(sep_token) if prefix else None
    eos = dictionary.eos()
    cut = sum(len(s) - (1 if len(s) and int(s[-1]) == eos else 0) > max_source_positions for s in sources)
    if cut:  # the same cut training makes (PromptDataset): said, not silent
        logger.warning("generate: %d of %d sources are longer than max_source_positions=%d tokens and were cut "
                       "(ending in '...'), as in training", cut, len(sources), max_source_positions)
    return [build_inference_prefix(list(map(int, s)), prompt, max_source_positions=int(max_source_positions),
                                   ellipsis_id=ellipsis, eos=dictionary.eos(), prefix=bool(prefix), sep_id=sep)
            for s in sources]


class DecodeProgress:
    """`generate: 48/200 sentences (24%) | 310 tokens/s | ETA 0:01:02`, after the first batch, then at most every
    `every_s` seconds, and at the end (a long decode never looks stuck; a short one prints two lines)."""

    def __init__(self, total: int, every_s: float = 10.0):
        self.total, self.every_s = total, every_s
        self.done = self.tokens = 0
        self.start = self.last = time.perf_counter()
        self.printed = False

    def add(self, sentences: int, new_tokens: int) -> None:
        self.done += sentences
        self.tokens += new_tokens
        now = time.perf_counter()
        if self.printed and now - self.last < self.every_s and self.done < self.total:
            return
        self.printed, self.last = True, now
        spent = max(now - self.start, 1e-9)
        eta = (self.total - self.done) * spent / max(self.done, 1)
        logger.info("generate: %d/%d sentences (%.0f%%) | %.0f tokens/s | %.1f s%s", self.done, self.total,
                    100 * self.done / max(self.total, 1), self.tokens / spent, spent,
                    f" | ETA {int(eta) // 60}:{int(eta) % 60:02d}" if self.done < self.total else "")


def length_batches(lengths: Sequence[int], batch_size: int = 16, max_tokens: Optional[int] = None,
                   max_length_gap: Optional[int] = None) -> List[List[int]]:
    """Indices of a split grouped for decoding, fairseq-generate style: sorted by length, longest first (ties in
    input order), each batch at most ``batch_size`` sentences and, with ``max_tokens``, at most that many padded
    prefix tokens (``len(batch) * (longest + 1)``, the leading </s> counted). A prefix longer than ``max_tokens``
    is decoded alone. With ``max_length_gap``, a batch's prefixes are at most that many tokens shorter than its
    longest: the generator forces the longer prefixes' tail one step at a time, which on a CPU costs more than the
    batch saves when lengths are far apart (bench/results/NOTES.md)."""
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1) or (max_length_gap or 0) < 0:
        raise ValueError(f"generation batch_size and max_tokens must be positive and max_length_gap >= 0, got "
                         f"{batch_size}, {max_tokens} and {max_length_gap}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: List[List[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            longest = lengths[last[0]]  # the first is the longest
            if (len(last) < batch_size and (max_tokens is None or (len(last) + 1) * (longest + 1) <= max_tokens)
                    and (max_length_gap is None or longest - lengths[i] <= max_length_gap)):
                last.append(i)
                continue
        batches.append([i])
    return batches


def decode_prefixes(model, prefixes: Sequence[Sequence[int]], *, batch_size: int = 16,
                    max_tokens: Optional[int] = None, max_length_gap: Optional[int] = None, log_every: int = 0,
                    progress: bool = False, **gen_kwargs) -> List[List[int]]:
    """``generate`` over length-sorted batches (``length_batches``); results in input order.

    Batched decoding equals unbatched decoding, so batching only changes speed. ``progress``: log sentences done,
    generated tokens/s and an ETA (DecodeProgress); ``log_every``: also a line every that many batches."""
    gen_kwargs.setdefault("max_positions", model.cfg.max_positions)
    out: List[Optional[List[int]]] = [None] * len(prefixes)
    start = time.perf_counter()
    meter = DecodeProgress(len(prefixes)) if progress else None
    done = 0
    # fast_kernels: pack the weights once for the whole split, not once per batch
    batches = length_batches([len(p) for p in prefixes], batch_size, max_tokens, max_length_gap)
    with kernels.packed_linears(model, enabled=bool(gen_kwargs.get("fast_kernels"))):
        for b, idx in enumerate(batches):
            for i, hyp in zip(idx, generate(model, [prefixes[i] for i in idx], **gen_kwargs)):
                out[i] = hyp
            done += len(idx)
            if meter is not None:
                meter.add(len(idx), sum(len(out[i]) - len(prefixes[i]) for i in idx))
            elif log_every and (b + 1) % log_every == 0:
                logger.info("generate: %d/%d examples, %.1f s", done, len(prefixes), time.perf_counter() - start)
    return out


def decode_lines(model, dictionary, lines: Sequence[str], *, prompt: Sequence[int] = (),
                 max_source_positions: int, tokenizer=None, input_is_bpe: bool = False, batch_size: int = 16,
                 prefix: bool = False, sep_token: str = "<seqsep>", **gen_kwargs) -> List[str]:
    """Source lines -> output lines (``*.detok`` text). Raw text is Moses-tokenised and BPE'd by ``tokenizer``
    (``Tokenizer.from_files``); ``input_is_bpe`` lines are used as they are (BioGPT's ``*.tok.bpe.x``)."""
    if not input_is_bpe:
        if tokenizer is None:
            raise ValueError("raw text input needs the model's BPE codes (--bpecodes FILE; an HF directory's "
                             "merges.txt is found by itself), or BPE'd input (--input-format bpe)")
        lines = tokenizer.bpe_encode_batch(list(lines))
    sources = [dictionary.encode_line(line, append_eos=True, add_if_not_exist=False) for line in lines]
    if tokenizer is not None and hasattr(tokenizer, "check_unk"):  # a dict.txt / bpecodes mismatch: mostly <unk>
        tokenizer.check_unk(sources, "generate input", logger=logger)
    return decode_sources(model, dictionary, sources, prompt=prompt, max_source_positions=max_source_positions,
                          tokenizer=tokenizer, batch_size=batch_size, prefix=prefix, sep_token=sep_token,
                          **gen_kwargs)


def decode_sources(model, dictionary, sources: Sequence[Sequence[int]], *, prompt: Sequence[int] = (),
                   max_source_positions: int, tokenizer=None, batch_size: int = 16, prefix: bool = False,
                   sep_token: str = "<seqsep>", **gen_kwargs) -> List[str]:
    """Source ids (as binarised: ids + </s>) -> output lines (``*.detok`` text). ``gen_kwargs`` go to
    ``decode_prefixes`` (max_tokens, max_length_gap) and on to ``generate``."""
    prefixes = build_prefixes(sources, prompt, dictionary, max_source_positions, prefix, sep_token)
    hyps = decode_prefixes(model, prefixes, batch_size=batch_size, progress=True,
                           eos=dictionary.eos(), pad=dictionary.pad(), **gen_kwargs)
    detok = tokenizer.detokenize_bpe if tokenizer is not None else plain_detokenize
    return [detok(dictionary.string(h)) for h in hyps]


def decode_file(checkpoint, input, output, *, input_format: str = "text", dict_path=None, bpecodes=None,
                learned_prompt: Optional[int] = None, manual_prompt: Optional[str] = None,
                max_source_positions: Optional[int] = None, batch_size: int = 16, device=None, dtype: str = "auto",
                **gen_kwargs) -> Path:
    """Decode every example of ``input`` and write ``output`` (one line per example, atomically).

    ``input_format``: ``text`` (raw lines, e.g. a prepared ``{split}.x``; needs ``bpecodes``), ``bpe`` (BPE'd
    lines) or ``bin`` (the binarised prefix ``{split}.x-y.x``). Prompt and ``max_source_positions`` default to the
    checkpoint's task config. ``gen_kwargs`` go to ``decode_prefixes`` (max_tokens,
    max_length_gap) and ``generate`` (beam, max_len_b, min_len, lenpen, ...)."""
    from biogpt_train.utils import atomic_write

    if input_format not in ("text", "bpe", "bin"):
        raise ValueError(f"input_format must be text, bpe or bin, not {input_format!r}")
    model, dictionary, prompt, cfg = load_for_decoding(checkpoint, dict_path, learned_prompt, manual_prompt,
                                                       device, dtype)
    if max_source_positions is None:
        max_source_positions = _task_option(cfg, "max_source_positions")
        if max_source_positions is None:
            raise ValueError(f"{checkpoint} has no task.max_source_positions in its config; pass "
                             "max_source_positions (BioGPT: 640 for relation extraction, 900 for HoC)")
    t0 = time.perf_counter()
    tokenizer = _make_tokenizer(dictionary, bpecodes)
    prefix_mode = dict(prefix=bool(_task_option(cfg, "prefix")), sep_token=_task_option(cfg, "sep_token") or "<seqsep>")
    common = dict(prompt=prompt, max_source_positions=max_source_positions, tokenizer=tokenizer, **prefix_mode,
                  batch_size=batch_size, **gen_kwargs)
    if input_format == "bin":
        from biogpt_train.data.indexed_dataset import MMapIndexedDataset

        data = MMapIndexedDataset(input)
        lines = decode_sources(model, dictionary, [data[i] for i in range(len(data))], **common)
    else:
        src_lines = Path(input).read_text(encoding="utf-8").split("\n")
        if src_lines[-1] == "":
            src_lines.pop()  # after the final newline
        lines = decode_lines(model, dictionary, src_lines, input_is_bpe=input_format == "bpe", **common)
    atomic_write(Path(output), "".join(line + "\n" for line in lines))
    logger.info("generate: %d examples from %s -> %s in %.1f s", len(lines), input, output, time.perf_counter() - t0)
    return Path(output)


# --- free text -------------------------------------------------------------------------------------------------
def generate_text(model, tokenizer, text: str, **gen_kwargs) -> str:
    """BioGPT's text generation: Moses + BPE the user text, force it after </s>, decode, detokenise."""
    kwargs = {**TEXT_DEFAULTS, "max_positions": model.cfg.max_positions, **gen_kwargs}
    prefix = tokenizer.encode(text)
    if not prefix:
        raise ValueError("empty prompt text")
    return tokenizer.decode(generate(model, [prefix], **kwargs)[0])


def find_bpecodes(checkpoint) -> Optional[Path]:
    """The BPE codes that go with a checkpoint when none are given: an HF directory's merges.txt (the codes file
    byte for byte) or bpecodes in it, else bpecodes beside a checkpoint file."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    for name in ("merges.txt", "bpecodes"):
        if (folder / name).is_file():
            return folder / name
    return None
