"""`make bench`: run every benchmark module and write one Markdown report.

Each module exposes `run(quick: bool) -> str` (a Markdown section). Ratios are measured against
`transformers` on the same machine, A/B interleaved (in one process; the training update: each side in its own process,
driven in turn); nothing here is asserted by the test suite.
`python -m bench` (make bench) writes bench/results/README.md; `--quick` (make bench-quick, < 3 min) writes
bench/results/quick.md and covers the small configurations only.
"""

import argparse
import importlib
import os
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
    "bench.trainer_bench": "trainer: full update tokens/s, MFU and memory vs BioGptForCausalLM + AdamW",
    "bench.llama_bench": "llama: training tokens/s vs LlamaForCausalLM",
    "bench.generation_bench": "decoding: tokens/s vs transformers generate",
    "bench.split_bench": "whole-split decoding: length-sorted batches vs one by one, ours and transformers",
    "bench.encoder_bench": "encoder: QA training tokens/s vs ElectraForQuestionAnswering",
}


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"python {platform.python_version()}, load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(1/5/15 min) at the start"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small configurations only")
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--out", default=None, help="default: bench/results/README.md (quick: quick.md)")
    args = parser.parse_args(argv)
    args.out = args.out or f"bench/results/{'quick.md' if args.quick else 'README.md'}"

    sections = [
        "# biogpt-train benchmarks",
        "",
        f"Machine: {machine_line()}. Command: `python -m bench{' --quick' if args.quick else ''}`. "
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "The machine is shared (up to 8 other jobs on 2 cores): each row records the load when it was taken; ratios",
        "come from interleaved runs (the training update: each side in its own process, driven in turn), which load",
        "hits alike, so they are the numbers to read.",
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
