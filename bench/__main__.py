"""`make bench`: run every benchmark module and write one Markdown report.

Each module exposes `run(quick: bool) -> str` (a Markdown section). Ratios are measured against
`transformers` on the same machine in the same process; nothing here is asserted by the test suite.
"""

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import torch

from biogpt_train.utils import atomic_write

# Explicit list, in report order: module name -> what it measures.
BENCHMARKS = {
    "bench.tokenizer_bench": "tokenizer: sentences/s vs BioGptTokenizer",
    "bench.data_prep_bench": "data_prep: abstracts/s and tokens/s, 1 and 2 workers",
    "bench.model_bench": "model: training tokens/s vs BioGptForCausalLM",
    "bench.llama_bench": "llama: training tokens/s vs LlamaForCausalLM",
    "bench.trainer_bench": "trainer: full update step tokens/s and MFU",
    "bench.generation_bench": "decoding: tokens/s vs transformers generate",
}


def machine_line() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small configurations only")
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--out", default="bench/results/README.md")
    args = parser.parse_args(argv)

    sections = [
        "# biogpt-train benchmarks",
        "",
        f"Machine: {machine_line()}. Command: `python -m bench{' --quick' if args.quick else ''}`. "
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    for name, what in BENCHMARKS.items():
        if args.only and name.split(".")[-1] not in args.only and name not in args.only:
            continue
        print(f"== {what}", flush=True)
        start = time.perf_counter()
        try:
            section = importlib.import_module(name).run(quick=args.quick)
        except Exception as exc:  # report and continue: one broken benchmark must not hide the others
            section = f"## {what}\n\nFAILED: {type(exc).__name__}: {exc}\n"
        print(section, flush=True)
        sections += [section.rstrip(), f"\n_({time.perf_counter() - start:.0f} s)_", ""]
    atomic_write(Path(args.out), "\n".join(sections) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
