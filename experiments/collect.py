"""Collect `results.json` files into the reproduction table (Markdown + CSV).

    python -m experiments.collect RUN_DIR [RUN_DIR ...] [--out experiments/results/table] [--paper-model biogpt]

Runs are grouped by their `group` (the run name without the seed); each row gives our mean ± std over
seeds, a 95% bootstrap interval over test documents (resampled jointly across seeds), the paper's
value and the difference, and the majority-class baseline when the run recorded one.
The paper value is the one reported for the run's own model (results.json `model`: biogpt, biogpt_large);
--paper-model compares every row with that model's numbers instead (e.g. a small model against BioGPT's).
A result that lists `table_metrics` (the log-likelihood evaluation's acc and acc_norm) gives one row per metric,
with per-document units from `metric_units`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from experiments.bootstrap import bootstrap_ci_over_seeds

COLUMNS = ["task", "model", "group", "metric", "seeds", "ours_mean", "ours_std", "ci95_low", "ci95_high",
           "paper", "paper_model", "diff", "majority_baseline", "split"]


def find_results(paths: list[Path]) -> list[dict]:
    found = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for path in files:
            try:
                result = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from exc
            result["_path"] = str(path)
            found.append(result)
    return found


def paper_value(task: str, model: str, metric: str):
    from biogpt_train.tasks.paper_results import lookup

    return lookup(task, model, metric)


def summarise(results: list[dict], *, bootstrap_samples: int = 2000, paper_model: str | None = None) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[r.get("group") or r.get("run_name") or r["_path"]].append(r)
    rows = []
    for group, runs in sorted(groups.items()):
        first = runs[0]
        # one row per metric in `table_metrics` (log-likelihood results: acc, acc_norm), else the primary metric
        for metric in first.get("table_metrics") or [first["primary_metric"]]:
            rows.append(_row(group, runs, metric, bootstrap_samples, paper_model))
    return rows


def _units(result: dict, metric: str):
    """Per-document units of `metric`: `metric_units[metric]`, or `units` for the primary metric."""
    return (result.get("metric_units") or {}).get(metric) or (
        result.get("units") if metric == result["primary_metric"] else None)


def _row(group: str, runs: list[dict], metric: str, bootstrap_samples: int, paper_model: str | None) -> dict:
    first = runs[0]
    values = [r["metrics"][metric] for r in runs if r["metrics"].get(metric) is not None]
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    low = high = math.nan
    units = [_units(r, metric) for r in runs if _units(r, metric)]
    if units and len(units) == len(runs):
        low, high = bootstrap_ci_over_seeds(units, samples=bootstrap_samples)
    paper = paper_value(first["task"], paper_model or first.get("model", "biogpt"), metric)
    baseline = (first.get("baseline") or {}).get(metric)
    return {
        "task": first["task"], "model": first.get("model", ""), "group": group, "metric": metric,
        "seeds": len(values), "ours_mean": mean, "ours_std": std, "ci95_low": low, "ci95_high": high,
        "paper": paper, "paper_model": paper_model or first.get("model", "biogpt"),
        "diff": (mean - paper) if paper is not None else None,
        "majority_baseline": baseline, "split": first.get("split", ""),
    }


def _fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def to_markdown(rows: list[dict]) -> str:
    out = ["| task | model | run | metric | split | ours (mean ± std, n seeds) | 95% CI (documents) "
           "| paper (model) | diff "
           "| majority baseline |",
           "|---|---|---|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ours = f"{_fmt(r['ours_mean'])} ± {_fmt(r['ours_std'])} (n={r['seeds']})"
        ci = f"[{_fmt(r['ci95_low'])}, {_fmt(r['ci95_high'])}]"
        out.append(f"| {r['task']} | {r['model']} | {r['group']} | {r['metric']} | {r['split']} | {ours} | {ci} "
                   f"| {_fmt(r['paper'])} ({r['paper_model']}) | {_fmt(r['diff'])} | {_fmt(r['majority_baseline'])} |")
    return "\n".join(out) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv")
    parser.add_argument("--bootstrap-samples", type=int, default=2000)
    parser.add_argument("--paper-model", help="compare with this model's paper numbers (default: each run's model)")
    args = parser.parse_args(argv)
    results = find_results(args.paths)
    if not results:
        print(f"no results.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    rows = summarise(results, bootstrap_samples=args.bootstrap_samples, paper_model=args.paper_model)
    markdown = to_markdown(rows)
    print(markdown)
    if args.out:
        from biogpt_train.utils import atomic_write

        atomic_write(args.out.with_suffix(".md"), markdown)
        atomic_write(args.out.with_suffix(".csv"), to_csv(rows))
        print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
