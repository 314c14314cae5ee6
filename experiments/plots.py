"""PNG plots: training/validation loss against updates, and a metric against a swept value.

    python -m experiments.plots loss RUN_DIR [--out loss.png]
    python -m experiments.plots sweep SWEEP_DIR --param task.learned_prompt [--out sweep.png]

`loss` reads the run's metrics.jsonl (written by the trainer: {"split", "update", "loss", ...});
`sweep` reads every results.json below SWEEP_DIR and takes the swept value from its `overrides` (`--param experiment`
for +sweep=target_format); for the paper's KD-DTI ablations the paper's numbers are drawn beside ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402

from experiments.collect import find_results  # noqa: E402


def read_metrics(run_dir: Path) -> dict[str, list[dict]]:
    path = run_dir / "metrics.jsonl" if run_dir.is_dir() else run_dir
    if not path.exists():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    by_split = defaultdict(list)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from exc
        by_split[record["split"]].append(record)
    return by_split


def save_figure(fig, ax, out: Path) -> Path:
    """The finish every plot here shares: light grid, legend, PNG at 120 dpi; then the figure is closed (pyplot
    keeps every open figure alive until then)."""
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_loss(run_dir: Path, out: Path, title: str | None = None) -> Path:
    by_split = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("valid", "o-")):
        points = [(r["update"], r["loss"]) for r in by_split.get(split, []) if r.get("loss") is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=f"{split} loss", markersize=4)
    ax.set_xlabel("updates")
    ax.set_ylabel("loss (bits per token)")
    ax.set_title(title or run_dir.name)
    return save_figure(fig, ax, out)


def swept_value(result: dict, param: str):
    for override in result.get("overrides", []):
        key, _, value = override.lstrip("+").partition("=")
        if key == param:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":  # quoted strings
                return value[1:-1]
            try:
                number = float(value)
                return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() \
                    else number
            except ValueError:
                return value
    return None


def paper_series(task: str, param: str, metric: str) -> dict | None:
    """The paper's numbers for a sweep that is one of its ablations (KD-DTI prompt length, manual prompts, target
    format), keyed by the swept value as `swept_value` returns it; None otherwise."""
    from biogpt_train.tasks.paper_results import KD_DTI_PROMPT, KD_DTI_TARGET_FORMAT

    if param == "experiment":  # +sweep=target_format: kd_dti (rel-is), kd_dti_htr, kd_dti_svo, kd_dti_is_of
        out = {"kd_dti": KD_DTI_TARGET_FORMAT["rel-is"].get(metric)}
        out.update({f"kd_dti_{fmt.replace('-', '_')}": row.get(metric) for fmt, row in KD_DTI_TARGET_FORMAT.items()
                    if fmt != "rel-is"})
        return out
    if task != "kd_dti":
        return None
    if param == "task.learned_prompt":
        return {int(k[len("soft_"):]): row.get(metric) for k, row in KD_DTI_PROMPT.items() if k.startswith("soft_")}
    if param == "task.manual_prompt":  # written as dictionary words: "in conclusion ," is the paper's "in conclusion,"
        return {k.replace(",", " ,"): row.get(metric) for k, row in KD_DTI_PROMPT.items() if not k.startswith("soft_")}
    return None


def plot_sweep(sweep_dir: Path, param: str, out: Path, paper: dict | None | str = "auto",
               title: str | None = None) -> Path:
    """Metric (mean ± std over seeds) against the swept value; `paper`: {value: number}, "auto" (the paper's
    series when the sweep is one of its ablations, see paper_series) or None."""
    results = find_results([sweep_dir])
    points = defaultdict(list)
    metric = task = None
    baselines = set()
    for r in results:
        value = swept_value(r, param)
        if value is None:
            continue
        metric, task = r["primary_metric"], r["task"]
        points[value].append(r["metrics"][metric])
        baselines.add((r.get("baseline") or {}).get(metric))
    if not points:
        raise ValueError(f"no results.json under {sweep_dir} has an override for {param!r}")
    xs = sorted(points, key=lambda v: (isinstance(v, str), v))
    means = [statistics.fmean(points[x]) for x in xs]
    stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
    labels = [str(x) for x in xs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(range(len(xs)), means, yerr=stds, fmt="o-", capsize=3, label="ours (mean ± std over seeds)")
    if len(baselines) == 1 and None not in baselines:  # every point scored on the same documents
        ax.axhline(baselines.pop(), color="gray", linestyle=":", label="majority-class baseline")
    if paper == "auto":
        paper = paper_series(task, param, metric)
    if paper:
        ys = [paper.get(x, paper.get(str(x))) for x in xs]
        if any(y is not None for y in ys):
            ax.plot(range(len(xs)), [float("nan") if y is None else y for y in ys], "s--", label="paper (BioGPT)")
    ax.set_xticks(range(len(xs)), labels)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{task}: {metric} vs {param}")
    return save_figure(fig, ax, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    loss = sub.add_parser("loss")
    loss.add_argument("run_dir", type=Path)
    loss.add_argument("--out", type=Path, default=Path("loss.png"))
    sweep = sub.add_parser("sweep")
    sweep.add_argument("sweep_dir", type=Path)
    sweep.add_argument("--param", required=True)
    sweep.add_argument("--out", type=Path, default=Path("sweep.png"))
    sweep.add_argument("--no-paper", action="store_true", help="leave out the paper's series")
    args = parser.parse_args(argv)
    if args.kind == "loss":
        print(plot_loss(args.run_dir, args.out))
    else:
        print(plot_sweep(args.sweep_dir, args.param, args.out, paper=None if args.no_paper else "auto"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
