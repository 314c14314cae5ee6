"""Multiple-choice log-likelihood evaluation from the command line.

    python -m biogpt_train.evaluation TASK --checkpoint PATH --data FILE [--fewshot N --fewshot-data TRAIN]
        [--seed 1234] [--limit N] [--batch-size 16] [--device cuda] [--dtype fp32] [--out results.json]
        [--model-label NAME] [--group NAME] [--dict dict.txt] [--bpecodes bpecodes] [--cop-base auto|0|1]

TASK is pubmedqa, medqa or medmcqa (file formats: ``biogpt_train.evaluation.multiple_choice``). The model comes
from ``biogpt_train.load_pretrained`` (fairseq checkpoint.pt, HF directory or native .pt), the tokenizer from
``_load_tokenizer``. Metrics go to stdout as JSON; ``--out`` writes results.json (plus
``{stem}.predictions.jsonl``) for ``python -m experiments.collect``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _load_tokenizer(path, dict_path=None, bpecodes=None):
    """The tokenizer that goes with a checkpoint: `biogpt_train.load_tokenizer`, or for BioGPT an explicit
    dict.txt / bpecodes pair (`--dict`, `--bpecodes`)."""
    from biogpt_train.data.tokenizers import load_tokenizer

    if dict_path is None and bpecodes is None:
        return load_tokenizer(path)
    from biogpt_train.checkpoint import io as checkpoints
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.data.tokenizer import Tokenizer

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if bpecodes is None:
        bpecodes = next((folder / n for n in ("bpecodes", "merges.txt") if (folder / n).is_file()), None)
        if bpecodes is None:
            raise checkpoints.CheckpointError(f"{path}: no bpecodes or merges.txt beside it; pass --bpecodes")
    if dict_path is not None:
        return Tokenizer(Dictionary.load(dict_path), bpecodes)
    return Tokenizer(checkpoints.load_dictionary(checkpoints.read_checkpoint(path)), bpecodes)


def _model_label(checkpoint: Path) -> str:
    """The checkpoint's directory name (a file's folder, or the HF directory itself)."""
    path = checkpoint.resolve()
    return path.name if path.is_dir() else path.parent.name


def build_parser() -> argparse.ArgumentParser:
    from biogpt_train.evaluation.multiple_choice import TASKS

    p = argparse.ArgumentParser(prog="python -m biogpt_train.evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--checkpoint", required=True, type=Path, help="fairseq checkpoint.pt, HF directory or native .pt")
    p.add_argument("--data", required=True, type=Path, help="the split to evaluate")
    p.add_argument("--fewshot", type=int, default=0, help="solved examples before each question (default 0)")
    p.add_argument("--fewshot-data", type=Path, default=None, help="the train split the examples come from")
    p.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (the harness's default 1234)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="default: the model's positions")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weights (log-softmax is always fp32)")
    p.add_argument("--out", type=Path, default=None, help="write results.json here")
    p.add_argument("--model-label", default=None, help="results.json model (default: the checkpoint's folder name)")
    p.add_argument("--group", default=None, help="results.json group (default: model:task:loglikelihood:K-shot)")
    p.add_argument("--split", default=None, help="results.json split (default: the data file's stem)")
    p.add_argument("--dict", dest="dict_path", default=None, help="dict.txt (default: beside / in the checkpoint)")
    p.add_argument("--bpecodes", default=None, help="BPE codes (default: bpecodes or merges.txt beside it)")
    p.add_argument("--cop-base", default="auto", choices=["auto", "0", "1"], help="medmcqa: cop counts from 0 or 1")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as e:  # our errors are ValueError subclasses with the remedy
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"task": result["task"], "metrics": result["metrics"], "baseline": result["baseline"]}
    print(json.dumps(summary, indent=1))
    return 0


def run(args) -> dict:
    import torch

    import biogpt_train
    from biogpt_train.evaluation.multiple_choice import evaluate_multiple_choice, write_results

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = _load_tokenizer(args.checkpoint, args.dict_path, args.bpecodes)
    model = biogpt_train.load_pretrained(args.checkpoint)
    model = model.to(device=device, dtype=getattr(torch, DTYPES[args.dtype])).eval()
    read_options = {"cop_base": args.cop_base} if args.task == "medmcqa" else {}
    result = evaluate_multiple_choice(model, tokenizer, args.task, args.data, num_fewshot=args.fewshot,
                                      fewshot_path=args.fewshot_data, seed=args.seed, limit=args.limit,
                                      batch_size=args.batch_size, max_length=args.max_length, device=device,
                                      read_options=read_options)
    if args.out is not None:
        label = args.model_label or _model_label(args.checkpoint)
        write_results(result, args.out, model_label=label, group=args.group, split=args.split,
                      checkpoint=args.checkpoint, extra={"dtype": args.dtype, "device": str(device)})
        logging.getLogger("biogpt_train").info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    sys.exit(main())
