"""`python -m biogpt_train.generate`: decode a task file or continue free text (see generation/decode.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from pathlib import Path

from biogpt_train.config.schema import GenerationConfig
from biogpt_train.generation.decode import (
    TEXT_DEFAULTS, _make_tokenizer, decode_file, find_bpecodes, generate_text, load_for_decoding,
)
from biogpt_train.generation import decode as _decode_doc

# --- command line ----------------------------------------------------------------------------------------------
def _add_decoding_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    g = p.add_argument_group("decoding (fairseq SequenceGenerator semantics)")
    g.add_argument("--beam", type=int, default=defaults.get("beam", 1), metavar="N")
    g.add_argument("--max-len-b", type=int, default=defaults.get("max_len_b", 1024), metavar="N",
                   help="total length limit, prefix included (also capped by max_positions - 1)")
    g.add_argument("--min-len", type=int, default=defaults.get("min_len", 1), metavar="N",
                   help="minimum length, prefix included")
    g.add_argument("--lenpen", type=float, default=defaults.get("lenpen", 1.0), metavar="X")
    g.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N")
    g.add_argument("--sampling", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0, metavar="X")
    g.add_argument("--topk", type=int, default=0, metavar="K")
    g.add_argument("--topp", type=float, default=0.0, metavar="P")
    g.add_argument("--seed", type=int, default=None, metavar="N")
    g.add_argument("--fast-kernels", action="store_true",
                   help="CPU float32: prepacked oneDNN linears (faster with batches/beams; another summation "
                        "order, so near-ties may decode differently; see docs/FIDELITY.md)")
    g.add_argument("--device", default=None, metavar="DEVICE", help="default: cuda if available, else cpu")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto (BioGPT): float16 on CUDA when the checkpoint trained with fp16 weights, else float32")


def _gen_kwargs(a) -> dict:
    return dict(beam=a.beam, max_len_b=a.max_len_b, min_len=a.min_len, lenpen=a.lenpen,
                no_repeat_ngram_size=a.no_repeat_ngram_size, sampling=a.sampling, temperature=a.temperature,
                topk=a.topk, topp=a.topp, seed=a.seed, fast_kernels=a.fast_kernels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biogpt_train.generate", description=_decode_doc.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode, defaults in (("task", {}), ("text", TEXT_DEFAULTS)):
        p = sub.add_parser(mode, help="task decoding to a file" if mode == "task" else "free text generation")
        p.add_argument("--checkpoint", required=True, metavar="PATH",
                       help="fairseq checkpoint.pt, HF directory or native .pt")
        p.add_argument("--dict", dest="dict_path", default=None, metavar="FILE",
                       help="dict.txt (default: stored in the checkpoint, else dict.txt beside it)")
        p.add_argument("--bpecodes", default=None, metavar="FILE",
                       help="fastBPE codes (default: merges.txt of an HF directory, or bpecodes beside the checkpoint)")
        prompt = p.add_mutually_exclusive_group()
        prompt.add_argument("--learned-prompt", type=int, default=None, metavar="N",
                            help="append learned1..learnedN")
        prompt.add_argument("--manual-prompt", default=None, metavar="TEXT", help="a hard prompt string")
        if mode == "task":
            p.add_argument("--input", required=True, metavar="FILE",
                           help="source lines, or a binarised prefix with --input-format bin")
            p.add_argument("--input-format", default="text", choices=["text", "bpe", "bin"])
            p.add_argument("--output", required=True, metavar="FILE")
            p.add_argument("--max-source-positions", type=int, default=None, metavar="N",
                           help="default: the checkpoint's task config")
            p.add_argument("--batch-size", type=int, default=16, metavar="N",
                           help="sentences per batch (batches are sorted by length; batched == one by one)")
            p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                           help="also at most N padded prefix tokens per batch (fairseq generate's --max-tokens)")
            p.add_argument("--max-length-gap", type=int, default=GenerationConfig.max_length_gap, metavar="N",
                           help="and prefixes at most N tokens shorter than the batch's longest (same outputs; "
                                "avoids slow forced steps; -1: no limit)")
        else:
            p.add_argument("--prompt", default=None, metavar="TEXT",
                           help="the text to continue (default: one per stdin line)")
        _add_decoding_args(p, defaults)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return _run(a)
    except (ValueError, OSError) as e:  # bad input (CheckpointError is a ValueError): one line, no traceback
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or type(e).__name__}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _run(a) -> int:
    if not Path(a.checkpoint).exists():
        raise ValueError(f"--checkpoint {a.checkpoint}: no such file or directory (a fairseq checkpoint.pt, an HF "
                         "directory or a native .pt; `python -m data_prep.download --help` lists the released ones)")
    if a.bpecodes is None and (a.mode == "text" or a.input_format == "text"):
        a.bpecodes = find_bpecodes(a.checkpoint)
        if a.bpecodes is None:
            raise ValueError(f"{'text generation' if a.mode == 'text' else '--input-format text'} needs the "
                             f"model's BPE codes: pass --bpecodes FILE (none found in or beside {a.checkpoint}: "
                             "merges.txt, bpecodes)")
        logging.getLogger("biogpt_train").info("BPE codes: %s", a.bpecodes)

    if a.mode == "task":
        decode_file(a.checkpoint, a.input, a.output, input_format=a.input_format, dict_path=a.dict_path,
                    bpecodes=a.bpecodes, learned_prompt=a.learned_prompt, manual_prompt=a.manual_prompt,
                    max_source_positions=a.max_source_positions, batch_size=a.batch_size, max_tokens=a.max_tokens,
                    max_length_gap=None if a.max_length_gap < 0 else a.max_length_gap, device=a.device,
                    dtype=a.dtype, **_gen_kwargs(a))
        return 0

    model, dictionary, _, _ = load_for_decoding(a.checkpoint, a.dict_path, a.learned_prompt, a.manual_prompt,
                                                a.device, a.dtype)
    tokenizer = _make_tokenizer(dictionary, a.bpecodes)
    texts = [a.prompt] if a.prompt is not None else (line.rstrip("\n") for line in sys.stdin)
    for text in texts:
        if text.strip():
            print(generate_text(model, tokenizer, text, **_gen_kwargs(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
