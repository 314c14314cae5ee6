"""`python -m biogpt_train.generate`: decode a task file or continue free text (see generation/decode.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from biogpt_train.generation.decode import (
    TEXT_DEFAULTS, _make_tokenizer, decode_file, generate_text, load_for_decoding,
)
from biogpt_train.generation import decode as _decode_doc

# --- command line ----------------------------------------------------------------------------------------------
def _add_decoding_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    g = p.add_argument_group("decoding (fairseq SequenceGenerator semantics)")
    g.add_argument("--beam", type=int, default=defaults.get("beam", 1))
    g.add_argument("--max-len-b", type=int, default=defaults.get("max_len_b", 1024),
                   help="total length limit, prefix included (also capped by max_positions - 1)")
    g.add_argument("--min-len", type=int, default=defaults.get("min_len", 1), help="minimum length, prefix included")
    g.add_argument("--lenpen", type=float, default=defaults.get("lenpen", 1.0))
    g.add_argument("--no-repeat-ngram-size", type=int, default=0)
    g.add_argument("--sampling", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--topk", type=int, default=0)
    g.add_argument("--topp", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto (BioGPT): float16 on CUDA when the checkpoint trained with fp16 weights, else float32")


def _gen_kwargs(a) -> dict:
    return dict(beam=a.beam, max_len_b=a.max_len_b, min_len=a.min_len, lenpen=a.lenpen,
                no_repeat_ngram_size=a.no_repeat_ngram_size, sampling=a.sampling, temperature=a.temperature,
                topk=a.topk, topp=a.topp, seed=a.seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biogpt_train.generate", description=_decode_doc.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode, defaults in (("task", {}), ("text", TEXT_DEFAULTS)):
        p = sub.add_parser(mode, help="task decoding to a file" if mode == "task" else "free text generation")
        p.add_argument("--checkpoint", required=True, help="fairseq checkpoint.pt, HF directory or native .pt")
        p.add_argument("--dict", dest="dict_path", default=None,
                       help="dict.txt (default: stored in the checkpoint, else dict.txt beside it)")
        p.add_argument("--bpecodes", default=None, required=mode == "text", help="fastBPE codes")
        prompt = p.add_mutually_exclusive_group()
        prompt.add_argument("--learned-prompt", type=int, default=None, help="N: append learned1..learnedN")
        prompt.add_argument("--manual-prompt", default=None, help="a hard prompt string")
        if mode == "task":
            p.add_argument("--input", required=True, help="source lines, or a binarised prefix with --input-format bin")
            p.add_argument("--input-format", default="text", choices=["text", "bpe", "bin"])
            p.add_argument("--output", required=True)
            p.add_argument("--max-source-positions", type=int, default=None,
                           help="default: the checkpoint's task config")
            p.add_argument("--batch-size", type=int, default=16)
        else:
            p.add_argument("--prompt", default=None, help="the text to continue (default: one per stdin line)")
        _add_decoding_args(p, defaults)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    if a.mode == "task":
        decode_file(a.checkpoint, a.input, a.output, input_format=a.input_format, dict_path=a.dict_path,
                    bpecodes=a.bpecodes, learned_prompt=a.learned_prompt, manual_prompt=a.manual_prompt,
                    max_source_positions=a.max_source_positions, batch_size=a.batch_size, device=a.device,
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
