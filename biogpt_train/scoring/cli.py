"""Score decoded outputs with BioGPT's post-processing and official-equivalent metrics.

    python -m biogpt_train.score task=NAME pred=FILE gold=FILE [pmids=FILE] [entities=FILE] [format=FMT]
                                 [allow_missing=true]
    python -m biogpt_train.score task=squad_v1|squad_v2|bioasq_factoid pred=FILE gold=FILE[,FILE...] [na_probs=FILE]

Prints a human-readable summary, then, as the last line of stdout, one JSON object with the metrics in percent
(unrounded; a metric the original evaluator reports as NaN is ``null``), the counts, and ``units`` (per-document
values for bootstrap intervals, see ``experiments/bootstrap.py``). Exit status 2 on a usage error, 1 when
the inputs cannot be scored (the message names the file and the problem), including prediction lines that do not
match the gold documents one to one (bc5cdr, kd_dti, ddi: ``allow_missing=true`` scores gold documents without a
line as empty predictions instead; extra lines are always an error).
"""

from __future__ import annotations

import json
import sys

from biogpt_train.scoring import SCORERS, score
from biogpt_train.scoring.bioasq import score_bioasq_files
from biogpt_train.scoring.squad import score_squad_files

# Extractive QA (encoder family) reads JSON files, not decoded lines: args -> result dict.
QA_TASKS = {
    "squad_v1": lambda a: score_squad_files(a["pred"], a["gold"], 1),
    "squad_v2": lambda a: score_squad_files(a["pred"], a["gold"], 2, a.get("na_probs")),
    "bioasq_factoid": lambda a: score_bioasq_files(a["pred"], a["gold"].split(",")),
}

USAGE = """usage: python -m biogpt_train.score task=NAME pred=FILE gold=FILE [pmids=FILE] [entities=FILE] [format=FMT]
                                    [allow_missing=true]

  task      one of: {tasks}
  pred      decoded lines, one per example (source + prompt + answer, like BioGPT's *.detok)
  gold      bc5cdr: PubTator file (CDR_TestSet.PubTator.txt); kd_dti/ddi: raw test.json;
            pubmedqa: test_ground_truth.json; hoc: test.tsv
  pmids     one id per prediction line (relis_test.pmid); required for bc5cdr, optional otherwise
  entities  bc5cdr only: test.entities.json
  format    kd_dti/ddi only: rel-is (default), svo, is-of, htr
  allow_missing  bc5cdr/kd_dti/ddi only: true scores gold documents that have no prediction line as empty
            predictions (recall drops); default false: fewer lines than gold documents is an error

  squad_v1/squad_v2: pred = predictions JSON {{id: text}}, gold = the SQuAD JSON, na_probs = {{id: p}} (v2 only)
  bioasq_factoid: pred = {{id: [up to 5 ranked answers]}} (or a BioASQ submission JSON), gold = BioASQ golden
            JSON; several comma-separated golden files (test batches) give their mean and the concatenation
"""

KEYS = ("task", "pred", "gold", "pmids", "entities", "format", "na_probs", "allow_missing")
BOOLEANS = {"true": True, "false": False}
REQUIRED = ("task", "pred", "gold")


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")  # tolerate Hydra-style "+key=value"
        if not sep or not value:
            raise UsageError(f"expected key=value, got {arg!r}")
        if key not in KEYS:
            raise UsageError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
        if key in args:
            raise UsageError(f"{key} given twice")
        args[key] = value
    missing = [k for k in REQUIRED if k not in args]
    if missing:
        raise UsageError(f"missing {', '.join(k + '=' for k in missing)}")
    if args["task"] not in SCORERS and args["task"] not in QA_TASKS:
        raise UsageError(f"unknown task {args['task']!r}")
    if "na_probs" in args and args["task"] != "squad_v2":
        raise UsageError(f"na_probs= applies to squad_v2 only, not {args['task']}")
    extra = [k for k in ("pmids", "entities", "format") if k in args]
    if args["task"] in QA_TASKS and extra:
        raise UsageError(f"{args['task']} takes no {', '.join(k + '=' for k in extra)}")
    if "format" in args and args["task"] not in ("kd_dti", "ddi"):
        raise UsageError(f"format= applies to kd_dti and ddi only, not {args['task']}")
    if "entities" in args and args["task"] != "bc5cdr":
        raise UsageError(f"entities= applies to bc5cdr only, not {args['task']}")
    if "allow_missing" in args:
        if args["task"] not in ("bc5cdr", "kd_dti", "ddi"):
            raise UsageError(f"allow_missing= applies to bc5cdr, kd_dti and ddi, not {args['task']} (whose "
                             "scorer needs every gold answer)")
        if args["allow_missing"].lower() not in BOOLEANS:
            raise UsageError(f"allow_missing={args['allow_missing']!r}: expected true or false")
    return args


def _fmt(v) -> str:
    return "NaN" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def summary(task: str, result: dict) -> str:
    lines = [f"task: {task}"]
    for key, value in result.items():
        if key == "units":  # per-document values for bootstrap intervals: JSON only
            continue
        if isinstance(value, dict):
            lines.append(f"{key}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
        else:
            lines.append(f"{key}: {_fmt(value)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE.format(tasks=", ".join([*SCORERS, *QA_TASKS])))
        return 0
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}\n\n" + USAGE.format(tasks=", ".join([*SCORERS, *QA_TASKS])), file=sys.stderr)
        return 2
    options = {"target_format": args["format"]} if "format" in args else {}
    if "allow_missing" in args:
        options["allow_missing"] = BOOLEANS[args["allow_missing"].lower()]
    try:
        if args["task"] in QA_TASKS:
            result = QA_TASKS[args["task"]](args)
        else:
            result = score(args["task"], args["pred"], args["gold"], pmids=args.get("pmids"),
                           entities=args.get("entities"), **options)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(args["task"], result))
    print(json.dumps(result, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
